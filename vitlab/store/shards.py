"""Shard files: safetensors tensors + a JSON sidecar holding their row range and checksum.

Why safetensors: no pickle (safe to load), a self-describing header (names,
dtypes, shapes), zero-copy reads, and a well-kept library. A shard counts as
done only when its sidecar exists and the sha256 in it matches the file, so a
shard cut short by an interruption or corrupted on disk is recomputed.

Shards are variable-length: each sidecar records the source rows ``[start, stop)``
it covers, and a resumed run computes exactly the rows no valid shard covers.
What a row's numbers depend on never changes with the shard boundaries: rows are
always run in the same batches, a fixed grid of blocks of ``block`` rows (the
largest shard) cut into ``batch_size`` batches from each block's start
(:func:`batch_grid`); a shard is any run of whole batches. So an interrupted and
resumed run gives the same bits as an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vitlab._io import atomic_write, hash_file, is_tmp_name

DEFAULT_SHARD_ROWS = 4096  # the largest shard (and batch-grid block) unless shard_size is given
FLUSH_SECONDS = 30.0  # by default a shard is also written once this long has passed since the last one


def shard_stem(start: int) -> str:
    """File stem of the shard starting at source row ``start``.

    Example:
        >>> shard_stem(4096)
        'shard-0000004096'
    """
    return f"shard-{start:010d}"


def batch_grid(ranges: list[tuple[int, int]], block: int, batch_size: int) -> list[tuple[int, int]]:
    """The batches ``[start, stop)`` covering ``ranges``, on the fixed grid.

    The grid: blocks of ``block`` rows from row 0, each cut into batches of ``batch_size``
    rows from the block's start. A batch never straddles a block, and a range that starts
    or stops inside a grid batch clips it (only when the shard layout changed).

    Example:
        >>> batch_grid([(0, 10)], block=8, batch_size=3)
        [(0, 3), (3, 6), (6, 8), (8, 10)]
        >>> batch_grid([(3, 8), (16, 18)], block=8, batch_size=3)
        [(3, 6), (6, 8), (16, 18)]
    """
    out = []
    for start, stop in ranges:
        row = start
        while row < stop:
            b0 = row - row % block
            end = min(b0 + ((row - b0) // batch_size + 1) * batch_size, b0 + block, stop)
            out.append((row, end))
            row = end
    return out


def gaps(covered: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """Row ranges of ``[0, n)`` not in ``covered`` (sorted, non-overlapping ranges).

    Example:
        >>> gaps([(0, 8), (16, 20)], 30)
        [(8, 16), (20, 30)]
        >>> gaps([(0, 30)], 30)
        []
    """
    out, pos = [], 0
    for start, stop in covered:
        if start > pos:
            out.append((pos, start))
        pos = max(pos, stop)
    if pos < n:
        out.append((pos, n))
    return out


_CACHE = "pass --cache-dir <another dir>; finished shards are kept"


def write_shard(shard_dir: Path, start: int, stop: int, arrays: dict[str, np.ndarray],
                skipped: list[dict[str, Any]]) -> dict[str, Any]:
    """Write one finished shard covering rows ``[start, stop)`` (tensors first, then the sidecar
    that marks it done). Returns the sidecar."""
    from safetensors.numpy import save

    stem = shard_stem(start)
    path = shard_dir / f"{stem}.safetensors"
    atomic_write(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}), elsewhere=_CACHE, mkdir=False)
    side = {"start": int(start), "stop": int(stop), "n_rows": int(len(arrays["index"])), "skipped": skipped,
            "sha256": hash_file(path, "sha256")}
    atomic_write(shard_dir / f"{stem}.json", json.dumps(side), elsewhere=_CACHE, mkdir=False)
    return {**side, "stem": stem}


def _valid_sidecar(shard_dir: Path, stem: str, n: int) -> dict[str, Any] | None:
    try:
        side = json.loads((shard_dir / f"{stem}.json").read_text())
        start, stop = side["start"], side["stop"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    data = shard_dir / f"{stem}.safetensors"
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start < stop <= n) or not data.exists():
        return None
    if hash_file(data, "sha256") != side.get("sha256"):
        return None
    return {**side, "stem": stem}


def scan_shards(shard_dir: Path, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The valid shards of ``[0, n)``, sorted by start and non-overlapping, and the stems of the
    partial, corrupt or overlapping ones (their files are deleted; leftover temp files too).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = write_shard(d, 0, 2, {"index": np.arange(2)}, [])
        >>> _ = (d / "shard-0000000002.safetensors").write_bytes(b"cut short")  # no sidecar
        >>> valid, bad = scan_shards(d, 5)
        >>> [(s["start"], s["stop"]) for s in valid], bad
        ([(0, 2)], ['shard-0000000002'])
    """
    for tmp in shard_dir.iterdir():  # temporary files of writes cut short (also the older "*.tmp<pid>" names)
        if is_tmp_name(tmp.name) or ".tmp" in tmp.name:
            tmp.unlink(missing_ok=True)
    stems = sorted({p.name.split(".")[0] for p in shard_dir.glob("shard-*")})
    valid, bad = [], []
    for stem in stems:
        side = _valid_sidecar(shard_dir, stem, n)
        (bad if side is None else valid).append(stem if side is None else side)
    valid.sort(key=lambda s: s["start"])
    kept, end = [], 0
    for side in valid:
        if side["start"] < end:
            bad.append(side["stem"])
        else:
            kept.append(side)
            end = side["stop"]
    for stem in bad:
        remove_shard(shard_dir, stem)
    return kept, bad


def load_shard(shard_dir: Path, side: dict[str, Any]) -> dict[str, np.ndarray]:
    """All tensors of a (validated) shard."""
    from safetensors.numpy import load_file

    return load_file(str(shard_dir / f"{side['stem']}.safetensors"))


def remove_shard(shard_dir: Path, stem: str) -> None:
    for suffix in (".json", ".safetensors"):
        (shard_dir / f"{stem}{suffix}").unlink(missing_ok=True)
