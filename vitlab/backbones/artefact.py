"""The ``.vitlab`` artefact family: a backbone derived from a base backbone, saved as one safetensors file that
carries its own checksum. Every producer of such backbones (``vitlab tune``, and later continued pre-training or
distillation) writes and reads them through this module.

A file holds the tensors the producer trained (e.g. ``body.<parameter>`` and ``head.*``) and, in the
safetensors metadata:

* ``format``: ``"vitlab-artefact/2"`` (:data:`FORMAT`);
* ``kind``: the producer (``"tune"``...), which names the function that rebuilds the backbone (:data:`KINDS`);
* ``meta``: JSON; at least ``"base"``, how to rebuild the base backbone (:func:`base_meta`);
* ``digest``: ``blake2b-256:<hex>`` of the format, the kind, the ``meta`` text and every tensor (name, dtype,
  shape, bytes) (:func:`content_digest`).

:func:`read_artefact` recomputes the digest and refuses a file whose tensors or metadata changed since it was
written (a flipped byte, a truncated copy) in one line; :func:`load_base` rebuilds the base and refuses, naming
the artefact, a base that is missing or whose weights changed. Files of the first format (``vitlab-tuned/1``)
carry no digest: they load with a warning saying so.

Producer API (what a new producer uses)::

    save_artefact(path, tensors, meta, kind="distill")        # meta["base"] = base_meta(backbone)
    KINDS.register("distill", "vitlab.distill.artefact:rebuild")  # rebuild(art: Artefact, **options) -> Backbone
    art = read_artefact(path)                                  # verified: art.kind, art.meta, art.tensors
    base = load_base(art)                                      # the base, checked against meta["base"]
    bb = load_artefact(path)                                   # what load_backbone("x.vitlab") calls

Example:
    >>> import tempfile, torch, vitlab
    >>> base = vitlab.load_backbone("demo:fmnist-vit")
    >>> p = save_artefact(Path(tempfile.mkdtemp()) / "x.vitlab", {"head.bias": torch.zeros(2)},
    ...                   {"base": base_meta(base)}, kind="tune")
    >>> art = read_artefact(p)
    >>> art.kind, art.meta["base"]["load_name"], load_base(art).weights_id == base.weights_id
    ('tune', 'demo:fmnist-vit', True)
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitlab._registry import Registry
from vitlab.backbones.base import Backbone
from vitlab.errors import BackboneError, VitlabError

__all__ = ["FORMAT", "SUFFIX", "KINDS", "Artefact", "save_artefact", "read_meta", "read_artefact",
           "content_digest", "base_meta", "load_base", "load_artefact"]

FORMAT = "vitlab-artefact/2"
LEGACY_FORMATS = {"vitlab-tuned/1": "tune"}  # format -> kind; written without a digest
SUFFIX = ".vitlab"

#: kind -> ``rebuild(art: Artefact, **options) -> Backbone`` (lazy ``"module:function"`` targets)
KINDS = Registry("artefact kind", hint="The file names a producer this vitlab does not know; upgrade vitlab.")
KINDS.register("tune", "vitlab.tuning.artefact:rebuild_tuned", help="a backbone adapted by vitlab tune")


@dataclass
class Artefact:
    """A verified ``.vitlab`` file: ``path``, ``kind``, ``meta`` (the producer's JSON), ``tensors`` (CPU),
    ``digest`` (``None`` for a legacy file without one)."""

    path: Path
    kind: str
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    digest: str | None


def content_digest(fmt: str, kind: str, meta_text: str, tensors: dict[str, torch.Tensor]) -> str:
    """``blake2b-256:<hex>`` of the format, the kind, the metadata text and every tensor (sorted by name: name,
    dtype, shape, raw bytes).

    Example:
        >>> a = content_digest(FORMAT, "tune", "{}", {"w": torch.ones(2)})
        >>> a == content_digest(FORMAT, "tune", "{}", {"w": torch.ones(2)}), a == content_digest(
        ...     FORMAT, "tune", "{}", {"w": torch.tensor([1.0, 1.0000001])})
        (True, False)
    """
    h = hashlib.blake2b(digest_size=32)
    for part in (fmt, kind, meta_text):
        h.update(f"{len(part)}|{part}|".encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{len(name)}|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "blake2b-256:" + h.hexdigest()


def save_artefact(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], *, kind: str) -> Path:
    """Write ``tensors`` and ``meta`` (JSON-able, with a ``"base"`` block from :func:`base_meta`) to ``path``, a
    ``.vitlab`` file of producer ``kind``, with its digest; atomic (a temporary file, then renamed).

    Raises:
        BackboneError: ``path`` does not end in ``.vitlab``, ``kind`` is not registered in :data:`KINDS`, or
        ``meta`` has no ``"base"``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != SUFFIX:
        raise BackboneError(f"{path}: a vitlab artefact must end in {SUFFIX}, e.g. lora{SUFFIX}.")
    if kind not in KINDS:
        raise BackboneError(f"artefact kind {kind!r} is not registered; register its rebuild function first: "
                            f"vitlab.backbones.artefact.KINDS.register({kind!r}, 'module:function').")
    if "base" not in meta:
        raise BackboneError(f"{path}: artefact metadata needs a 'base' block (vitlab.backbones.artefact.base_meta).")
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    text = json.dumps(meta, sort_keys=True, default=str)
    md = {"format": FORMAT, "kind": kind, "meta": text, "digest": content_digest(FORMAT, kind, text, cpu)}
    from vitlab._io import atomic_path

    with atomic_path(path, elsewhere="pass another --out") as tmp:
        save_file(cpu, str(tmp), metadata=md)
    return path


def _header(path: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise BackboneError(f"{path}: no such vitlab artefact. `vitlab tune ... --out runs/` writes them as "
                            f"runs/tune/<run>/<method>{SUFFIX}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise BackboneError(f"{path}: not a readable {SUFFIX} artefact ({e}).") from e
    fmt = md.get("format")
    if fmt != FORMAT and fmt not in LEGACY_FORMATS:
        raise BackboneError(f"{path}: not a vitlab artefact (format {fmt!r}, expected {FORMAT!r}).")
    return md


def _parse_meta(path: Path, text: str | None) -> dict[str, Any]:
    try:
        meta = json.loads(text or "")
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise BackboneError(f"{path}: its metadata is not valid JSON; the artefact is damaged. Re-create it (re-run "
                            "the command that made it).")
    return meta


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a ``.vitlab`` artefact from its header (no tensors read, digest not checked: use
    :func:`read_artefact` before trusting it).

    Raises:
        BackboneError: not a file, not safetensors, or not a vitlab artefact (one line naming the file).
    """
    path = Path(path).expanduser()
    return _parse_meta(path, _header(path).get("meta"))


def read_artefact(path: str | Path) -> Artefact:
    """Read a ``.vitlab`` artefact and verify its digest.

    Raises:
        BackboneError: not an artefact, or (one line naming the file) its tensors or metadata do not match the
        digest it was written with.
    """
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    md = _header(path)
    fmt = md["format"]
    kind = md.get("kind") or LEGACY_FORMATS.get(fmt, "")
    meta = _parse_meta(path, md.get("meta"))
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for a damaged body
        raise BackboneError(f"{path}: the artefact's tensors cannot be read ({type(e).__name__}: {e}); the file is "
                            "damaged or truncated. Re-create it (re-run the command that made it).") from None
    digest = md.get("digest")
    if fmt in LEGACY_FORMATS:
        warnings.warn(f"{path}: written in the older format {fmt} without a checksum, so its integrity cannot be "
                      "verified; re-create it with this vitlab to get one.", UserWarning, stacklevel=2)
    else:
        actual = content_digest(fmt, kind, md.get("meta") or "", tensors)
        if digest != actual:
            raise BackboneError(f"{path}: checksum mismatch: its tensors or metadata changed since it was written "
                                f"(stored {str(digest)[:24]}..., now {actual[:24]}...). The file is damaged; "
                                "re-create it (re-run the command that made it) or restore a good copy.")
    return Artefact(path, kind, meta, tensors, digest)


def base_meta(backbone: Backbone, *, load_name: str | None = None, seed: int = 0,
              kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """How to rebuild ``backbone`` later: its loadable name (a backbone loaded from an artefact is named by that
    artefact's path), loader seed and options, and its ``weights_id`` (checked on load).

    Example:
        >>> import vitlab
        >>> base_meta(vitlab.load_backbone("demo:fmnist-vit"))["load_name"]
        'demo:fmnist-vit'
    """
    art = backbone.spec.extra.get("artefact") if isinstance(backbone.spec.extra, dict) else None
    name = load_name or (f"tuned:{art['path']}" if isinstance(art, dict) and art.get("path") else backbone.name)
    return {"load_name": name, "name": backbone.name, "weights_id": backbone.weights_id,
            "pretrained": True,  # a random-init base is named random:<name>
            "seed": int(seed), "kwargs": dict(kwargs or {})}


def _local_path(load_name: str) -> Path | None:
    """The filesystem path a base name points at (``file:``, ``tuned:``, or ``hf:`` with a path), else ``None``."""
    prefix, _, rest = load_name.removeprefix("random:").partition(":")
    rest = rest.split("?", 1)[0]
    if prefix in ("file", "tuned") or (prefix == "hf" and rest.startswith(("/", ".", "~"))):
        return Path(rest).expanduser()
    return None


def load_base(art: Artefact) -> Backbone:
    """Rebuild the base backbone of ``art`` and check that its weights are the ones the artefact was made on.

    Raises:
        BackboneError: one line naming the artefact: its base is missing (a moved or deleted checkpoint), cannot
        be loaded, or now has other weights.
    """
    from vitlab.backbones import load_backbone

    b = art.meta.get("base")
    if not isinstance(b, dict) or "load_name" not in b:
        raise BackboneError(f"{art.path}: the artefact names no base backbone; it is damaged or not a backbone "
                            "artefact.")
    name, local = b["load_name"], _local_path(b["load_name"])
    fix = (f"put the base back where it was when {art.path.name} was made (or re-run the command that made it); "
           f"the artefact holds only what was trained on top of its base.")
    if local is not None and not local.exists():
        raise BackboneError(f"{art.path}: the artefact's BASE backbone is missing: {name} ({local} no longer "
                            f"exists); {fix}")
    try:
        base = load_backbone(name, pretrained=b.get("pretrained", True), seed=int(b.get("seed", 0)),
                             **(b.get("kwargs") or {}))
    except (VitlabError, OSError, ValueError, RuntimeError, ImportError) as e:
        raise BackboneError(f"{art.path}: the artefact's BASE backbone {name} cannot be loaded ({e}); {fix}"
                            ) from None
    if base.weights_id != b.get("weights_id"):
        raise BackboneError(f"{art.path}: the artefact's BASE backbone {name} now has other weights (id "
                            f"{base.weights_id} vs {b.get('weights_id')} when the artefact was made); the artefact "
                            "only fits the weights it was trained on. Restore that checkpoint (or re-run the command "
                            "that made the artefact).")
    return base


def load_artefact(path: str | Path, *, device: str | torch.device = "cpu", **options: Any) -> Backbone:
    """Read, verify and rebuild the backbone saved in a ``.vitlab`` file (what ``load_backbone("x.vitlab")`` calls).

    ``options`` go to the kind's rebuild function (``merge=False`` for a ``tune`` artefact keeps LoRA unmerged).
    The returned backbone's ``spec.extra["artefact"]`` holds the file's path, kind and digest.

    Raises:
        BackboneError: see :func:`read_artefact` and :func:`load_base`; UnknownNameError: an unknown kind.
    """
    import dataclasses

    art = read_artefact(path)
    bb = KINDS.get(art.kind)(art, **options)
    info = {"path": str(art.path.resolve()), "kind": art.kind, "digest": art.digest}
    bb.spec = dataclasses.replace(bb.spec, extra={**bb.spec.extra, "artefact": info})
    return bb.to(device)
