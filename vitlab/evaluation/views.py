"""The views a protocol sees: each protocol's train/test :class:`~vitlab.protocols.base.Split`, built from the
store's views (pooled vectors, patch tokens, joint-space embeddings with text embeddings) or, for MIL, the bags
view of a bag source. Used by :func:`vitlab.evaluation.evaluate` only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vitlab.backbones import Backbone
from vitlab.data import DataSource
from vitlab.errors import ConfigError, DataError
from vitlab.protocols.base import Protocol, Result, Split
from vitlab.store import Embeddings, EmbeddingStore

__all__ = ["Views", "BagViews"]


class Views:
    """Builds each protocol's train/test :class:`Split` from the store's views (pooled, tokens, embed)."""

    def __init__(self, backbone: Backbone, source: DataSource, emb: Embeddings, store: EmbeddingStore,
                 X: np.ndarray, y: np.ndarray | None, groups: np.ndarray | None, ids: list[str],
                 embed_kwargs: dict[str, Any]) -> None:
        self.backbone, self.source, self.emb, self.store = backbone, source, emb, store
        self.X, self.y, self.groups, self.ids, self.embed_kwargs = X, y, groups, ids, embed_kwargs

    def _base(self, rows: np.ndarray, X: np.ndarray | None) -> Split:
        return Split(None if X is None else X[rows], None if self.y is None else self.y[rows], rows,
                     None if self.groups is None else self.groups[rows], [self.ids[i] for i in rows])

    def pooled(self, rows: np.ndarray) -> Split:
        return self._base(rows, self.X)

    def by_roles(self, tr: np.ndarray, te: np.ndarray) -> tuple[Split, Split]:
        """Retrieval with explicit roles and/or positives: ``(gallery, queries)``. With a ``role`` column the
        manifest decides (the split is ignored); otherwise the training split is the gallery."""
        roles, positives = self.source.roles, self.source.positives
        if roles is not None:
            per_row = np.asarray([roles[int(i)] for i in np.asarray(self.emb.index)])
            tr = np.flatnonzero(np.isin(per_row, ("gallery", "both")))
            te = np.flatnonzero(np.isin(per_row, ("query", "both")))
            if not len(tr) or not len(te):
                raise DataError(f"{self.source.uri}: the role column gives {len(te)} queries and {len(tr)} gallery "
                                "items; retrieval needs both.")
        extra = {} if positives is None else {"positives": positives}
        return (dataclasses.replace(self.pooled(tr), extra=extra), dataclasses.replace(self.pooled(te), extra=extra))

    def for_protocol(self, proto: Protocol, tr: np.ndarray, te: np.ndarray) -> tuple[Split, Split]:
        if proto.view == "embed":
            return self._embed(proto, tr, te)
        if proto.view == "tokens":
            return self._tokens(proto, tr, te)
        raise ConfigError(f"protocol {proto.label} asks for an unknown view {proto.view!r}.")

    def _same_rows(self, other: Embeddings) -> None:
        if not np.array_equal(np.asarray(other.index), np.asarray(self.emb.index)):
            raise DataError("the token / embed view holds different images than the pooled view (an image was "
                            "skipped in one of them); fix or remove the bad images and run again.")

    def _embed(self, proto: Protocol, tr: np.ndarray, te: np.ndarray) -> tuple[Split, Split]:
        from vitlab.protocols.text_cache import text_embeddings

        last = self.backbone.spec.depth - 1
        emb = self.emb
        if last not in emb.layers:
            kw = {k: v for k, v in self.embed_kwargs.items() if k not in ("view", "token_dtype")}
            emb = self.store.get_or_compute(self.backbone, self.source, layers=-1, **kw)
            self._same_rows(emb)
        X = np.asarray(emb.get(last, "embed"), dtype=np.float32)
        names, templates = proto.prompts(list(emb.classes))
        text = text_embeddings(self.backbone, names, templates, cache_dir=self.store.root)
        extra = {"text_embeddings": text, "classnames": names}
        return (dataclasses.replace(self._base(tr, X), extra=extra),
                dataclasses.replace(self._base(te, X), extra=extra))

    def _tokens(self, proto: Protocol, tr: np.ndarray, te: np.ndarray) -> tuple[Split, Split]:
        layers = self.backbone.resolve_layers(list(proto.config.layers))
        kw = {k: v for k, v in self.embed_kwargs.items() if k != "view"}
        emb = self.store.get_or_compute(self.backbone, self.source, layers=list(layers), view="tokens", **kw)
        self._same_rows(emb)
        tokens = np.concatenate([np.asarray(emb.tokens(layer), dtype=np.float32) for layer in layers], axis=-1)
        grid = tuple(emb.grid)
        index = np.asarray(emb.index)
        pre = self.backbone.spec.preprocessing
        extra = {"classes": list(emb.classes), "ignore_index": self.source.ignore_index, "layers": list(layers)}

        def side(rows: np.ndarray) -> Split:
            masks = []
            for r in rows:
                m = self.source.mask(int(index[r]))
                t, left, h, w = pre.view_box(*m.shape)
                masks.append(m[t:t + h, left:left + w])
            return dataclasses.replace(self._base(rows, None), tokens=tokens[rows], grid=grid, masks=masks,
                                       extra=extra)

        return side(tr), side(te)


class BagViews:
    """The ``bags`` view of a bag source: the cross-validation bags (``train``) and the manifest's held-out
    ``test`` bags (possibly none), each a :class:`Split` carrying its :class:`~vitlab.mil.data.BagData`."""

    def __init__(self, source: DataSource, emb: Embeddings | None, protos: list[Protocol]) -> None:
        from vitlab.mil.data import bag_data

        if emb is None:
            bags = bag_data(source)
        else:
            if len(emb) != len(source):
                raise DataError(f"{len(source) - len(emb)} instance image(s) could not be embedded; MIL needs every "
                                "instance of a bag. Fix or remove them.")
            bags = bag_data(source, np.asarray(emb.get(), dtype=np.float32))
        row_ids = list(source.ids)
        try:
            names = [[row_ids[r] for r in np.asarray(source.bag_rows(b))] for b in bags.ids]
        except (AttributeError, KeyError):
            names = None
        held = (np.array([sp == "test" for sp in bags.split], bool) if bags.split is not None
                else np.zeros(len(bags), bool))
        folds = max(getattr(p.config, "folds", 2) for p in protos)
        if held.any() and (~held).sum() < folds:
            raise DataError(f"{source.uri}: only {int((~held).sum())} bag(s) outside split 'test' for {folds}-fold "
                            "cross-validation; mark fewer bags as test or lower --folds.")
        self.all, self.source = bags, source
        self.train = self._split(bags.subset(~held), None if names is None else [n for n, h in zip(names, held) if not h])
        self.test = self._split(bags.subset(held), None if names is None else [n for n, h in zip(names, held) if h])

    @staticmethod
    def _split(bags: Any, names: list[list[str]] | None) -> Split:
        return Split(None, bags.labels, np.arange(len(bags)), np.asarray(bags.patients, dtype=object), list(bags.ids),
                     extra={"bags": bags, "instance_names": names})

    def config(self, first: Result) -> dict[str, Any]:
        """The record config of a bag run: folds, their origin, the bootstrap unit, the held-out test."""
        n_test = len(self.test)
        return {"task": "mil", "folds": first.details.get("folds"), "fold_origin": first.details.get("fold_origin"),
                "split_origin": first.details.get("fold_origin"), "bootstrap_unit": "patient",
                "n_cv_bags": len(self.train), "n_test_bags": n_test,
                "test": None if not n_test else "manifest split 'test': the K fold models' mean probability "
                                                 "(protocols mil-<head>@test)"}

    def data_details(self) -> dict[str, Any]:
        b = self.all
        return {"classes": b.classes, "n_bags": len(b), "n_patients": int(len(set(b.patients))),
                "bag_sizes": {"min": int(b.sizes.min()), "median": float(np.median(b.sizes)), "max": int(b.sizes.max())}}
