"""Grad-CAM parity with the reference implementation, pytorch-grad-cam (``pip install grad-cam``).

pytorch-grad-cam's ViT recipe: ``GradCAM(model, target_layers=[model.blocks[-1].norm1],
reshape_transform=<drop the class token, tokens -> [B, C, h, w]>)``. Its maps are min-max scaled
(``x - min``, then ``/ (max + 1e-7)``) and resized to the input; here the target size is the patch
grid (``get_target_width_height`` overridden), so the resize is the identity and the maps compare
cell by cell with vitlab's, scaled the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vitlab
from vitlab.inspect.images import ProbeHead, load_raw, normalize
from vitlab.inspect.maps import compute_maps

pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


class _ClsModel(torch.nn.Module):
    """image -> timm ViT tokens (with the final norm) -> class token -> probe head logits."""

    def __init__(self, vit: torch.nn.Module, head: torch.nn.Module) -> None:
        super().__init__()
        self.vit, self.head = vit, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit.forward_features(x)[:, 0])


def _reference(bb, head, x, targets, target_layer: torch.nn.Module) -> np.ndarray:
    grid = bb.token_layout(tuple(x.shape[-2:])).grid

    def reshape(t: torch.Tensor) -> torch.Tensor:  # the tutorial's reshape_transform (drop CLS)
        return t[:, 1:].reshape(t.shape[0], *grid, t.shape[2]).permute(0, 3, 1, 2)

    class AtGrid(GradCAM):
        def get_target_width_height(self, input_tensor):
            return grid[1], grid[0]

    with AtGrid(_ClsModel(bb.model, head), target_layers=[target_layer], reshape_transform=reshape) as cam:
        x = x.detach().clone().requires_grad_(True)  # the backbone's weights are frozen: the graph starts here
        return cam(x, targets=[ClassifierOutputTarget(int(t)) for t in targets])


def _setup():
    bb = vitlab.load_backbone("demo:fmnist-vit")
    src = vitlab.load_source("sample:fashion-mnist")
    x = normalize(bb, load_raw(bb, src, list(range(0, 2000, 250))))  # 8 images, one per 250
    g = np.random.default_rng(0)
    head = ProbeHead(g.normal(size=(10, 96)), g.normal(size=10), np.zeros(96), np.ones(96))
    return bb, x, head


def _scaled(m: torch.Tensor) -> np.ndarray:
    m = m.numpy().astype(np.float64)
    m = m - m.min(axis=(1, 2), keepdims=True)
    return m / (1e-7 + m.max(axis=(1, 2), keepdims=True))


@pytest.mark.parametrize("layer", [-1, -3])
def test_gradcam_matches_pytorch_grad_cam_on_the_demo_model(layer):
    bb, x, head = _setup()
    ours = compute_maps(bb, x, ["gradcam"], head=head, layer=layer)
    ref = _reference(bb, head, x, ours["target"], bb.model.blocks[layer].norm1)
    got = _scaled(ours["gradcam"])
    assert ref.shape == got.shape == (8, 7, 7)
    assert (ref.max(axis=(1, 2)) > 0.99).all()  # no blank map: the comparison is not vacuous
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_the_tokens_entering_the_block_are_another_map():
    """The defect fixed: the tokens *entering* blocks[-1] (pytorch-grad-cam at blocks[-2], the previous
    block's output) give a clearly different map, so the parity test above tells the recipes apart."""
    bb, x, head = _setup()
    target = compute_maps(bb, x, ["gradcam"], head=head)["target"]
    ref = _reference(bb, head, x, target, bb.model.blocks[-1].norm1)
    entering = _reference(bb, head, x, target, bb.model.blocks[-2])
    assert np.abs(entering - ref).max() > 0.1
