"""Data sources: folders, manifests, IDX files, segmentation folders, WebDataset shards, saved Hugging Face
datasets and bundled samples → :class:`DataSource`.

Example:
    >>> from vitlab.data import load_source
    >>> src = load_source("sample:fashion-mnist")
    >>> len(src)
    2000
"""

from __future__ import annotations

from typing import Any

from vitlab._registry import Registry
from vitlab.data.base import ArraySource, DataSource, Sample
from vitlab.errors import DataError, UnknownNameError

KINDS = Registry("data source kind", hint="Write it as <kind>:<path>, e.g. folder:./my_images.")
KINDS.register("folder", "vitlab.data.folder:FolderSource", help="folder:<dir>  (class subfolders, or flat = unlabeled)")
KINDS.register("csv", "vitlab.data.manifest:ManifestSource", help="csv:<file.csv|.tsv|.parquet>  (path,label[,split][,group]; or path,mask[,split] ?classes=<file>)")
KINDS.register("idx", "vitlab.data.idx:IdxSource", help="idx:<dir>[?split=train|test]  (MNIST-style IDX files)")
KINDS.register("seg", "vitlab.data.seg:SegFolderSource",
               help="seg:<dir>[?ignore_index=255]  (images/<stem>.<ext> + masks/<stem>.png [+ classes.txt])")
KINDS.register("bags", "vitlab.data.bags:open_bags",
               help="bags:<file.csv|.tsv|.parquet>  (bag_id,label,path|features[,patient_id][,split][,fold]; MIL bags)")
KINDS.register("wds", "vitlab.data.wds:WdsSource",
               help="wds:<dir|file.tar|dir/{00000..00099}.tar>[?label=cls|<json key>]  (WebDataset / img2dataset shards)")
KINDS.register("hfds", "vitlab.data.hfds:HFDiskSource",
               help="hfds:<dir>[?split=&image=&label=&id=]  (Hugging Face datasets save_to_disk folder)")
KINDS.register("photos", "vitlab.data.photos:PhotoSource",
               help="photos:all | photos:china,flower  (natural photos bundled with scikit-learn / scikit-image)")
KINDS.register("sample", "vitlab.data.sample:open_sample",
               help="sample:fashion-mnist  (2,000 images bundled) | sample:fashion-mnist-mosaic  (1,000 seg mosaics)"
                    " | sample:fashion-mnist-bags  (200 MIL bags) | sample:digits  (1,797 8x8 digits, scikit-learn)")


def parse_uri(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``kind:target?key=value&...`` into its parts.

    Example:
        >>> parse_uri("idx:/data/fmnist?split=test")
        ('idx', '/data/fmnist', {'split': 'test'})
    """
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise UnknownNameError("data source", spec, [f"{k}:" for k in KINDS.names()],
                               f"Write it as <kind>:<path> with kind one of {', '.join(KINDS.names())}, "
                               f"e.g. folder:{spec}.")
    target, _, query = rest.partition("?")
    params = {}
    for part in filter(None, query.split("&")):
        k, eq, v = part.partition("=")
        if not eq:
            raise DataError(f"{spec}: option {part!r} must be key=value.")
        params[k] = v
    return kind, target, params


def load_source(spec: str | DataSource, **kwargs: Any) -> DataSource:
    """Open a data source by URI (``folder:``, ``csv:``, ``idx:``, ``seg:``, ``bags:``, ``wds:``, ``hfds:``, ``sample:``).

    Args:
        spec: e.g. ``"folder:./my_images"``, ``"csv:manifest.parquet"``,
            ``"idx:/usr/share/datasets/fashion-mnist?split=test"``, ``"seg:./roads?ignore_index=0"``,
            ``"sample:fashion-mnist"``, ``"sample:fashion-mnist-mosaic"``;
            a :class:`DataSource` is returned as is.
        **kwargs: options for the source's constructor (also accepted as ``?key=value``).

    Example:
        >>> load_source("sample:fashion-mnist").classes[:3]
        ['T-shirt/top', 'Trouser', 'Pullover']
    """
    if isinstance(spec, DataSource):
        return spec
    kind, target, params = parse_uri(spec)
    cls = KINDS.get(kind)
    opts: dict[str, Any] = {**params, **kwargs}
    if "limit" in opts:
        opts["limit"] = int(opts["limit"])
    try:
        return cls(target, **opts)
    except TypeError as e:
        raise DataError(f"{spec}: unsupported option(s) {sorted(opts)} for {kind}: ({e}).") from e


def list_kinds() -> dict[str, str]:
    """Data-source kinds and their usage (``vitlab ls``)."""
    return {e.name: e.help for e in KINDS}


__all__ = ["DataSource", "ArraySource", "Sample", "load_source", "parse_uri", "list_kinds", "KINDS"]
