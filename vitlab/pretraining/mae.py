"""``mae``: continued masked-autoencoder pretraining, for MAE-family backbones (timm ViTs that can drop patches).

The encoder is the user's backbone (a copy); MAE checkpoints ship without their decoder (timm's ``*.mae`` weights
are the encoder only), so a new light decoder (lightly's ``MaskedVisionTransformerDecoderTIMM``: fixed 2-D
sine-cosine positions, timm blocks) is warmed up first with the encoder frozen, like DINO's heads. Defaults: mask
ratio 0.75, normalised-pixel loss, crops of scale 0.2..1 with flips and no colour change (MAE, He et al. 2022);
decoder 128 wide, 2 blocks (MAE's is 512 x 8; a small decoder is enough to adapt an encoder and fits a CPU).

Example:
    >>> from vitlab.pretraining.methods import parse_method
    >>> m = parse_method("mae:mask_ratio=0.6")
    >>> m.config.decoder_depth
    2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vitlab.backbones.base import Backbone
from vitlab.errors import ConfigError
from vitlab.pretraining.forward import TokenNet
from vitlab.pretraining.methods import Program, SSLMethod, register_method
from vitlab.pretraining.views import ViewSpec, keep_indices, make_views, normalize

__all__ = ["MAE", "MAEProgram"]


@register_method
class MAE(SSLMethod):
    name = "mae"
    help = "masked autoencoder: reconstruct dropped patches (for MAE-family backbones)"
    source = "MAE (He et al. 2022); decoder: lightly's MaskedVisionTransformerDecoderTIMM"
    needs_masking = True
    export_default = "student"

    @dataclass(frozen=True)
    class Config:
        """``mask_ratio``: share of patches dropped; ``decoder_dim`` / ``decoder_depth`` / ``decoder_heads``: the new
        decoder; ``norm_pix``: per-patch normalised targets; ``scale``: crop scale range; ``hflip``: flip probability."""

        mask_ratio: float = 0.75
        decoder_dim: int = 128
        decoder_depth: int = 2
        decoder_heads: int = 4
        norm_pix: bool = True
        scale: tuple[float, float] = (0.2, 1.0)
        hflip: float = 0.5

        def __post_init__(self) -> None:
            if not isinstance(self.mask_ratio, (int, float)) or not 0 < self.mask_ratio < 1:
                raise ConfigError(f"mask_ratio must be in (0, 1), e.g. 0.75, got {self.mask_ratio!r}.")
            for k in ("decoder_dim", "decoder_depth", "decoder_heads"):
                v = getattr(self, k)
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ConfigError(f"{k} must be a whole number >= 1, got {v!r}.")
            if self.decoder_dim % self.decoder_heads:
                raise ConfigError(f"decoder_dim {self.decoder_dim} must be a multiple of decoder_heads "
                                  f"{self.decoder_heads}.")
            s = tuple(self.scale)
            if len(s) != 2 or not 0 < s[0] <= s[1] <= 1:
                raise ConfigError(f"scale must be [low,high] with 0 < low <= high <= 1, got {self.scale!r}.")
            object.__setattr__(self, "scale", s)
            if not isinstance(self.norm_pix, bool):
                raise ConfigError(f"norm_pix must be true or false, got {self.norm_pix!r}.")

    def build(self, bb: Backbone, generator: torch.Generator) -> Program:
        return MAEProgram(self, bb, generator)


class MAEProgram(Program):
    """Encoder (the user's backbone, copied) on the visible patches, new decoder and pixel head on all of them."""

    def __init__(self, method: MAE, bb: Backbone, generator: torch.Generator) -> None:
        from lightly.models.modules.masked_vision_transformer_decoder_timm import MaskedVisionTransformerDecoderTIMM

        from vitlab.tuning.methods import clone_backbone

        super().__init__()
        c = self.cfg = method.config
        self.student = TokenNet(clone_backbone(bb))
        size = tuple(bb.spec.preprocessing.input_size)
        self.patch = tuple(bb.spec.patch_size)
        self.grid = (size[0] // self.patch[0], size[1] // self.patch[1])
        n = self.grid[0] * self.grid[1]
        with torch.random.fork_rng(devices=[]):  # lightly initialises from the global RNG: seed it
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            self.decoder_embed = nn.Linear(self.student.dim, c.decoder_dim)
            self.decoder = MaskedVisionTransformerDecoderTIMM(num_patches=n, embed_dim=c.decoder_dim,
                                                              depth=c.decoder_depth, num_heads=c.decoder_heads,
                                                              num_prefix_tokens=self.student.num_prefix)
            self.predictor = nn.Linear(c.decoder_dim, self.patch[0] * self.patch[1] * 3)
        self.n_keep = max(1, int(round(n * (1 - c.mask_ratio))))
        self.spec = ViewSpec(size, c.scale, hflip=c.hflip, jitter=0.0, gray=0.0)
        prep = bb.spec.preprocessing
        self.mean, self.std = prep.mean, prep.std

    def new_parameters(self) -> dict[str, nn.Parameter]:
        out = {}
        for part in ("decoder_embed", "decoder", "predictor"):
            out.update({f"{part}.{n}": p for n, p in getattr(self, part).named_parameters() if p.requires_grad})
        return out

    def make_batch(self, images: torch.Tensor, indices: np.ndarray, *, seed: int, epoch: int,
                   device: torch.device) -> dict[str, Any]:
        x = normalize(make_views(images, indices, [self.spec], seed=seed, epoch=epoch)[0], self.mean, self.std)
        n = self.grid[0] * self.grid[1]
        keep = keep_indices(indices, n, self.n_keep, seed=seed, epoch=epoch)
        return {"x": x.to(device), "keep": keep.to(device), "n": len(indices)}

    def loss(self, batch: dict[str, Any], step: int, total: int) -> tuple[torch.Tensor, dict[str, float]]:
        from vitlab.pretraining.losses import mae_loss

        x, keep = batch["x"], batch["keep"]
        B, P, N = x.shape[0], self.student.num_prefix, self.grid[0] * self.grid[1]
        enc = self.decoder_embed(self.student(x, keep=keep))  # [B, P + K, D]
        full = self.decoder.mask_token.to(enc.dtype).expand(B, P + N, -1).clone()
        full[:, :P] = enc[:, :P]
        full.scatter_(1, (keep + P)[..., None].expand(-1, -1, enc.shape[-1]), enc[:, P:])
        dec = self.decoder.decode(self.decoder.add_pos_embed(full))
        pred = self.predictor(dec[:, P:])
        masked = torch.ones(B, N, dtype=torch.bool, device=x.device)
        masked.scatter_(1, keep, False)
        loss = mae_loss(pred, x, self.patch, masked, norm_pix=self.cfg.norm_pix)
        return loss, {"mae": float(loss.detach())}
