"""The embedding explorer's data: a 2-D map of the cached embeddings (:mod:`~vitlab.explore.layout`, cached by
:mod:`~vitlab.explore.cache`), each item's neighbours, the eval split's predictions, duplicate groups and label
issues (:mod:`~vitlab.explore.issues`, the adapter to :mod:`vitlab.curate.label_issues`), computed by
:func:`explore` (:mod:`~vitlab.explore.run`; also ``vitlab.explore`` lazily). The page is rendered by
:func:`vitlab.report.explore_page.write_explore_page` (report/ renders, this package computes).

Example:
    >>> from vitlab.explore import explore
    >>> res = explore("demo:fmnist-vit", "sample:fashion-mnist", layout="pca")  # doctest: +SKIP
    >>> res.data.xy.shape  # doctest: +SKIP
    (2000, 2)
"""

from vitlab.explore.layout import Layout, LayoutConfig, compute_layout
from vitlab.explore.run import ExploreData, ExploreResult, explore

__all__ = ["explore", "ExploreResult", "ExploreData", "compute_layout", "Layout", "LayoutConfig"]


class _CallableModule(__import__("types").ModuleType):
    """``vitlab.explore`` is both this package and the API function (as ``vitlab.curate``): calling the package
    calls :func:`explore`, whichever of the two an earlier import left on ``vitlab``."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003 - the signature is explore's
        return explore(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
