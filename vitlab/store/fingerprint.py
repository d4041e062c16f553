"""The embedding cache key: everything that changes the stored numbers, hashed.

Covered: backbone name, weights id (a hash that follows in-place weight changes,
see ``Backbone.weights_id``), preprocessing, accelerator config; the data source's
kind, row count and fingerprint (ids, labels, classes, groups, splits, and per file
size/mtime/ctime/inode, or the bytes with ``?fingerprint=content``); the layers; the
stored poolings; the autocast precision actually used (honoured on every device);
and the schema version. Not covered, on purpose: a folder's own path (moving it on
one filesystem keeps its cache), batch size, worker count, shard size and device
(fp32 results agree across them to float rounding).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

SCHEMA_VERSION = 1
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class EmbeddingKey:
    """Identity of one stored embedding set.

    Example:
        >>> k = EmbeddingKey({"name": "demo:fmnist-vit", "weights_id": "ab"}, {"kind": "sample", "fingerprint": "cd"},
        ...                  layers=(5,), pools=("cls", "mean"), precision="fp32")
        >>> len(k.digest)
        24
    """

    backbone: dict[str, Any]
    source: dict[str, Any]
    layers: tuple[int, ...]
    pools: tuple[str, ...]
    precision: str
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"], d["pools"] = list(self.layers), list(self.pools)
        return d

    @property
    def digest(self) -> str:
        """24-hex-digit sha256 of the canonical JSON of the key."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (shard checksums)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
