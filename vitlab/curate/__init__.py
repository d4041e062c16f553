"""Curation on cached embeddings: duplicates (exact, perceptual, semantic), leakage across the eval split,
score-based filters and label issues, with their effect on the evaluation measured by the same statistics.

One concept per module: :mod:`~vitlab.curate.hashing` (exact + pHash), :mod:`~vitlab.curate.pairs` (every
pair above a threshold), :mod:`~vitlab.curate.semantic` (neighbour table, faiss recall),
:mod:`~vitlab.curate.clusters` (clique groups, keep rule, removal curve), :mod:`~vitlab.curate.calibrate`
(``threshold="auto"``), :mod:`~vitlab.curate.leakage`, :mod:`~vitlab.curate.filters`,
:mod:`~vitlab.curate.label_issues` (:func:`~vitlab.curate.label_issues.find_label_issues`),
:mod:`~vitlab.curate.manifest`, :mod:`~vitlab.curate.options` (checks before any work), and
:mod:`~vitlab.curate.run` (:func:`curate`, the entry point; also ``vitlab.curate`` lazily). Reports are
rendered by :mod:`vitlab.report` from the record, never here.

Example:
    >>> from vitlab.curate import curate
    >>> res = curate("demo:fmnist-vit", "folder:./imgs", threshold="auto")  # doctest: +SKIP
    >>> vitlab.report.render_html([res.record], "curate.html")  # doctest: +SKIP
"""

from vitlab.curate.run import CurateResult, curate

__all__ = ["curate", "CurateResult"]


class _CallableModule(__import__("types").ModuleType):
    """``vitlab.curate`` is both this package and the API function: calling the package calls :func:`curate`
    (a module subclass, the documented way to customise a module's behaviour), so ``vitlab.curate(...)``
    works whichever of the two an earlier import left on ``vitlab``."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003 - the signature is curate's
        return curate(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
