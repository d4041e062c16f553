"""One contract suite over every backbone source kind of :data:`vitlab.backbones.SOURCES` (seeded random-init
small configs, the demo, ``inception:fid`` with random weights, ``random:``, a ``tuned:`` artefact).

Each source is built by a factory in ``tests/conftest.py`` (``BACKBONE_FACTORIES``, keyed ``<source>[-variant]``);
:func:`test_every_registered_source_has_a_factory` fails when a source is registered without one, so a new source
cannot go untested. Accelerated copies have their own suite (``test_accelerator_contract.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import vitlab
from tests.conftest import BACKBONE_FACTORIES
from vitlab.backbones import SOURCES
from vitlab.backbones.hf import HFBackbone
from vitlab.backbones.inception import InceptionBackbone
from vitlab.backbones.open_clip import OpenCLIPBackbone
from vitlab.backbones.pixels import PixelsBackbone
from vitlab.backbones.timm import TimmBackbone
from vitlab.errors import ConfigError


def _input(bb, n=2, seed=0):
    h, w = bb.spec.preprocessing.input_size
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _reference_last(bb, x):
    """The model's own notion of its final output, computed by the library, not by vitlab."""
    m = bb.model
    if isinstance(bb, PixelsBackbone):
        return "tokens", x.reshape(x.shape[0], 1, -1)
    with torch.inference_mode():
        if isinstance(bb, InceptionBackbone):  # torchvision's own Inception-V3 forward, pool3 taken at avgpool
            pool3 = []
            hook = m.net.avgpool.register_forward_hook(lambda mod, i, o: pool3.append(o.flatten(1)))
            try:
                m.net(x)
            finally:
                hook.remove()
            return "mean", pool3[0]
        if isinstance(bb, TimmBackbone):
            return "tokens", m.forward_features(x)
        if isinstance(bb, OpenCLIPBackbone):
            return "cls_proj", m(x)
        if isinstance(bb, HFBackbone):
            mt = bb.spec.extra["model_type"]
            if mt.startswith("clip"):
                return "cls", m(pixel_values=x).pooler_output
            kw = {}
            if mt == "vit_mae":
                n = bb.spec.grid_size[0] * bb.spec.grid_size[1]
                kw["noise"] = torch.arange(n, dtype=torch.float32).expand(x.shape[0], n)
            return "tokens", m(pixel_values=x, **kw).last_hidden_state
    raise AssertionError(type(bb))


def test_every_registered_source_has_a_factory():
    covered = {key.split("-")[0] for key in BACKBONE_FACTORIES}
    missing = sorted(set(SOURCES.names()) - covered)
    assert not missing, (f"backbone source(s) {missing} have no factory in tests/conftest.py BACKBONE_FACTORIES: "
                         "add one (offline, tiny, seeded) so the contract suite covers them")


def test_spec_is_consistent_with_tokens(any_backbone):
    bb = any_backbone
    x = _input(bb)
    out = bb.forward_tokens(x, [-1])
    t = out.tokens[bb.spec.depth - 1]
    gh, gw = bb.spec.grid_size
    assert t.shape == (2, bb.spec.num_prefix_tokens + gh * gw, bb.spec.embed_dim)
    assert out.patch_tokens(bb.spec.depth - 1).shape == (2, gh * gw, bb.spec.embed_dim)
    assert out.patch_map(bb.spec.depth - 1).shape == (2, bb.spec.embed_dim, gh, gw)
    assert bb.spec.num_register_tokens <= bb.spec.num_prefix_tokens
    assert bb.spec.num_prefix_tokens == int(bb.spec.has_cls_token) + bb.spec.num_register_tokens


def test_last_layer_matches_the_libraries_own_output(any_backbone):
    bb = any_backbone
    x = _input(bb)
    what, ref = _reference_last(bb, x)
    with torch.inference_mode():
        tokens = bb.forward_tokens(x, -1).tokens[bb.spec.depth - 1]
    if what == "tokens":
        torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-4)
    elif what == "cls":
        torch.testing.assert_close(tokens[:, 0], ref, atol=1e-5, rtol=1e-4)
    elif what == "mean":  # no class token: the library's pooled features are the mean of the tokens
        torch.testing.assert_close(tokens.mean(1), ref, atol=1e-5, rtol=1e-4)
    else:  # open_clip: pooled CLS projected
        torch.testing.assert_close(tokens[:, 0] @ bb.model.proj, ref, atol=1e-5, rtol=1e-4)


