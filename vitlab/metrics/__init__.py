"""Metrics: classification (``classification``) and generative-model evaluation (``fd``, ``kd``, ``prdc``,
``vendi``, ``sliced_wasserstein``, ``memorization``, ``fls``, ``inception_score``, ``gen_intervals``)."""

from vitlab.metrics._validate import SmallSampleWarning

__all__ = ["SmallSampleWarning"]
