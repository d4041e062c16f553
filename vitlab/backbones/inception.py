"""``inception:fid``: the FID Inception-V3 (TensorFlow's 2015-12-05 graph, as pytorch-fid) as a pseudo-backbone.

The network is torchvision's ``inception_v3`` with pytorch-fid's FID-specific
changes written out: 1008 classes, no aux head, and the blocks ``FIDInceptionA/C/E_1``
(average pools that ignore padded zeros, ``count_include_pad=False``) and
``FIDInceptionE_2`` (max pool in the last block's pooling branch), with the weights
ported from TensorFlow (``pt_inception-2015-12-05``).

Behind the :class:`Backbone` contract it has one "layer": the ``Mixed_7c`` map
``[B, 2048, 8, 8]`` at 299x299 as 64 patch tokens (no class token), so ``mean``
pooling is exactly the ``pool3`` average-pool features ``[B, 2048]`` used by
FID/KID; :meth:`InceptionBackbone.class_probs` maps those features to the
1008-way softmax used by the Inception Score.

Preprocessing (FID protocol): resize straight to 299x299, bilinear, then scale
``[0, 1] → [-1, 1]`` (mean = std = 0.5). pytorch-fid / dgm-eval resize the float
tensor with ``F.interpolate(bilinear, align_corners=False)``; here torchvision
resizes the 8-bit PIL image (PIL bilinear, antialiased when downsampling, result
rounded to 8 bits), so features differ slightly from theirs when images are not
299x299 (for upsampling only by that 8-bit rounding). ``--resize clean`` gives
clean-fid's protocol instead.

Example:
    >>> bb = load_inception("fid", pretrained=False)
    >>> bb.spec.embed_dim, bb.spec.grid_size
    (2048, (8, 8))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from vitlab.backbones._seed import seeded
from vitlab.backbones.base import Backbone, BackboneSpec
from vitlab.backbones.preprocessing import Preprocessing
from vitlab.errors import BackboneError, DataError, UnknownNameError

#: Inception weights ported to PyTorch from TensorFlow's inception-2015-12-05.tgz (pytorch-fid release).
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
VARIANTS = ("fid",)
FID_PREPROCESSING = Preprocessing(input_size=(299, 299), resize="stretch", interpolation="bilinear",
                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

_inc = torchvision.models.inception


class FIDInceptionA(_inc.InceptionA):
    """InceptionA with TensorFlow's average pool (padded zeros excluded from the mean)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b5, b3, bp], 1)


class FIDInceptionC(_inc.InceptionC):
    """InceptionC with TensorFlow's average pool (padded zeros excluded from the mean)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
        return torch.cat([b1, b7, bd, bp], 1)


class FIDInceptionE_1(_inc.InceptionE):  # noqa: N801  (pytorch-fid's name)
    """First InceptionE with TensorFlow's average pool (padded zeros excluded from the mean)."""

    max_pool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


class FIDInceptionE_2(FIDInceptionE_1):  # noqa: N801  (pytorch-fid's name)
    """Second InceptionE: the FID graph max-pools in the pooling branch (the paper says average)."""

    max_pool = True


def fid_inception_v3(*, pretrained: bool = True, seed: int = 0) -> nn.Module:
    """torchvision's Inception-V3 patched into the FID network, with the FID weights or seeded random ones.

    Args:
        pretrained: download (once, to the torch hub cache) and load ``FID_WEIGHTS_URL``.
        seed: seed of the random initialisation when ``pretrained=False`` (He-normal convolutions).

    Returns:
        ``torchvision.models.Inception3`` with 1008 classes and the FID blocks.
    """
    def build() -> nn.Module:
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
        net.Mixed_5b = FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = FIDInceptionE_1(1280)
        net.Mixed_7c = FIDInceptionE_2(2048)
        if not pretrained:  # He init keeps random-weight activations O(1) through the 48 BN-ReLU convs
            for m in net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        return net

    net = seeded(build, seed)
    if pretrained:
        try:
            state = torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, progress=True, map_location="cpu")
        except Exception as e:  # network, proxy, partial download, bad hash
            raise BackboneError(
                f"could not download the FID Inception weights from {FID_WEIGHTS_URL} ({type(e).__name__}: {e}). "
                "Check the network (or put the file in the torch hub cache, $TORCH_HOME/hub/checkpoints), "
                "or pass --no-pretrained for seeded random weights.") from e
        net.load_state_dict(state)
    return net


