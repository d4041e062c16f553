"""The embedding explorer's data: a 2-D map of the cached embeddings (:mod:`~vitlab.exploration.layout`, cached by
:mod:`~vitlab.exploration.cache`), each item's neighbours, the eval split's predictions, duplicate groups and label
issues (:mod:`~vitlab.exploration.issues`, the adapter to :mod:`vitlab.curation.label_issues`), computed by
:func:`explore` (:mod:`~vitlab.exploration.run`; also ``vitlab.explore`` lazily). The page is rendered by
:func:`vitlab.report.explore_page.write_explore_page` (report/ renders, this package computes).

Example:
    >>> from vitlab.exploration import explore
    >>> res = explore("demo:fmnist-vit", "sample:digits?limit=200", layout="pca", n_resamples=20, progress=False)
    >>> res.data.xy.shape
    (200, 2)
"""

from vitlab.exploration.layout import Layout, LayoutConfig, compute_layout
from vitlab.exploration.run import ExploreData, ExploreResult, explore

__all__ = ["explore", "ExploreResult", "ExploreData", "compute_layout", "Layout", "LayoutConfig"]

