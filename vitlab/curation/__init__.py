"""Curation on cached embeddings: duplicates (exact, perceptual, semantic), leakage across the eval split,
score-based filters and label issues, with their effect on the evaluation measured by the same statistics.

One concept per module: :mod:`~vitlab.curation.hashing` (exact + pHash), :mod:`~vitlab.curation.pairs` (every
pair above a threshold), :mod:`~vitlab.curation.semantic` (neighbour table, faiss recall),
:mod:`~vitlab.curation.clusters` (clique groups, keep rule, removal curve), :mod:`~vitlab.curation.calibrate`
(``threshold="auto"``), :mod:`~vitlab.curation.leakage`, :mod:`~vitlab.curation.filters`,
:mod:`~vitlab.curation.label_issues` (:func:`~vitlab.curation.label_issues.find_label_issues`),
:mod:`~vitlab.curation.manifest`, :mod:`~vitlab.curation.options` (checks before any work), and
:mod:`~vitlab.curation.run` (:func:`curate`, the entry point; also ``vitlab.curate`` lazily). Reports are
rendered by :mod:`vitlab.report` from the record, never here.

Example:
    >>> from vitlab.curation import curate
    >>> import vitlab.report
    >>> res = curate("demo:fmnist-vit", "sample:digits?limit=300", threshold=0.99, n_resamples=20, progress=False)
    >>> vitlab.report.render_html([res.record], "curate.html")
    PosixPath('curate.html')
"""

from vitlab.curation.run import CurateResult, curate

__all__ = ["curate", "CurateResult"]

