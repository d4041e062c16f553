"""``RunRecord``: one versioned, self-describing JSON per run (config, fingerprints, metrics, provenance)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import platform
import subprocess
import warnings
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from vitlab._io import atomic_write, write_error
from vitlab.errors import DataError, VitlabError, WriteError

RECORD_SCHEMA_VERSION = 1
_LIBS = ("vitlab", "torch", "timm", "transformers", "open_clip_torch", "numpy", "scipy", "scikit-learn")


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that change numbers, plus Python."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def git_revision(path: str | Path | None = None) -> str | None:
    """The git commit of the working directory (``+dirty`` if modified), or ``None`` outside git."""
    cwd = str(path or Path.cwd())
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class RunRecord:
    """A run's full record. ``metrics`` hold ``{"value", "low", "high", ...}`` dicts (95% CIs).

    Example:
        >>> r = RunRecord(kind="eval", config={"protocols": ["knn"]},
        ...               metrics={"knn": {"top1": {"value": 0.8, "low": 0.7, "high": 0.9}}})
        >>> RunRecord.from_dict(json.loads(r.to_json())).metrics["knn"]["top1"]["value"]
        0.8
    """

    kind: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    fingerprints: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=library_versions)
    git: str | None = field(default_factory=git_revision)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    schema_version: int = RECORD_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data, after :meth:`validate` (every producer's output passes through here)."""
        self.validate()
        return asdict(self)

    def to_json(self) -> str:
        """Strict JSON (what ``save`` writes and ``--json`` prints): NaN and infinities become ``null``.

        Example:
            >>> text = RunRecord("eval", {}, {"knn": {"auroc": {"value": float("nan"), "low": None,
            ...                                                 "high": None}}}).to_json()
            >>> json.loads(text)["metrics"]["knn"]["auroc"], "NaN" in text
            ({'value': None, 'low': None, 'high': None}, False)
        """
        return dumps_strict(self.to_dict())

    def validate(self) -> None:
        """Check every metric entry: a dict with a ``value`` is an entry and must hold ``value``, ``low``
        and ``high``, each a number or ``None`` (non-finite numbers are written as ``null``), with
        ``low <= value <= high`` when all three are finite. An entry built by
        :meth:`vitlab.stats.interval.Interval.to_entry` always passes.

        Raises:
            RecordError: the first bad entry, by its path in ``metrics``.

        Example:
            >>> RunRecord("eval", {}, {"knn": {"top1": {"value": 0.9, "low": 0.95, "high": 1.0}}}).validate()
            Traceback (most recent call last):
            ...
            vitlab.record.RecordError: run record 'eval': metric knn.top1 has low 0.95 > value 0.9; an interval must contain its estimate.
        """
        for path, entry in _entries(self.metrics, ()):
            where = ".".join(path)
            missing = [k for k in ("value", "low", "high") if k not in entry]
            if missing:
                raise RecordError(f"run record {self.kind!r}: metric {where} lacks {', '.join(missing)}; build "
                                  "entries with vitlab.stats.interval.Interval(...).to_entry().")
            nums = {}
            for k in ("value", "low", "high"):
                v = entry[k]
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))):
                    raise RecordError(f"run record {self.kind!r}: metric {where} has {k}={v!r}, not a number or "
                                      "None.")
                nums[k] = None if v is None or not math.isfinite(float(v)) else float(v)
            lo, val, hi = nums["low"], nums["value"], nums["high"]
            tol = 1e-12 * max(1.0, abs(val)) if val is not None else 0.0
            if val is not None and lo is not None and lo > val + tol:
                raise RecordError(f"run record {self.kind!r}: metric {where} has low {lo:g} > value {val:g}; an "
                                  "interval must contain its estimate.")
            if val is not None and hi is not None and hi < val - tol:
                raise RecordError(f"run record {self.kind!r}: metric {where} has high {hi:g} < value {val:g}; an "
                                  "interval must contain its estimate.")
            if lo is not None and hi is not None and lo > hi:
                raise RecordError(f"run record {self.kind!r}: metric {where} has low {lo:g} > high {hi:g}.")

    @property
    def run_id(self) -> str:
        """Short hash of kind, config and fingerprints: identical inputs give the same id."""
        blob = json.dumps([self.kind, self.config, self.fingerprints], sort_keys=True, default=_jsonable)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def save(self, out_dir: str | Path) -> Path:
        """Write ``<out_dir>/<kind>-<run_id>.json`` atomically (replacing the same inputs' earlier record).

        Raises:
            WriteError: the file cannot be written (full disk: the space needed and free), one line;
                ``.record`` is this record, so the caller can still show the result. A file of that
                name that is not a run record is never replaced.

        Example:
            >>> import tempfile
            >>> RunRecord(kind="eval", config={}, metrics={}).save(tempfile.mkdtemp()).name  # doctest: +ELLIPSIS
            'eval-....json'
        """
        path = Path(out_dir) / f"{self.kind}-{self.run_id}.json"
        text = self.to_json() + "\n"
        try:
            if path.exists() and not _is_record_file(path):
                raise WriteError(f"cannot write the run record {path}: a file of that name exists and is not a run "
                                 "record, so it is not replaced. Move it away or pass another --out.",
                                 filename=str(path))
            atomic_write(path, text, elsewhere="pass another --out")
        except OSError as e:
            err = write_error(path, e, need=len(text.encode()), elsewhere="pass another --out")
            err.record = self
            raise err from None
        return path

    @classmethod
    def from_dict(cls, d: Any) -> RunRecord:
        """Build a record from parsed JSON, checking its shape (:class:`DataError` names what is wrong).

        Example:
            >>> RunRecord.from_dict([1, 2, 3])
            Traceback (most recent call last):
            ...
            vitlab.errors.DataError: not a run record: the JSON is a list, not an object with kind, config and metrics.
        """
        if not isinstance(d, dict):
            raise DataError(f"not a run record: the JSON is a {_json_type(d)}, not an object with kind, config "
                            "and metrics.")
        missing = [k for k in ("kind", "config", "metrics", "schema_version") if k not in d]
        if missing:
            raise DataError(f"not a run record: missing field(s) {', '.join(missing)}.")
        version = d.get("schema_version")
        if version != RECORD_SCHEMA_VERSION:
            raise DataError(f"run record has schema_version {version!r}; this vitlab reads version "
                            f"{RECORD_SCHEMA_VERSION}. Re-run the evaluation with this version.")
        if not isinstance(d["kind"], str):
            raise DataError(f"not a run record: 'kind' is a {_json_type(d['kind'])}, not a string.")
        for k in ("config", "metrics", "fingerprints", "hparams", "details", "timings", "seeds", "versions"):
            if k in d and not isinstance(d[k], dict):
                raise DataError(f"not a run record: {k!r} is a {_json_type(d[k])}, not an object.")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        """Read one record file; :class:`DataError` names the file and the problem."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a readable run record ({e}).") from e
        except DataError as e:
            raise DataError(f"{path}: {e}") from None


def data_block(source: Any) -> dict[str, Any]:
    """The fingerprint block of a data source in every record: ``{kind, uri, fingerprint, n}``.

    Example:
        >>> import vitlab
        >>> sorted(data_block(vitlab.load_source("sample:digits")))
        ['fingerprint', 'kind', 'n', 'uri']
    """
    return {"kind": source.kind, "uri": source.uri, "fingerprint": source.fingerprint, "n": len(source)}


def start_record(kind: str, config: dict[str, Any], *, backbone: Any = None, source: Any = None,
                 embeddings: str | None = None, fingerprints: dict[str, Any] | None = None,
                 seeds: dict[str, int] | None = None) -> RunRecord:
    """Start the run record of a verb: kind, config and the fingerprint block, built the same way everywhere.

    The producer then fills ``metrics``, ``details``, ``hparams`` and ``timings`` and saves it. The
    fingerprints are ``backbone`` (what :meth:`Backbone.fingerprint` says: weights, preprocessing,
    accelerator), ``data`` (:func:`data_block`), ``embeddings`` (the cache digest) and any ``fingerprints``
    given (e.g. the variants of a trade-off); together with ``kind`` and ``config`` they make the
    record's ``run_id``.

    Example:
        >>> import vitlab
        >>> r = start_record("eval", {"protocols": ["knn"]}, backbone=vitlab.load_backbone("pixels:8"),
        ...                  source=vitlab.load_source("sample:digits"), seeds={"split": 0})
        >>> sorted(r.fingerprints), r.metrics, len(r.run_id)
        (['backbone', 'data'], {}, 12)
    """
    fp: dict[str, Any] = {}
    if backbone is not None:
        fp["backbone"] = backbone.fingerprint()
    if source is not None:
        fp["data"] = data_block(source)
    if embeddings is not None:
        fp["embeddings"] = embeddings
    fp.update(fingerprints or {})
    return RunRecord(kind=kind, config=config, metrics={}, fingerprints=fp, seeds=dict(seeds or {}))


class RecordError(VitlabError, ValueError):
    """A producer built a run record that breaks the schema (a bug in vitlab, not in the user's input)."""


def _entries(node: Any, path: tuple[str, ...]):
    """``(path, entry)`` for every metric entry (a dict with a ``value`` key) under ``node``."""
    if isinstance(node, dict):
        if "value" in node:
            yield path, node
            return
        for k, v in node.items():
            yield from _entries(v, (*path, str(k)))


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by ``None`` (JSON ``null``).

    Example:
        >>> finite_or_null({"a": [1.0, float("nan")], "b": float("inf")})
        {'a': [1.0, None], 'b': None}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def dumps_strict(obj: Any, indent: int | None = 2, *, lenient: bool = False) -> str:
    """One strict JSON document (RFC 8259): numpy values and paths converted, NaN and infinities as ``null``.

    The one JSON writer of records and ``--json`` output, so a record on disk and on stdout are the same.
    ``lenient``: write any other object as its ``str`` (summaries printed by the CLI) instead of failing.

    Example:
        >>> dumps_strict({"n": np.int64(3), "auroc": float("nan")}, indent=None)
        '{"n": 3, "auroc": null}'
    """
    default = (lambda o: _jsonable(o, lenient=True)) if lenient else _jsonable
    return json.dumps(finite_or_null(json.loads(json.dumps(obj, default=default))), indent=indent, allow_nan=False)


class SkippedRecordWarning(UserWarning):
    """A ``*.json`` file in a runs folder is not a run record and was left out."""


def load_records(path: str | Path) -> list[RunRecord]:
    """All run records in a directory (or one file), sorted by creation time.

    In a directory, ``*.json`` files that are not run records (other JSON, older schema,
    unreadable) are skipped with a :class:`SkippedRecordWarning` naming each file; if none
    is left, :class:`DataError`. A single file given directly must be a run record.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = RunRecord(kind="eval", config={}, metrics={}).save(d)
        >>> _ = (d / "notes.json").write_text("[1, 2, 3]")
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     [r.kind for r in load_records(d)], str(w[0].message).split(": ", 1)[1]
        (['eval'], 'skipped: not a run record: the JSON is a list, not an object with kind, config and metrics.')
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no run records (no such file or folder). Run `vitlab eval ... --out {path}` first.")
    if not p.is_dir():
        return [RunRecord.load(p)]
    files = sorted(p.glob("*.json"))
    if not files:
        raise DataError(f"{path}: no run records (*.json) found. Run `vitlab eval ... --out {path}` first.")
    records, problems = [], []
    for f in files:
        try:
            records.append(RunRecord.load(f))
        except DataError as e:
            problems.append(str(e))
            warnings.warn(f"{f}: skipped: {str(e).removeprefix(f'{f}: ')}", SkippedRecordWarning, stacklevel=2)
    if not records:
        raise DataError(f"{path}: none of the {len(files)} *.json file(s) is a run record (first: {problems[0]}). "
                        "Point at the folder given to --out.")
    return sorted(records, key=lambda r: r.created)


def _is_record_file(path: Path) -> bool:
    from vitlab.outputs import KINDS

    return KINDS["record"].recognise(path)


def _json_type(v: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null", dict: "object"}.get(type(v), type(v).__name__)


def _jsonable(o: Any, lenient: bool = False) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if lenient:
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
