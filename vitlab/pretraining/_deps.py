"""The optional dependency of ``vitlab pretrain`` / ``vitlab distill``: lightly (MIT), checked before any work.

Example:
    >>> require_lightly("vitlab pretrain")  # lightly installed: nothing happens; else one ConfigError line
"""

from __future__ import annotations

from vitlab.errors import ConfigError

INSTALL = "pip install 'vitlab[pretrain]'"


def require_lightly(verb: str = "vitlab pretrain") -> None:
    """Raise one line naming the extra to install when lightly (its DINO / iBOT / KoLeo losses and heads) is missing.

    Raises:
        ConfigError: lightly cannot be imported.
    """
    try:
        import lightly.loss  # noqa: F401
        import lightly.models.modules.heads  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"{verb} needs lightly (its DINO, iBOT and KoLeo losses and projection heads): {INSTALL} "
                          f"({type(e).__name__}: {e}).") from None
