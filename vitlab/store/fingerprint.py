"""The embedding cache key: everything that changes the stored numbers, hashed.

Covered: backbone name, weights id (a hash that follows in-place weight changes,
see ``Backbone.weights_id``), preprocessing, accelerator config; the data source's
kind, row count and fingerprint (ids, labels, classes, groups, splits, and per file
size/mtime/ctime/inode, or the bytes with ``?fingerprint=content``); the layers; the
stored poolings; the autocast precision actually used (honoured on every device);
the view (``tokens`` entries: patch tokens, with their storage dtype) and the schema
version. A ``pooled`` key (the default view) leaves ``view`` and ``token_dtype`` out
of the hashed dict, so it is the same key, and digest, as before views existed. Not covered, on purpose: a folder's own path (moving it on
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
VIEWS = ("pooled", "tokens")
TOKEN_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class EmbeddingKey:
    """Identity of one stored embedding set.

    ``view="tokens"`` entries also store the patch tokens of each layer, in ``token_dtype``
    (``float32`` or ``float16``); ``pools`` are stored for every layer, except ``embed``
    (the image–text embedding), stored for the last block only (see :meth:`array_names`).

    Example:
        >>> k = EmbeddingKey({"name": "demo:fmnist-vit", "weights_id": "ab"}, {"kind": "sample", "fingerprint": "cd"},
        ...                  layers=(5,), pools=("cls", "mean"), precision="fp32")
        >>> len(k.digest), "view" in k.to_dict()
        (24, False)
        >>> t = EmbeddingKey(k.backbone, k.source, (5,), ("cls", "mean"), "fp32", view="tokens", token_dtype="float16")
        >>> t.digest != k.digest, t.array_names()
        (True, ['L5.cls', 'L5.mean', 'L5.tokens'])
    """

    backbone: dict[str, Any]
    source: dict[str, Any]
    layers: tuple[int, ...]
    pools: tuple[str, ...]
    precision: str
    schema: int = SCHEMA_VERSION
    view: str = "pooled"
    token_dtype: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"], d["pools"] = list(self.layers), list(self.pools)
        if self.view == "pooled":  # the pre-views layout: existing pooled entries keep their digest
            del d["view"], d["token_dtype"]
        return d

    def array_names(self) -> list[str]:
        """The stored arrays: ``L{layer}.{pool}`` per layer and pooling (``embed`` only for the last
        block, ``depth - 1``), plus ``L{layer}.tokens`` per layer in the ``tokens`` view."""
        last = self.backbone.get("depth", 0) - 1
        names = [f"L{layer}.{pool}" for layer in self.layers for pool in self.pools
                 if pool != "embed" or layer == last]
        if self.view == "tokens":
            names += [f"L{layer}.tokens" for layer in self.layers]
        return names

    @property
    def digest(self) -> str:
        """24-hex-digit sha256 of the canonical JSON of the key."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]
