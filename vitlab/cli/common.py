"""Shared CLI helpers: option parsing, error display, JSON output."""

from __future__ import annotations

import contextvars
import sys
import warnings
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from vitlab._io import use_cache_root
from vitlab.cli.options import Quiet
from vitlab.errors import ConfigError, VitlabError

# Everything human-readable (tables, notes, warnings, errors, progress) goes to stderr;
# stdout carries only machine-readable output (one JSON document with --json).
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("vitlab_cli_quiet", default=False)

__all__ = ["Quiet", "at_least", "num_workers_option", "progress_setting", "note", "deprecated", "device_arg",
           "check_outputs", "parse_int_list", "friendly_errors", "print_json", "console"]


def at_least(minimum: int, hint: str = "") -> Callable[[int | None], int | None]:
    """A typer callback rejecting integers below ``minimum`` with a message that names the value and the fix.

    Example:
        >>> at_least(0, "0 = load images in the main process")(3)
        3
        >>> try:
        ...     at_least(0, "0 = load images in the main process")(-1)
        ... except typer.BadParameter as e:
        ...     print(e)
        must be >= 0 (0 = load images in the main process), got -1.
    """

    def check(value: int | None) -> int | None:
        if value is not None and value < minimum:
            raise typer.BadParameter(f"must be >= {minimum}{f' ({hint})' if hint else ''}, got {value}.")
        return value

    return check


def num_workers_option(help: str = "DataLoader workers [default: CPUs - 1, at most 8]; 0 = main process.") -> Any:
    """The shared ``--num-workers`` option (``>= 0``; ``None`` = default)."""
    return typer.Option(None, "--num-workers", help=help, callback=at_least(0, "0 = load images in the main process"))


def progress_setting(quiet: bool) -> bool | None:
    """What verbs pass as ``progress=``: ``False`` under ``--quiet``, else ``None`` (auto: a bar only when
    stderr is a terminal).

    Example:
        >>> progress_setting(True), progress_setting(False)
        (False, None)
    """
    return False if quiet else None


def note(text: str, **kwargs: Any) -> None:
    """Print a secondary message (hint, footnote) on stderr, unless ``--quiet``."""
    if not _QUIET.get():
        console.print(text, **kwargs)


def deprecated(old: str, new: str, old_value: Any, value: Any, default: Any) -> Any:
    """The value of an option given under its old, hidden spelling ``old``: a one-line note on stderr
    (never stdout: ``--json`` stays one document) and the value; both spellings at once is an error.

    Example:
        >>> deprecated("--dtype", "--precision", None, "fp32", "fp32")  # the old spelling not used
        'fp32'
        >>> deprecated("--dtype", "--precision", "bf16", "fp32", "fp32")  # the note goes to stderr
        'bf16'
    """
    if old_value is None:
        return value
    if value != default:
        raise ConfigError(f"{old} is the old spelling of {new}; pass only {new}.")
    note(f"[yellow]note:[/] {old} is deprecated; use {new}.", highlight=False, soft_wrap=True)
    return old_value


def device_arg(device: str | None) -> str:
    """The device a verb runs on: ``auto`` (the shared default) becomes ``cuda`` when available, else
    ``cpu``; a device that is not there is one error line, before any work.

    Example:
        >>> device_arg("cpu")
        'cpu'
    """
    from vitlab.backbones import resolve_device

    return str(resolve_device(device))


_HTML = (".html", ".htm")


