"""Evaluation protocols: one class per protocol, each with its own frozen config (see :mod:`vitlab.protocols.base`).

Example:
    >>> from vitlab.protocols import parse_protocols
    >>> [p.label for p in parse_protocols("knn,linear:max_iter=2000")]
    ['knn', 'linear']
"""

from vitlab.protocols.base import PROTOCOLS, Protocol, Result, Split, parse_protocols, register_protocol
from vitlab.protocols.classification import KNN, FewShot, FewShotConfig, KNNConfig, Linear, LinearConfig
from vitlab.protocols.retrieval import Retrieval, RetrievalConfig
from vitlab.protocols.seg import SegKNN, SegLinear, SegLinearMS
from vitlab.protocols.zeroshot import ZeroShot

__all__ = ["PROTOCOLS", "Protocol", "Result", "Split", "parse_protocols", "register_protocol",
           "KNN", "KNNConfig", "Linear", "LinearConfig", "FewShot", "FewShotConfig", "Retrieval", "RetrievalConfig",
           "SegLinear", "SegLinearMS", "SegKNN", "ZeroShot"]
