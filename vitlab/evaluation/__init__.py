"""``vitlab.evaluate`` and ``vitlab.mil_eval``: protocols on cached embeddings, every metric with a 95% CI.

:mod:`~vitlab.evaluation.run` holds :func:`evaluate`, :mod:`~vitlab.evaluation.views` the protocols' views
(pooled, tokens, embed, bags) and :mod:`~vitlab.evaluation.mil` :func:`mil_eval` (``evaluate`` with
``mil-<head>`` protocols).

Example:
    >>> from vitlab.evaluation import check_eval_config
    >>> [p.label for p in check_eval_config(protocols="knn,linear")]
    ['knn', 'linear']
"""

from vitlab.evaluation.mil import MILResult, mil_eval
from vitlab.evaluation.run import GALLERY_SIZE, EvalResult, check_eval_config, evaluate

__all__ = ["evaluate", "EvalResult", "check_eval_config", "mil_eval", "MILResult", "GALLERY_SIZE"]
