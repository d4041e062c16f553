"""Accelerator contract: spec parsing, registry errors, chaining, cache-key identity, no mutation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import vitlab
from vitlab.accel import ACCELERATORS, Chain, NoAccel, apply_accel, parse_accel
from vitlab.accel.base import chain_accel, parse_value
from vitlab.accel.evit import EViT
from vitlab.accel.ptq import PTQ
from vitlab.accel.quant import Int8
from vitlab.accel.tome import ToMe
from vitlab.errors import ConfigError, UnknownNameError


def test_parse_sweep_and_parameters():
    accs = parse_accel("none,tome:r=8,evit:keep=0.7,int8,w8a8")
    assert [type(a) for a in accs] == [NoAccel, ToMe, EViT, Int8, PTQ]
    assert accs[1] == ToMe(r=8) and accs[2] == EViT(keep=0.7) and accs[4] == PTQ(w_bits=8, a_bits=8)
    (t,) = parse_accel("tome:r=13,schedule=decrease,prop_attn=false")
    assert t == ToMe(r=13, schedule="decrease", prop_attn=False)
    (t,) = parse_accel(" tome:r=[8, 8,4] ")
    assert t.r == (8, 8, 4)
    (e,) = parse_accel("evit:keep=0.5,layers=[2,5],fuse=sum")
    assert e == EViT(keep=0.5, layers=(2, 5), fuse="sum")
    assert parse_accel("w4a4,n_calib=8")[0] == PTQ(w_bits=4, a_bits=4, n_calib=8)
    (c,) = parse_accel("tome:r=2+int8")
    assert isinstance(c, Chain) and [type(s) for s in c.steps] == [ToMe, Int8]
    assert parse_value("1e-3") == 0.001 and parse_value("true") is True and parse_value("[]") == []


def test_parse_errors():
    with pytest.raises(UnknownNameError, match="unknown accelerator 'tomme'. Did you mean: tome"):
        parse_accel("tomme:r=8")
    with pytest.raises(ConfigError, match=r"accelerator 'tome' has no parameter 'k'; its parameters are: r, schedule"):
        parse_accel("tome:k=8")
    with pytest.raises(ConfigError, match="comes before any accelerator name"):
        parse_accel("r=8")
    with pytest.raises(ConfigError, match=r"unbalanced '\['"):
        parse_accel("tome:r=[8,8")
    with pytest.raises(ConfigError, match="empty accelerator spec"):
        parse_accel("  ")
    with pytest.raises(ConfigError, match="empty item"):
        parse_accel("tome:r=8,,int8")
    with pytest.raises(ConfigError, match="apply_accel takes one accelerator, got 2"):
        apply_accel(None, "tome:r=1,int8")  # type: ignore[arg-type]


def test_every_registered_accelerator_has_a_json_config():
    for entry in ACCELERATORS:
        (acc,) = parse_accel(entry.name)
        d = acc.to_dict()
        assert json.loads(json.dumps(d)) == d and d["name"] in ("none", entry.name, "ptq")


def test_chain_accel_dict():
    assert chain_accel(None, {"name": "tome"}) == {"name": "tome"}
    two = chain_accel({"name": "tome"}, {"name": "int8"})
    assert chain_accel(two, {"name": "x"})["steps"] == [{"name": "tome"}, {"name": "int8"}, {"name": "x"}]


def test_none_is_an_unchanged_copy_and_keys_match(tiny_backbone):
    x = torch.randn(2, 3, 32, 32)
    base = apply_accel(tiny_backbone, "none")
    assert base is not tiny_backbone and base.model is not tiny_backbone.model
    assert base.fingerprint() == tiny_backbone.fingerprint()
    torch.testing.assert_close(base.forward_tokens(x, -1).tokens[2], tiny_backbone.forward_tokens(x, -1).tokens[2])


def test_chain_applies_in_order_and_keys_differ(tiny_backbone):
    x = torch.randn(2, 3, 32, 32)
    both = apply_accel(tiny_backbone, "tome:r=2+int8")
    assert both.accel["name"] == "chain" and [s["name"] for s in both.accel["steps"]] == ["tome", "int8"]
    assert both.forward_tokens(x, -1).tokens[2].shape == (2, 17, 32)
    keys = {json.dumps(apply_accel(tiny_backbone, a).fingerprint(), sort_keys=True)
            for a in ("none", "tome:r=2", "tome:r=3", "tome:r=2,prop_attn=false", "evit:keep=0.5", "int8")}
    assert len(keys) == 6
    with pytest.raises(vitlab.errors.BackboneError, match=r"already accelerated by tome\+int8; apply token merging"):
        apply_accel(both, "tome:r=1")
    with pytest.raises(vitlab.errors.BackboneError, match=r"already quantised \(int8\); apply token merging before"):
        apply_accel(apply_accel(tiny_backbone, "int8"), "tome:r=1")


def test_accelerators_are_frozen_and_validated():
    t = ToMe(r=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.r = 5  # type: ignore[misc]
    with pytest.raises(ConfigError, match="int8: weight_only must be true or false"):
        Int8(weight_only="yes")  # type: ignore[arg-type]
