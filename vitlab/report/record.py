"""``RunRecord``: one versioned, self-describing JSON per run (config, fingerprints, metrics, provenance)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from vitlab.errors import DataError

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
        >>> r = RunRecord(kind="eval", config={"protocols": ["knn"]}, metrics={"knn": {"top1": {"value": 0.8}}})
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
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_jsonable, allow_nan=True)

    @property
    def run_id(self) -> str:
        """Short hash of kind, config and fingerprints: identical inputs give the same id."""
        blob = json.dumps([self.kind, self.config, self.fingerprints], sort_keys=True, default=_jsonable)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def save(self, out_dir: str | Path) -> Path:
        """Write ``<out_dir>/<kind>-<run_id>.json`` (overwriting the same inputs' earlier record)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.kind}-{self.run_id}.json"
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        version = d.get("schema_version")
        if version != RECORD_SCHEMA_VERSION:
            raise DataError(f"run record has schema_version {version!r}; this vitlab reads version "
                            f"{RECORD_SCHEMA_VERSION}. Re-run the evaluation with this version.")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: not a readable run record ({e}).") from e


def load_records(path: str | Path) -> list[RunRecord]:
    """All run records in a directory (or one file), sorted by creation time."""
    p = Path(path)
    files = sorted(p.glob("*.json")) if p.is_dir() else [p]
    if not files or not p.exists():
        raise DataError(f"{path}: no run records (*.json) found. Run `vitlab eval ... --out {path}` first.")
    return sorted((RunRecord.load(f) for f in files), key=lambda r: r.created)


def _jsonable(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
