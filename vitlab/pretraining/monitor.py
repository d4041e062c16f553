"""The monitor: every N steps, vitlab's own protocols on the monitor data's validation part, with CIs and feature
health, and the collapse guard.

The monitor data's split is ``vitlab eval --seed s``'s (:meth:`DataSource.splits`: the split column, else the
seeded stratified holdout), with a validation part held out of its training part exactly as ``vitlab tune`` does
(:func:`vitlab.tuning.evaluate._splits`, one home): the monitor fits on the rest of train and scores the validation
part; the test part is never looked at before the final verdict, which is ``vitlab eval`` itself
(:mod:`vitlab.pretraining.verdict`). Protocols are parsed from the same specs as ``vitlab eval --protocol`` (same
defaults); top-1 and balanced accuracy get the classification scorer's percentile-bootstrap CIs over the
validation images (:func:`vitlab.stats.bootstrap.bootstrap_ci`).

Example:
    >>> import vitlab
    >>> from vitlab.tuning.methods import clone_backbone
    >>> from vitlab.pretraining.forward import TokenNet
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> mon = Monitor(vitlab.load_source("sample:digits?limit=120"), bb.spec.preprocessing, seed=0, n_resamples=50)
    >>> point = mon.score(TokenNet(clone_backbone(bb)), torch.device("cpu"))
    >>> sorted(point), 0.0 <= point["metrics"]["knn"]["top1"]["value"] <= 1.0
    (['health', 'hparams', 'metrics'], True)
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
import torch

from vitlab.backbones.preprocessing import Preprocessing
from vitlab.data.base import DataSource
from vitlab.errors import DataError
from vitlab.pretraining.forward import TokenNet

__all__ = ["Monitor", "collapsed", "monitor_splits"]


def monitor_splits(source: DataSource, seed: int, test_fraction: float, val_fraction: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` rows of the monitor data: ``test`` is ``vitlab eval --seed seed``'s test split and
    ``val`` a stratified holdout of its training part (seed ``seed + 1``), as ``vitlab tune`` makes them.

    Raises:
        DataError: no labels, or a split too small.

    Example:
        >>> import vitlab
        >>> tr, val, te = monitor_splits(vitlab.load_source("sample:digits"), 0, 0.2, 0.1)
        >>> len(tr) + len(val) + len(te)
        1797
    """
    from vitlab.tuning.plan import tune_splits

    if source.labels is None:
        raise DataError(f"monitor data {source.uri} has no labels; the monitor scores kNN accuracy, so it needs "
                        "labelled images (class subfolders, or a label column). The training data (--data) may be "
                        "unlabelled.")
    return tune_splits(source, [seed], test_fraction, val_fraction)[seed]


def collapsed(current: dict[str, Any], base: dict[str, Any]) -> bool:
    """The collapse rule: the monitored metric's whole interval lies below the base model's value
    (``current.high < base.value``), i.e. it fell below the base by more than its own interval.

    Example:
        >>> collapsed({"value": 0.5, "low": 0.4, "high": 0.6}, {"value": 0.9, "low": 0.85, "high": 0.95})
        True
        >>> collapsed({"value": 0.85, "low": 0.78, "high": 0.91}, {"value": 0.9, "low": 0.85, "high": 0.95})
        False
    """
    hi, ref = current.get("high"), base.get("value")
    if current.get("value") is None or ref is None:
        return False
    return (hi if hi is not None else current["value"]) < ref


