"""The accelerator contract: every member of :data:`vitlab.accel.ACCELERATORS` passes the same checks.

Checks, on a tiny seeded timm ViT: the user's backbone is unchanged (weights hash, ``accel``, fingerprint);
the copy is a new, frozen object in eval mode whose cache key (:meth:`Backbone.fingerprint`) differs from the
source's (``none`` is the baseline: same key); the copy keeps the token contract (shapes, every requested layer);
identity at zero strength where the accelerator has one (``tome:r=0``, ``evit:keep=1``).

Each member needs an example spec in ``EXAMPLE`` and an entry in ``ZERO`` (its zero-strength spec, or ``None`` when
it has none): a registered accelerator missing from either fails :func:`test_every_accelerator_has_an_example`.
"""

from __future__ import annotations

import json

import pytest
import torch

import vitlab
from vitlab.accel import ACCELERATORS, apply_accel
from vitlab.backbones.base import hash_state_dict

EXAMPLE = {"none": "none", "tome": "tome:r=2", "evit": "evit:keep=0.5", "int8": "int8",
           "ptq": "ptq:w_bits=8,a_bits=8,n_calib=4", "w8a8": "w8a8,n_calib=4", "w6a6": "w6a6,n_calib=4",
           "w4a4": "w4a4,n_calib=4"}
ZERO = {"none": "none", "tome": "tome:r=0", "evit": "evit:keep=1.0", "int8": None, "ptq": None, "w8a8": None,
        "w6a6": None, "w4a4": None}
NAMES = ACCELERATORS.names()


def _backbone():
    return vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                embed_dim=32, depth=3, num_heads=2)


def _x(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


CALIB = _x(4, seed=9)


@pytest.fixture(scope="module")
def base():
    return _backbone()


def test_every_accelerator_has_an_example():
    missing = sorted(set(NAMES) - set(EXAMPLE)) + sorted(f"{n} (ZERO)" for n in set(NAMES) - set(ZERO))
    assert not missing, (f"accelerator(s) {missing} have no example spec: add them to EXAMPLE and ZERO (None when "
                         "there is no zero strength) in tests/contracts/test_accelerator_contract.py")


@pytest.mark.parametrize("name", NAMES)
def test_the_users_model_is_unchanged_and_the_copy_is_new_and_frozen(name, base):
    weights, fp, accel = hash_state_dict(base.model), json.dumps(base.fingerprint(), sort_keys=True), base.accel
    fast = apply_accel(base, EXAMPLE[name], calib=CALIB)
    fast.forward_tokens(_x(), -1)
    assert hash_state_dict(base.model) == weights and base.accel == accel
    assert json.dumps(base.fingerprint(), sort_keys=True) == fp
    assert fast is not base and fast.model is not base.model
    assert not fast.model.training and not any(p.requires_grad for p in fast.model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_the_cache_key_differs_from_the_sources(name, base):
    fast = apply_accel(base, EXAMPLE[name], calib=CALIB)
    if name == "none":
        assert fast.fingerprint() == base.fingerprint()  # the baseline shares the source's embeddings
    else:
        assert fast.fingerprint() != base.fingerprint() and fast.accel and fast.accel["name"] in (name, "ptq")
        assert json.loads(json.dumps(fast.accel)) == fast.accel  # the key is JSON


@pytest.mark.parametrize("name", NAMES)
def test_the_copy_keeps_the_token_contract(name, base):
    fast = apply_accel(base, EXAMPLE[name], calib=CALIB)
    gh, gw = fast.spec.grid_size
    out = fast.forward_tokens(_x(), [0, -1])
    assert sorted(out.tokens) == [0, fast.spec.depth - 1]
    for t in out.tokens.values():
        assert t.shape == (2, fast.spec.num_prefix_tokens + gh * gw, fast.spec.embed_dim)
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("name", [n for n in NAMES if ZERO.get(n)])
def test_zero_strength_is_the_identity(name, base):
    x = _x()
    ref = base.forward_tokens(x, [0, 1, 2]).tokens
    out = apply_accel(base, ZERO[name], calib=CALIB).forward_tokens(x, [0, 1, 2]).tokens
    for layer in ref:
        torch.testing.assert_close(out[layer], ref[layer], atol=1e-5, rtol=1e-4)
