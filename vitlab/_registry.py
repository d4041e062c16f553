"""One generic name registry: names, aliases, lazy targets and "did you mean".

Example:
    >>> reg = Registry("backbone source")
    >>> reg.register("timm", "vitlab.backbones.timm:load_timm", help="timm models")
    >>> reg.get("timm")  # doctest: +ELLIPSIS
    <function load_timm at ...>
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vitlab.errors import UnknownNameError


@dataclass(frozen=True)
class Entry:
    """A registered name: ``target`` is an object or a lazy ``"module:attr"`` string."""

    name: str
    target: Any
    help: str = ""


class Registry:
    """Maps names to (lazily imported) objects; unknown names get close matches."""

    def __init__(self, what: str, hint: str = "") -> None:
        self.what = what
        self.hint = hint
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: Any, *, help: str = "") -> None:
        """Add ``name``; ``target`` may be an object or ``"package.module:attr"``."""
        self._entries[name] = Entry(name, target, help)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; raises :class:`UnknownNameError` with suggestions."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.what, name, self._entries, self.hint) from None

    def get(self, name: str) -> Callable[..., Any] | Any:
        """Resolve ``name`` to its object, importing it on first use."""
        target = self.entry(name).target
        if isinstance(target, str) and ":" in target:
            module, attr = target.split(":", 1)
            target = getattr(importlib.import_module(module), attr)
        return target
