"""Metrics: classification (``classification``) and generative-model evaluation (``fd``, ``kd``, ``prdc``,
``vendi``, ``sliced_wasserstein``, ``memorization``, ``fls``, ``inception_score``, ``bootstrap_gen``)."""

from vitlab.metrics._validate import SmallSampleWarning

__all__ = ["SmallSampleWarning"]