def check_outputs(*, dirs: dict[str, Any] | None = None, files: dict[str, Any] | None = None,
                  inputs: tuple[Any, ...] | list[Any] = (), records: Any = None, overwrite: bool = False,
                  out_flag: str = "-o/--out") -> None:
    """The one output rule (:mod:`vitlab.outputs`), before any work: ``{"--out": path}`` folders,
    ``{"--report": (path, kind)}`` files; ``inputs`` are what the verb reads (data URIs, backbone
    names, feature files), ``records`` a runs folder or record file it reads.

    ``--out`` is always the folder for run records (``out_flag`` names it as the verb spells it: ``-o/--out``,
    or ``--out`` where ``-o`` names the verb's one-file product): an ``.html`` name there is refused with the
    option that writes the HTML (the verb's html file option, else ``vitlab report``).

    Example:
        >>> check_outputs(dirs={"--out": None}, files={"--report": (None, "html")}, inputs=("sample:digits",))
        >>> try:
        ...     check_outputs(dirs={"--out": "r.html"}, files={"--report": (None, "html")})
        ... except ConfigError as e:
        ...     print(e)
        --out r.html: -o/--out is the folder for run records; write the HTML report with --report r.html.
    """
    from vitlab.outputs import check_outputs as rule, input_paths

    out = (dirs or {}).get("--out")
    if out is not None and Path(out).suffix.lower() in _HTML:
        html = [k for k, v in (files or {}).items() if isinstance(v, tuple) and v[1] == "html"]
        fix = (f"write the HTML report with {html[0].split('/')[-1]} {out}" if html else
               f"this verb writes no HTML: render the records with vitlab report <folder> --output {out}")
        raise ConfigError(f"--out {out}: {out_flag} is the folder for run records; {fix}.")
    rule(files=files, dirs=dirs, inputs=input_paths(*inputs, records=records), overwrite=overwrite)


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: one yellow line on stderr, no source location."""
    console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


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
    """Run a verb with CLI error handling and stderr-only chatter.

    * :class:`VitlabError` → one red ``error:`` line on stderr, exit code 2;
    * Ctrl-C (``KeyboardInterrupt``) → ``interrupted.`` plus the exception's ``resume_hint``
      when it has one (the store's ``vitlab.errors.Interrupted`` says what was kept), exit 130;
    * Python warnings → one yellow ``warning:`` line each on stderr (none under ``--quiet``);
    * ``--quiet`` (a ``quiet`` parameter of the verb) silences :func:`note`;
    * ``--cache-dir`` (a ``cache_dir`` parameter) is the cache root of everything the verb does, every
      cache namespace included (:func:`vitlab._io.use_cache_root`);
    * a run record that cannot be written after the work (full disk, :class:`~vitlab.errors.WriteError`
      carrying the record): the result is printed first (the JSON document on stdout with ``--json``,
      else the leaderboard), then the one error line, exit code 2.

    Example:
        >>> @friendly_errors
        ... def verb(quiet: bool = False):
        ...     raise ConfigError("k must be >= 1, got 0.")
        >>> try:
        ...     verb()
        ... except typer.Exit as e:
        ...     e.exit_code
        2
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet = bool(kwargs.get("quiet", False))
        token = _QUIET.set(quiet)
        try:
            with warnings.catch_warnings():
                if quiet:
                    warnings.simplefilter("ignore")
                else:
                    warnings.showwarning = _show_warning
                _check_environment()
                with use_cache_root(kwargs.get("cache_dir")):
                    return fn(*args, **kwargs)
        except VitlabError as e:
            if getattr(e, "record", None) is not None:
                _print_unsaved(e.record, bool(kwargs.get("json_out")))
            console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:
            hint = getattr(e, "resume_hint", None)
            console.print("[yellow]interrupted.[/]" + (f" {escape(str(hint))}" if hint else ""), highlight=False,
                          soft_wrap=True)
            raise typer.Exit(130) from None
        finally:
            _QUIET.reset(token)

    return wrapper  # type: ignore[return-value]


def _print_unsaved(record: Any, as_json: bool) -> None:
    """The result of a run whose record could not be saved, so the work is not lost."""
    if as_json:
        print_json(record.to_dict())
        return
    try:
        from vitlab.report import leaderboard_table

        tables = leaderboard_table([record])
    except Exception:  # noqa: BLE001 - a record no table shows: print it whole
        tables = []
    for table in tables:
        console.print(table)
    if not tables:
        print_json(record.to_dict())


def _check_environment() -> None:
    """Validate environment settings up front (a bad value fails here, not inside a DataLoader worker)."""
    from vitlab.data.images import max_image_pixels

    max_image_pixels()


def print_json(obj: Any) -> None:
    """Write one strict JSON document to stdout (the only thing a verb writes there).

    NaN and infinities (an undefined metric) are written as ``null``, which every JSON parser
    (``jq`` included) accepts; ``NaN`` is not JSON.

    Example:
        >>> print_json({"n": 1, "path": Path("runs"), "auroc": float("nan")})
        {
          "n": 1,
          "path": "runs",
          "auroc": null
        }
    """
    from vitlab.record import dumps_strict

    sys.stdout.write(dumps_strict(obj, lenient=True) + "\n")
    sys.stdout.flush()
