"""Shared CLI helpers: option parsing, error display, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from vitlab.errors import ConfigError, VitlabError

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def parse_int_list(text: str, what: str) -> list[int]:
    """``"-1,-4"`` → ``[-1, -4]`` with a clear error.

    Example:
        >>> parse_int_list("-1, -4", "layers")
        [-1, -4]
    """
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--{what} takes comma-separated integers such as -1,-4; got {text!r}.") from None


def friendly_errors(fn: F) -> F:
    """Turn VitlabError into a red one-line message and exit code 2; Ctrl-C into a resume hint."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VitlabError as e:
            console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted.[/] Finished shards are kept: run the same command again to resume.")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Write JSON to stdout (machine-readable output)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