def test_many_layers_from_one_forward_pass(any_backbone):
    bb = any_backbone
    if bb.spec.depth < 2:
        pytest.skip(f"{bb.name} has a single layer")
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in bb.model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            out = bb.forward_tokens(_input(bb), [0, -1, 1])
    finally:
        for h in hooks:
            h.remove()
    assert len(calls) == 1, "patch embedding ran more than once: layers were not taken from one pass"
    assert sorted(out.tokens) == [0, 1, bb.spec.depth - 1]
    assert not torch.allclose(out.tokens[0], out.tokens[bb.spec.depth - 1])


def test_pooling_matches_manual_computation(any_backbone):
    bb = any_backbone
    with torch.inference_mode():
        out = bb.forward_tokens(_input(bb), -1)
    layer = bb.spec.depth - 1
    t = out.tokens[layer].numpy().astype(np.float64)
    p = bb.spec.num_prefix_tokens
    manual_mean = t[:, p:, :].sum(axis=1) / (t.shape[1] - p)
    np.testing.assert_allclose(out.pooled(layer, "mean").numpy(), manual_mean, rtol=1e-5, atol=1e-6)
    if bb.spec.has_cls_token:
        np.testing.assert_allclose(out.pooled(layer, "cls").numpy(), t[:, 0], rtol=1e-6)
        both = out.pooled(layer, "cls+mean").numpy()
        assert both.shape == (2, 2 * bb.spec.embed_dim)
        np.testing.assert_allclose(both[:, bb.spec.embed_dim:], manual_mean, rtol=1e-5, atol=1e-6)
    else:
        with pytest.raises(ConfigError, match="needs a class token.*--pool mean"):
            out.pooled(layer, "cls")


def test_batch_independence(any_backbone):
    bb = any_backbone
    x = _input(bb, n=3)
    with torch.inference_mode():
        full = bb.forward_tokens(x, -1).tokens[bb.spec.depth - 1]
        one = bb.forward_tokens(x[1:2], -1).tokens[bb.spec.depth - 1]
    torch.testing.assert_close(full[1:2], one, atol=1e-4, rtol=1e-4)


def test_frozen_and_in_eval_mode(any_backbone):
    bb = any_backbone
    assert not bb.model.training
    assert not any(p.requires_grad for p in bb.model.parameters())


def test_layer_out_of_range_is_a_clear_error(any_backbone):
    bb = any_backbone
    with pytest.raises(ConfigError, match=rf"layer {bb.spec.depth} is out of range .* has {bb.spec.depth} blocks"):
        bb.forward_tokens(_input(bb), [bb.spec.depth])
    with pytest.raises(ConfigError, match=r"expected images as a float tensor \[B, 3, H, W\]"):
        bb.forward_tokens(torch.zeros(2, 1, 28, 28))


def test_preprocessing_transform_gives_the_input_size(any_backbone):
    from PIL import Image

    bb = any_backbone
    x = bb.spec.preprocessing.build_transform()(Image.new("RGB", (50, 37), (120, 30, 200)))
    assert tuple(x.shape) == (3, *bb.spec.preprocessing.input_size)


def test_weights_id_is_stable_and_tracks_weights(tiny_backbone):
    again = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                 embed_dim=32, depth=3, num_heads=2)
    assert again.weights_id == tiny_backbone.weights_id
    other_seed = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, seed=1, img_size=32,
                                      patch_size=8, embed_dim=32, depth=3, num_heads=2)
    assert other_seed.weights_id != tiny_backbone.weights_id
    with torch.no_grad():
        next(again.model.parameters()).add_(1e-3)
    assert vitlab.backbones.base.hash_state_dict(again.model) != tiny_backbone.weights_id
    assert again.weights_id != tiny_backbone.weights_id  # the id itself follows the in-place change


def test_weights_id_follows_in_place_changes(any_backbone):
    """Every source kind: an in-place write through ``.data`` (no version bump) gives a new id; undoing it
    exactly gives the old one back (the id is a content hash, so the cache entry is found again)."""
    p = next((q for q in any_backbone.model.parameters() if q.is_floating_point() and q.count_nonzero()), None)
    if p is None:
        pytest.skip(f"{any_backbone.name} has no weights")
    wid = any_backbone.weights_id
    p.data.mul_(2.0)
    try:
        assert any_backbone.weights_id != wid
    finally:
        p.data.div_(2.0)
    assert any_backbone.weights_id == wid


def test_registers_and_layerscale_are_known():
    bb = vitlab.load_backbone("timm:vit_small_patch14_reg4_dinov2.lvd142m", pretrained=False, img_size=28,
                              embed_dim=32, depth=2, num_heads=2)
    assert (bb.spec.num_prefix_tokens, bb.spec.num_register_tokens, bb.spec.has_cls_token) == (5, 4, True)
    assert bb.spec.preprocessing.interpolation == "bicubic"
