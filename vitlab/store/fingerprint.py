"""The embedding cache key: everything that changes the stored numbers, hashed.

Covered: backbone name, weights id, preprocessing, accelerator config; the data
source's kind and content fingerprint; the layers; the stored poolings; the
autocast precision; and the schema version. Not covered, on purpose: the
source's path (moving a folder keeps its cache), batch size, worker count and
device (fp32 results agree across them to float rounding; bf16 autocast is keyed).
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
