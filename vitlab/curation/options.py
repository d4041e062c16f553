"""The checks :func:`vitlab.curate` makes before any work: values, options given without the one they need,
and the optional dependencies (one line each, exit code 2 in the CLI).

Options that only mean something together with another are refused when given alone, never silently
ignored (issue 18 §4): ``target_min`` needs ``target``; ``prompt_min`` needs ``prompts``; the calibration
settings (``edits``, ``recall``, ``max_fpr``, ``calibration_sample``) need ``threshold="auto"``;
``perceptual_distance`` and ``max_neighbours`` need ``dedup``; ``max_removed`` needs ``write_manifest``;
``folds`` and ``label_method`` need ``label_issues``. Those options default to ``None`` (= "not given").

Example:
    >>> check_option_pairs(target=None, target_min=0.5)
    Traceback (most recent call last):
    ...
    vitlab.errors.ConfigError: --target-min needs --target (the data source to compare with), e.g. --target folder:./target --target-min 0.3.
"""

from __future__ import annotations

from typing import Any

from vitlab.errors import ConfigError

__all__ = ["check_option_pairs", "check_max_removed", "MAX_REMOVED", "DEFAULT_PERCEPTUAL_DISTANCE", "DEFAULT_FOLDS"]

#: --write-manifest refuses to drop more than this fraction of the items without --max-removed.
MAX_REMOVED = 0.2
DEFAULT_PERCEPTUAL_DISTANCE = 4
DEFAULT_FOLDS = 5


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_option_pairs(*, threshold: Any = "auto", dedup: bool = True, target: Any = None, target_min: Any = None,
                       prompts: bool = False, prompt_min: Any = None, edits: Any = None, recall: Any = None,
                       max_fpr: Any = None, calibration_sample: Any = None, perceptual_distance: Any = None,
                       max_neighbours: Any = None, write_manifest: Any = None, max_removed: Any = None,
                       label_issues: bool = False, folds: Any = None, label_method: Any = None) -> None:
    """Refuse an option given without the option it needs (one :class:`ConfigError` line naming both).

    Example:
        >>> check_option_pairs(threshold=0.95, recall=0.9)
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: --recall only applies to --threshold auto (the calibration); drop it, or pass --threshold auto.
    """
    if target_min is not None and target is None:
        raise ConfigError("--target-min needs --target (the data source to compare with), e.g. "
                          "--target folder:./target --target-min 0.3.")
    if prompt_min is not None and not prompts:
        raise ConfigError("--prompt-min needs --prompts (the image-text prompt filter); add --prompts or drop it.")
    auto = isinstance(threshold, str) and threshold.strip().lower() == "auto"
    for name, v in (("edits", edits), ("recall", recall), ("max_fpr", max_fpr),
                    ("calibration_sample", calibration_sample)):
        if v is not None and not auto:
            raise ConfigError(f"{_flag(name)} only applies to --threshold auto (the calibration); drop it, or pass "
                              "--threshold auto.")
    for name, v in (("perceptual_distance", perceptual_distance), ("max_neighbours", max_neighbours)):
        if v is not None and not dedup:
            raise ConfigError(f"{_flag(name)} applies to the duplicate search, which --no-dedup turns off; drop one.")
    if max_removed is not None and write_manifest is None:
        raise ConfigError("--max-removed bounds what --write-manifest may drop; it needs --write-manifest.")
    for name, v in (("folds", folds), ("label_method", label_method)):
        if v is not None and not label_issues:
            raise ConfigError(f"{_flag(name)} applies to --label-issues; add --label-issues or drop it.")


def check_max_removed(value: Any) -> float:
    """The fraction ``--write-manifest`` may drop: ``None`` → :data:`MAX_REMOVED`, else a number in [0, 1].

    Example:
        >>> check_max_removed(None), check_max_removed(0.5)
        (0.2, 0.5)
    """
    if value is None:
        return MAX_REMOVED
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"--max-removed must be a fraction in [0, 1] of the items (e.g. 0.5); got {value!r}.")
    return v
