"""Multiple-instance learning: a bag of instance embeddings ``[n, d]`` gets one label.

:mod:`vitlab.mil.heads` holds the heads (mean, max, ABMIL, TransMIL, CLAM-SB) and
:mod:`vitlab.mil.train` the one-bag-per-step training loop and prediction.

Example:
    >>> from vitlab.mil import HEADS, build_head, fit_head, predict
    >>> "transmil" in HEADS
    True
"""

from vitlab.mil.heads import HEADS, MILOutput, build_head
from vitlab.mil.train import FittedHead, MILTrainConfig, MILTrainer, check_bags, fit_head, predict

__all__ = ["HEADS", "MILOutput", "build_head", "FittedHead", "MILTrainConfig", "MILTrainer", "check_bags",
           "fit_head", "predict"]
