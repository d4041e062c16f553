"""Generative-model evaluation: encoders, cached features, reference statistics and dgm-eval's metrics.

Example:
    >>> from vitlab.generative import gen_eval, gen_stats
    >>> stats = gen_stats("sample:digits?limit=128", "digits.demo.stats", encoder="demo:fmnist-vit", progress=False)
    >>> res = gen_eval(real_stats="digits.demo.stats", fake="sample:digits?limit=64", metrics="fd", progress=False)
    >>> res.metric("fd") > 0  # the encoder comes from the stats file
    True
    >>> gen_stats("folder:./imagenet_val", "imagenet_val.dinov2-l.stats")  # downloads DINOv2-L weights  # doctest: +SKIP
"""

from vitlab.generative.encoders import DEFAULT_ENCODER, DGM_EVAL_DINOV2, Encoder, list_encoders, load_encoder
from vitlab.generative.evaluate import GenEvalResult, closest_pairs, gen_eval, gen_stats
from vitlab.generative.features import FeatureSet, feature_set, load_feature_file
from vitlab.generative.metrics import DEFAULT_METRICS, METRIC_ORDER, GenEvalConfig, parse_metrics
from vitlab.generative.stats_file import ReferenceStats, check_compatible, load_stats, save_stats

__all__ = ["gen_eval", "gen_stats", "GenEvalResult", "GenEvalConfig", "Encoder", "load_encoder", "list_encoders",
           "DEFAULT_ENCODER", "DGM_EVAL_DINOV2", "FeatureSet", "feature_set", "load_feature_file",
           "ReferenceStats", "load_stats", "save_stats", "check_compatible", "closest_pairs", "parse_metrics",
           "METRIC_ORDER", "DEFAULT_METRICS"]
