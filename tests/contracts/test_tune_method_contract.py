"""The tune-method contract: every method of :data:`vitlab.tuning.methods.METHODS` passes the same checks.

Checks, on a clone of ``demo:fmnist-vit``: applying the method leaves the user's backbone unchanged (weights hash,
nothing trainable, same model object); exactly the parameters the method declares it trains are trainable (its
``lr_scales`` and the rule in ``TRAINS`` below agree with ``requires_grad``); the adapted model keeps the token
contract, before and after ``finalize`` (LoRA merged); the spec string round-trips.

A method needs a ``TRAINS`` rule (which parameter names it trains) and may have a small ``EXAMPLE`` spec: a
registered method without a rule fails :func:`test_every_method_declares_what_it_trains`.
"""

from __future__ import annotations

import pytest
import torch

import vitlab
from vitlab.backbones.base import hash_state_dict
from vitlab.tuning.methods import METHODS, check_dependencies, clone_backbone, parse_methods

EXAMPLE = {"lora": "lora:r=2", "dora": "dora:r=2", "vpt": "vpt:prompts=2"}
TRAINS = {"linear": lambda n: False, "full": lambda n: True, "bitfit": lambda n: n.endswith("bias"),
          "lora": lambda n: "lora_" in n, "dora": lambda n: "lora_" in n, "vpt": lambda n: n == "prompts"}


@pytest.fixture(scope="module")
def demo():
    return vitlab.load_backbone("demo:fmnist-vit")


def _method(name):
    m = parse_methods(EXAMPLE.get(name, name))[0]
    try:
        check_dependencies([m])
    except vitlab.errors.ConfigError as err:  # an optional package (peft) not installed here
        pytest.skip(str(err))
    return m


def test_every_method_declares_what_it_trains():
    missing = sorted(set(METHODS.names()) - set(TRAINS))
    assert not missing, f"tune method(s) {missing} have no TRAINS rule in tests/contracts/test_tune_method_contract.py"


@pytest.mark.parametrize("name", METHODS.names())
def test_applies_to_a_clone_and_trains_what_it_declares(name, demo):
    m = _method(name)
    before, model = hash_state_dict(demo.model), demo.model
    bb = m.apply(clone_backbone(demo), torch.Generator().manual_seed(0))
    assert demo.model is model and hash_state_dict(demo.model) == before
    assert not any(p.requires_grad for p in demo.model.parameters())
    trainable = sorted(n for n, p in bb.model.named_parameters() if p.requires_grad)
    declared = sorted(n for n, _ in bb.model.named_parameters() if TRAINS[name](n))
    assert trainable == declared, f"{name}: trains {trainable[:4]}..., declares {declared[:4]}..."
    assert sorted(m.lr_scales(bb)) == trainable and all(s > 0 for s in m.lr_scales(bb).values())
    assert (len(trainable) > 0) == (name != "linear")


@pytest.mark.parametrize("name", METHODS.names())
def test_the_adapted_and_the_finalized_model_keep_the_token_contract(name, demo):
    m = _method(name)
    bb = m.apply(clone_backbone(demo), torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, *demo.spec.preprocessing.input_size, generator=torch.Generator().manual_seed(1))
    for model in (bb, m.finalize(bb)):
        out = model.forward_tokens(x, [0, -1])
        gh, gw = demo.spec.grid_size
        assert out.tokens[demo.spec.depth - 1].shape == (2, demo.spec.num_prefix_tokens + gh * gw, demo.spec.embed_dim)
    again = parse_methods(m.spec())[0]
    assert type(again) is type(m) and again.config == m.config