class _FIDTrunk(nn.Module):
    """Stem → ``Mixed_7c`` of the FID Inception, returning the ``[B, 2048, h, w]`` map; keeps ``fc`` for IS."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = F.max_pool2d(n.Conv2d_2b_3x3(n.Conv2d_2a_3x3(n.Conv2d_1a_3x3(x))), kernel_size=3, stride=2)
        x = F.max_pool2d(n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x)), kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(n, name)(x)
        return x


class InceptionBackbone(Backbone):
    """The FID Inception-V3 behind the :class:`Backbone` contract: one layer of 8x8 ``Mixed_7c`` tokens.

    ``mean`` pooling gives the 2048-d ``pool3`` features; there is no class token.
    """

    #: The FID protocol resizes any image to 299x299 (CIFAR-10's 32x32 included).
    min_image_side = 1

    def _forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        fmap = self.model(x)
        return [fmap.flatten(2).transpose(1, 2)]

    def class_probs(self, features: np.ndarray) -> np.ndarray:
        """Softmax class probabilities ``[n, 1008]`` from ``pool3`` features ``[n, 2048]`` (for the IS).

        As the original TensorFlow Inception Score code and dgm-eval (``fc.bias = None``),
        the logits are ``features @ W^T`` without the bias. Computed in float64.

        Example:
            >>> bb = load_inception("fid", pretrained=False)
            >>> bb.class_probs(np.zeros((2, 2048), np.float32)).sum(1).round(6).tolist()
            [1.0, 1.0]
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.spec.embed_dim:
            raise DataError(f"class_probs needs pool3 features [n, {self.spec.embed_dim}] of {self.name}, got "
                            f"shape {tuple(x.shape)}. Embed with this backbone and pool='mean'.")
        w = self.model.net.fc.weight.detach().to("cpu", torch.float64).numpy()
        logits = x @ w.T
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)


def load_inception(target: str = "", *, pretrained: bool = True, seed: int = 0, **kwargs: Any) -> InceptionBackbone:
    """Load ``inception:fid`` (the only variant; ``inception:`` defaults to it).

    Args:
        target: ``"fid"`` (or empty).
        pretrained: load the FID weights (download once); ``False`` gives seeded random weights.
        seed: seed of the random initialisation.

    Example:
        >>> load_inception("fid", pretrained=False).spec.preprocessing.input_size
        (299, 299)
    """
    variant = target or "fid"
    if variant not in VARIANTS:
        raise UnknownNameError("inception variant", variant, VARIANTS,
                               "Use inception:fid (the TensorFlow FID Inception-V3 weights).")
    if kwargs:
        raise BackboneError(f"inception:{variant} takes no options, got {sorted(kwargs)}.")
    trunk = _FIDTrunk(fid_inception_v3(pretrained=pretrained, seed=seed))
    spec = BackboneSpec(
        name=f"inception:{variant}", embed_dim=2048, depth=1, patch_size=(37, 37), num_prefix_tokens=0,
        num_register_tokens=0, has_cls_token=False, preprocessing=FID_PREPROCESSING, pretrained=pretrained,
        extra={"weights_url": FID_WEIGHTS_URL, "num_classes": 1008, "tokens": "Mixed_7c 8x8 at 299x299",
               "mean_pool": "pool3 (FID features)"})
    return InceptionBackbone(trunk, spec)
