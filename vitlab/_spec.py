"""The one ``name:key=value`` spec syntax shared by accelerators (``--accel``) and protocols (``--protocol``).

::

    knn                               a name
    knn:ks=[10,20]                    parameters after a colon; lists in brackets
    linear:max_iter=2000,dtype=float64   parameters continue after commas ("k=v" pieces)
    knn,linear:max_iter=2000,fewshot  several items

Example:
    >>> split_specs("knn:ks=[10,20],temperature=0.1,linear")
    [('knn', {'ks': '[10,20]', 'temperature': '0.1'}), ('linear', {})]
    >>> parse_value("[10, 20]"), parse_value("1e-3"), parse_value("true")
    ([10, 20], 0.001, True)
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from vitlab.errors import ConfigError

__all__ = ["parse_value", "split_top", "split_specs", "config_from_params"]

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def parse_value(text: str) -> Any:
    """``"8"`` → 8, ``"0.7"`` → 0.7, ``"true"`` → True, ``"[8,4]"`` → [8, 4], ``"none"`` → None, else the string.

    Example:
        >>> parse_value("[8, 8, 4]"), parse_value("decrease"), parse_value("none")
        ([8, 8, 4], 'decrease', None)
    """
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [parse_value(t) for t in inner.split(",")] if inner else []
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none":
        return None
    if _NUMBER.match(text):
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    return text


def split_top(text: str, sep: str, what: str = "spec") -> list[str]:
    """Split at ``sep`` outside brackets.

    Example:
        >>> split_top("a:r=[1,2],b", ",")
        ['a:r=[1,2]', 'b']
    """
    parts, depth, cur = [], 0, []
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if depth < 0:
            raise ConfigError(f"unbalanced ']' in {what} {text!r}.")
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise ConfigError(f"unbalanced '[' in {what} {text!r}; close every list, e.g. ks=[10,20].")
    parts.append("".join(cur))
    return parts


def split_specs(spec: str, what: str = "spec") -> list[tuple[str, dict[str, str]]]:
    """``"a:x=1,y=2,b"`` → ``[("a", {"x": "1", "y": "2"}), ("b", {})]`` (values stay strings).

    Raises:
        ConfigError: empty spec or item, a parameter before any name, or ``name:key`` without ``=``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"empty {what}.")
    out: list[tuple[str, dict[str, str]]] = []
    for piece in split_top(spec, ",", what):
        piece = piece.strip()
        if not piece:
            raise ConfigError(f"empty item in {what} {spec!r} (two commas in a row?).")
        if ":" not in piece and "=" in piece:  # continues the previous item's parameters
            if not out:
                raise ConfigError(f"parameter {piece!r} comes before any name in {what} {spec!r}; "
                                  "write name:key=value.")
            k, _, v = piece.partition("=")
            out[-1][1][k.strip()] = v
            continue
        name, _, rest = piece.partition(":")
        params: dict[str, str] = {}
        if rest:
            k, eq, v = rest.partition("=")
            if not eq:
                raise ConfigError(f"{piece!r}: expected name:key=value in {what}.")
            params[k.strip()] = v
        out.append((name.strip(), params))
    return out


def config_from_params(cls: type, params: dict[str, Any], what: str) -> Any:
    """Build the frozen dataclass ``cls`` from string (or already parsed) parameters.

    Unknown keys get a clear error listing the known ones; lists become tuples.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class C:
        ...     ks: tuple = (10,)
        >>> config_from_params(C, {"ks": "[1,2]"}, "protocol 'knn'")
        C(ks=(1, 2))
    """
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"{what} has no parameter {', '.join(map(repr, unknown))}; "
                          f"its parameters are: {', '.join(known) or 'none'}.")
    kw = {}
    for k, v in params.items():
        v = parse_value(v) if isinstance(v, str) else v
        kw[k] = tuple(v) if isinstance(v, list) else v
    try:
        return cls(**kw)
    except TypeError as e:
        raise ConfigError(f"{what}: {e}.") from None