class Monitor:
    """Scores networks on the monitor data's validation part.

    Args:
        source: labelled monitor data.
        preprocessing: how the network's inputs are made (the backbone's).
        seed, test_fraction: as ``vitlab eval --seed --test-fraction``.
        val_fraction: the validation part's share of eval's training part.
        protocols: protocol specs, as ``vitlab eval --protocol`` (classification protocols).
        n_resamples: bootstrap resamples per CI.
        batch_size: images per forward pass.
    """

    def __init__(self, source: DataSource, preprocessing: Preprocessing, *, seed: int = 0,
                 test_fraction: float = 0.2, val_fraction: float = 0.1, protocols: str = "knn",
                 n_resamples: int = 1000, batch_size: int = 128) -> None:
        from vitlab.protocols.base import parse_protocols
        from vitlab.tuning.runner import ImageBank

        self.source, self.seed, self.n_resamples, self.batch_size = source, int(seed), int(n_resamples), batch_size
        self.train, self.val, self.test = monitor_splits(source, seed, test_fraction, val_fraction)
        self.protocols = parse_protocols(protocols)
        bad = [p.label for p in self.protocols if p.task != "classification" or p.view != "pooled"]
        if bad:
            raise DataError(f"the monitor scores classification on pooled features; protocol(s) {', '.join(bad)} "
                            "do not. Use knn and/or linear.")
        self.bank = ImageBank(source, preprocessing)
        self.rows = np.concatenate([self.train, self.val])

    def describe(self) -> dict[str, Any]:
        """Sizes and origin of the parts (for the run record)."""
        return {"uri": self.source.uri, "n_train": int(len(self.train)), "n_val": int(len(self.val)),
                "n_test": int(len(self.test)), "protocols": [p.to_dict() for p in self.protocols],
                "split_origin": "split column" if self.source.split_column is not None else
                "vitlab eval --seed's seeded stratified split; validation part held out of its training part "
                "(seed + 1), as vitlab tune"}

    @torch.no_grad()
    def features(self, net: TokenNet, device: torch.device, autocast: Any = None) -> np.ndarray:
        """Pooled features ``[n_train + n_val, C]`` (float32) of the monitor's train and validation rows."""
        was = net.training
        net.eval()
        out = []
        try:
            for s in range(0, len(self.rows), self.batch_size):
                x = self.bank.batch(self.rows[s:s + self.batch_size]).to(device)
                with autocast or contextlib.nullcontext():
                    out.append(net.pooled(net(x)).float().cpu())
        finally:
            net.train(was)
        return torch.cat(out).numpy()

    def score(self, net: TokenNet, device: torch.device, autocast: Any = None) -> dict[str, Any]:
        """``{"metrics": {protocol: {metric: entry}}, "health": {...}}`` of ``net`` on the validation part.

        Global RNG states are left as they were (monitoring must not change the training that follows).
        """
        from vitlab.protocols.base import Split
        from vitlab.pretraining.health import health
        from vitlab.metrics.classification import METRIC_FUNCTIONS
        from vitlab.stats.bootstrap import bootstrap_ci

        np_state = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            X = self.features(net, device, autocast)
            n_tr = len(self.train)
            y, ids = self.source.labels, list(self.source.ids)
            groups = None if self.source.groups is None else np.asarray(self.source.groups)

            def split(rows: np.ndarray, feats: np.ndarray) -> Split:
                return Split(feats, y[rows], rows, None if groups is None else groups[rows], [ids[i] for i in rows])

            tr, va = split(self.train, X[:n_tr]), split(self.val, X[n_tr:])
            metrics, hparams = {}, {}
            with warnings.catch_warnings():  # small monitor sets: kNN's default k above n is dropped (recorded)
                warnings.filterwarnings("ignore", message="kNN: default k", category=UserWarning)
                warnings.filterwarnings("ignore", message="bootstrap: metric undefined", category=RuntimeWarning)
                for p in self.protocols:
                    res = p.run(tr, va, seed=self.seed, n_classes=len(self.source.classes))
                    y_v, proba = res.outputs["y"], res.outputs["proba"]
                    metrics[p.label] = {  # the classification scorer's intervals, for the two metrics monitored
                        k: bootstrap_ci(METRIC_FUNCTIONS[k], y_v, proba, n_resamples=self.n_resamples, seed=self.seed,
                                        groups=res.groups).to_entry() for k in ("top1", "balanced_accuracy")}
                    hparams[p.label] = res.hparams
        np.random.set_state(np_state)
        return {"metrics": metrics, "health": health(X[n_tr:]), "hparams": hparams}
