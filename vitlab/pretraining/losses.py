"""Losses and updates of continued pretraining and distillation.

From lightly (MIT), used as they are: ``DINOLoss`` (cross-entropy between the centred, sharpened teacher and the
student over every pair of different views, centre by EMA), ``IBOTPatchLoss`` (the same on masked patches,
weighted per image), ``KoLeoLoss`` (``-mean log`` of each feature's nearest-neighbour distance), ``update_momentum``
(EMA), ``cosine_schedule``. Written here: the teacher-momentum schedule around them, the feature-distillation
loss (AM-RADIO, Ranzinger et al. 2024: cosine on the summary token, 0.9 cosine + 0.1 smooth-L1 on the patch
features, the teacher's grid interpolated to the student's) and MAE's normalised-pixel loss (He et al. 2022).
``tests/unit/test_pretrain_losses.py`` checks each against the paper's formula on fixed tensors.

Example:
    >>> t, s = torch.zeros(4, 8), torch.zeros(4, 8)
    >>> ema_update(t_mod := torch.nn.Linear(2, 2), s_mod := torch.nn.Linear(2, 2), 0.0)
    >>> bool(torch.equal(t_mod.weight, s_mod.weight))
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ema_update", "momentum_at", "teacher_probs", "feature_loss", "mae_loss", "interpolate_grid"]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, m: float) -> None:
    """``teacher <- m * teacher + (1 - m) * student``, parameter by parameter (lightly's ``update_momentum``).

    ``m = 1`` leaves the teacher exactly as it is (skipped), ``m = 0`` copies the student exactly.
    """
    if m >= 1.0:
        return
    if m <= 0.0:
        for t, s in zip(teacher.parameters(), student.parameters()):
            t.copy_(s)
        return
    from lightly.models.utils import update_momentum

    update_momentum(student, teacher, m)


def momentum_at(step: int, total: int, start: float) -> float:
    """Teacher momentum at ``step`` of ``total``: cosine from ``start`` to 1 (DINO; lightly's ``cosine_schedule``).

    Example:
        >>> momentum_at(0, 100, 0.996), momentum_at(99, 100, 0.996)
        (0.996, 1.0)
    """
    from lightly.utils.scheduler import cosine_schedule

    return float(cosine_schedule(int(step), max(1, int(total)), float(start), 1.0))


@torch.no_grad()
def teacher_probs(logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """The teacher's output distributions ``softmax((logits - center) / temp)`` ``[..., K]``, float64 (as the
    DINO loss sees them; for the entropy diagnostic)."""
    return torch.softmax((logits.double() - center.double()) / temp, dim=-1)


def interpolate_grid(tokens: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """Patch tokens ``[B, h*w, C]`` on grid ``src = (h, w)`` resampled (bilinear) to grid ``dst`` ``[B, h'*w', C]``.

    Example:
        >>> interpolate_grid(torch.ones(2, 16, 3), (4, 4), (2, 2)).shape
        torch.Size([2, 4, 3])
    """
    if tuple(src) == tuple(dst):
        return tokens
    B, N, C = tokens.shape
    grid = tokens.transpose(1, 2).reshape(B, C, *src)
    out = F.interpolate(grid, size=tuple(dst), mode="bilinear", align_corners=False, antialias=True)
    return out.flatten(2).transpose(1, 2)


def feature_loss(student_cls: torch.Tensor, teacher_cls: torch.Tensor, student_patches: torch.Tensor,
                 teacher_patches: torch.Tensor, *, cls_weight: float = 1.0, patch_weight: float = 1.0,
                 cos_share: float = 0.9) -> tuple[torch.Tensor, dict[str, float]]:
    """AM-RADIO's feature distillation loss for one teacher.

    ``cls_weight * (1 - cos(s_cls, t_cls)) + patch_weight * (cos_share * (1 - cos) + (1 - cos_share) *
    smooth_l1)`` with the patch terms averaged over every patch of every image. Inputs are the student's
    adapted tokens and the teacher's (``[B, C]`` and ``[B, N, C]``, on the same grid).

    Example:
        >>> x = torch.randn(2, 8); p = torch.randn(2, 4, 8)
        >>> loss, parts = feature_loss(x, x, p, p)
        >>> abs(round(float(loss), 6))
        0.0
    """
    t_cls, t_p = teacher_cls.float(), teacher_patches.float()
    cls_l = (1 - F.cosine_similarity(student_cls.float(), t_cls, dim=-1)).mean()
    cos_p = (1 - F.cosine_similarity(student_patches.float(), t_p, dim=-1)).mean()
    l1_p = F.smooth_l1_loss(student_patches.float(), t_p)
    patch_l = cos_share * cos_p + (1 - cos_share) * l1_p
    loss = cls_weight * cls_l + patch_weight * patch_l
    return loss, {"cls_cos": float(cls_l.detach()), "patch_cos": float(cos_p.detach()),
                  "patch_smooth_l1": float(l1_p.detach())}


def patchify(x: torch.Tensor, patch: tuple[int, int]) -> torch.Tensor:
    """Images ``[B, 3, H, W]`` → patches ``[B, N, ph * pw * 3]`` in row-major grid order.

    Example:
        >>> patchify(torch.zeros(1, 3, 8, 8), (4, 4)).shape
        torch.Size([1, 4, 48])
    """
    B, C, H, W = x.shape
    ph, pw = patch
    t = x.reshape(B, C, H // ph, ph, W // pw, pw).permute(0, 2, 4, 3, 5, 1)
    return t.reshape(B, (H // ph) * (W // pw), ph * pw * C)


def mae_loss(pred: torch.Tensor, images: torch.Tensor, patch: tuple[int, int], masked: torch.Tensor,
             norm_pix: bool = True) -> torch.Tensor:
    """MAE's loss: mean squared error on the masked patches only, each target patch normalised by its own mean and
    variance (``norm_pix_loss``, He et al. 2022).

    Args:
        pred: ``[B, N, ph * pw * 3]`` predictions for every patch.
        images: ``[B, 3, H, W]`` the encoder's input.
        masked: ``[B, N]`` bool, the dropped patches.

    Example:
        >>> img = torch.randn(2, 3, 8, 8); tgt = patchify(img, (4, 4))
        >>> tgt = (tgt - tgt.mean(-1, keepdim=True)) / (tgt.var(-1, keepdim=True) + 1e-6) ** 0.5
        >>> float(mae_loss(tgt, img, (4, 4), torch.ones(2, 4, dtype=torch.bool)))
        0.0
    """
    target = patchify(images, patch)
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    per_patch = ((pred.float() - target.float()) ** 2).mean(-1)
    m = masked.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum().clamp_min(1.0)
