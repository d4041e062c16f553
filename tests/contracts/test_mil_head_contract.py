"""The MIL-head contract: every head of :data:`vitlab.mil.heads.HEADS` passes the same checks, so a head added to
the registry is tested without anyone editing this file.

Checks: one bag ``[n, d]`` of any size (1, 2, 17 instances) gives finite logits ``[C]``; attention is ``None`` or
``[n]`` non-negative weights summing to 1; eval mode is deterministic and leaves the bag unchanged; a training step
with a label gives a finite loss (with the head's auxiliary loss, if any) whose gradient reaches the head's
parameters; malformed bags and unknown parameters are refused with one clear line.
"""

from __future__ import annotations

import pytest
import torch

from vitlab.errors import ConfigError, DataError
from vitlab.mil.heads import HEADS, MILOutput, build_head

D, C = 8, 3


def _bag(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=HEADS.names())
def head(request):
    torch.manual_seed(0)
    return build_head(request.param, D, C).eval()


@pytest.mark.parametrize("n", [1, 2, 17])
def test_any_bag_size_gives_logits_and_attention(head, n):
    with torch.no_grad():
        out = head(_bag(n))
    assert isinstance(out, MILOutput) and out.logits.shape == (C,) and torch.isfinite(out.logits).all()
    if out.attention is not None:
        assert out.attention.shape == (n,) and (out.attention >= 0).all()
        torch.testing.assert_close(out.attention.sum(), torch.tensor(1.0), atol=1e-5, rtol=0)


def test_eval_is_deterministic_and_the_bag_is_not_changed(head):
    h = _bag(9)
    before = h.clone()
    with torch.no_grad():
        a, b = head(h).logits, head(h).logits
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert torch.equal(h, before)


def test_a_training_step_reaches_the_parameters(head):
    head.train()
    out = head(_bag(6), y=1)
    loss = torch.nn.functional.cross_entropy(out.logits[None], torch.tensor([1]))
    if out.aux_loss is not None:
        assert out.aux_loss.ndim == 0 and torch.isfinite(out.aux_loss) and 0 <= out.aux_weight <= 1
        loss = (1 - out.aux_weight) * loss + out.aux_weight * out.aux_loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)


def test_bad_bags_and_parameters_are_refused_with_one_line(head, request):
    name = request.node.callspec.params["head"]
    with pytest.raises(DataError, match=r"a bag must be a 2-D \[n, d\] array"):
        head(torch.zeros(D))
    with pytest.raises(DataError, match="a bag has 0 instances"):
        head(torch.zeros(0, D))
    with pytest.raises(DataError, match=f"a bag has {D + 1} features per instance but the head expects {D}"):
        head(torch.zeros(3, D + 1))
    with pytest.raises(ConfigError, match=f"MIL head '{name}': unknown parameter 'bogus'"):
        build_head(name, D, C, bogus=1)
