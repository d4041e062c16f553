"""Inspection: what a ViT looks at, where its artefact tokens are, and how robust it is.

Modules: :mod:`~vitlab.inspect.capture` (eager attention capture, checked against the fused forward),
:mod:`~vitlab.inspect.maps` (CLS/register attention, rollout, gradient rollout, Grad-CAM),
:mod:`~vitlab.inspect.pca` (PCA maps), :mod:`~vitlab.inspect.artefacts` (high-norm tokens),
:mod:`~vitlab.inspect.sanity` (model randomisation, deletion/insertion),
:mod:`~vitlab.inspect.robust` and :mod:`~vitlab.inspect.attacks` (patch corruptions, PGD),
:mod:`~vitlab.inspect.api` (``vitlab.inspect_run`` / ``vitlab.robust``).

Example:
    >>> from vitlab.inspect.maps import rollout
    >>> import torch
    >>> rollout(torch.eye(2).expand(1, 1, 1, 2, 2)).shape
    torch.Size([1, 2, 2])
"""
