"""Simulated post-training quantisation (W8A8 / W6A6 / W4A4), RepQ-ViT style.

Fake-quantised (quantise → dequantise in float) so accuracy can be measured on
any device; it does not make inference faster (use ``int8`` for that).

What is quantised, per transformer block (patch embedding and final norm stay FP32):

* every ``nn.Linear`` weight: per output channel, clipping range searched by MSE;
* every ``nn.Linear`` input: per tensor. Inputs that come from a LayerNorm
  (qkv / q,k,v and fc1) are first quantised per channel and then turned into a
  per-tensor quantiser by RepQ-ViT's scale reparameterisation, folded into the
  LayerNorm affine and the next linear (:func:`~vitlab.accel.quantizers.layernorm_reparam`);
* ``q``, ``k``, ``v``: per tensor; post-softmax attention: log-sqrt2 (or log2) quantiser.

Calibration runs the FP32 copy on a small image set (default 32): exact
per-channel ranges for LayerNorm outputs, min/max and a random value sample for
every other quantiser. Per-tensor activation ranges are either the full range
(``minmax``) or the MSE-optimal clipped range (``mse``); with ``act_calib=auto``
the one whose final-layer tokens are closest (cosine) to the FP32 tokens on the
calibration set wins, so the objective is on features, never on logits.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from vitlab.accel.base import Accelerator, accel_names
from vitlab.accel.compare import calibration_images, features, tensor_digest
from vitlab.accel.quantizers import (check_bits, fake_quant, layernorm_reparam, log2_quant, minmax_params,
                                     quantize_weight, search_act_params)
from vitlab.accel.runner import ReducedBackbone, sdpa_kernel
from vitlab.backbones.base import Backbone, hash_state_dict
from vitlab.errors import ConfigError

ACT_CALIB = ("auto", "mse", "minmax")
LOG_BASES = ("sqrt2", "2")
_METHODS = ("mse", "minmax")


class QuantLinear(nn.Module):
    """``y = W_hat · fq(x) + b``: fake-quantised per-channel weight, per-tensor input quantiser."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, in_scale: torch.Tensor,
                 in_zero: torch.Tensor, bits: int) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("in_scale", in_scale.detach().clone().reshape(()))
        self.register_buffer("in_zero", in_zero.detach().clone().reshape(()))
        self.bits = bits

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(fake_quant(x, self.in_scale, self.in_zero, self.bits), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, a_bits={self.bits}"


class AttnQuant(nn.Module):
    """Attention with fake-quantised ``q``, ``k``, ``v`` (per tensor) and log-quantised softmax output."""

    def __init__(self, bits: int, attn_bits: int, sqrt2: bool) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(3))
        self.register_buffer("zero", torch.zeros(3))
        self.bits, self.attn_bits, self.sqrt2 = bits, attn_bits, sqrt2

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        q, k, v = (fake_quant(t, self.scale[j], self.zero[j], self.bits) for j, t in enumerate((q, k, v)))
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        if bias is not None:
            attn = attn + bias
        return log2_quant(attn.softmax(dim=-1), self.attn_bits, self.sqrt2) @ v


class PTQKernel(nn.Module):
    """Per-block :class:`AttnQuant` modules behind the runner's kernel signature ``(i, q, k, v, bias)``."""

    def __init__(self, blocks: list[AttnQuant]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        return self.blocks[i](q, k, v, bias)


class _Stat:
    """Running min/max (per tensor and optionally per channel) and a bounded random value sample."""

    def __init__(self, per_batch: int, gen: torch.Generator) -> None:
        self.lo, self.hi = float("inf"), float("-inf")
        self.ch_lo: torch.Tensor | None = None
        self.ch_hi: torch.Tensor | None = None
        self.samples: list[torch.Tensor] = []
        self.per_batch, self.gen = per_batch, gen

    def update(self, t: torch.Tensor, per_channel: bool = False) -> None:
        t = t.detach().float()
        self.lo, self.hi = min(self.lo, float(t.min())), max(self.hi, float(t.max()))
        if per_channel:
            flat = t.reshape(-1, t.shape[-1])
            lo, hi = flat.amin(0).cpu(), flat.amax(0).cpu()
            self.ch_lo = lo if self.ch_lo is None else torch.minimum(self.ch_lo, lo)
            self.ch_hi = hi if self.ch_hi is None else torch.maximum(self.ch_hi, hi)
        flat = t.reshape(-1).cpu()
        m = min(self.per_batch, flat.numel())
        self.samples.append(flat[torch.randint(flat.numel(), (m,), generator=self.gen)])

    @property
    def sample(self) -> torch.Tensor:
        return torch.cat(self.samples)


def _collect(runner: ReducedBackbone, x: torch.Tensor, batch_size: int, per_batch: int, seed: int
             ) -> tuple[dict[Any, _Stat], dict[tuple[int, str], list[str]]]:
    """Run the FP model on ``x``; return quantiser statistics and, per block, the linears fed by norm1/norm2."""
    gen = torch.Generator().manual_seed(seed)
    stats: dict[Any, _Stat] = {}
    consumers: dict[tuple[int, str], list[str]] = {}
    last: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    ops = runner.ops

    def stat(key: Any) -> _Stat:
        return stats.setdefault(key, _Stat(per_batch, gen))

    for i, blk in enumerate(ops.blocks(runner.model)):
        for nk, norm in (("norm1", ops.norm1(blk)), ("norm2", ops.norm2(blk))):
            def norm_hook(mod, args, out, key=(i, nk)):
                last[key] = out
                stat(key).update(out, per_channel=True)
            hooks.append(norm.register_forward_hook(norm_hook))
        for name, lin in blk.named_modules():
            if isinstance(lin, nn.Linear):
                def lin_hook(mod, args, key=(i, name)):
                    inp = args[0]
                    for nk in ("norm1", "norm2"):
                        src = last.get((key[0], nk))
                        if src is not None and inp is src and key[1] not in consumers.setdefault((key[0], nk), []):
                            consumers[(key[0], nk)].append(key[1])
                    stat(key).update(inp)
                hooks.append(lin.register_forward_pre_hook(lin_hook))

    def recording_kernel(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None):
        for name, t in (("q", q), ("k", k), ("v", v)):
            stat((i, name)).update(t)
        return sdpa_kernel(i, q, k, v, bias)

    runner.kernel = recording_kernel
    try:
        with torch.no_grad():
            for s in range(0, x.shape[0], batch_size):
                runner.forward_tokens(x[s:s + batch_size].to(runner.device), -1)
                last.clear()
    finally:
        runner.kernel = None
        for h in hooks:
            h.remove()
    return stats, consumers


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


@dataclass(frozen=True)
class PTQ(Accelerator):
    """Simulated RepQ-ViT-style post-training quantisation.

    Args:
        w_bits: weight bits (per output channel).
        a_bits: activation bits (per tensor; LayerNorm outputs per channel via reparameterisation).
        attn_bits: post-softmax bits (default ``a_bits``).
        log_base: post-softmax quantiser base, ``sqrt2`` (RepQ-ViT) or ``2``.
        act_calib: ``auto`` (pick ``mse`` or ``minmax`` by feature cosine), ``mse`` or ``minmax``.
        reparam: LayerNorm scale reparameterisation (per-channel → per-tensor); off = plain per-tensor.
        n_calib: calibration images used.
        seed: seed for drawing calibration images from a DataSource and for value sampling.

    Example:
        >>> PTQ(w_bits=4, a_bits=4).to_dict()["a_bits"]
        4
    """

    name: ClassVar[str] = "ptq"
    needs_calibration: ClassVar[bool] = True
    w_bits: int = 8
    a_bits: int = 8
    attn_bits: int | None = None
    log_base: str = "sqrt2"
    act_calib: str = "auto"
    reparam: bool = True
    n_calib: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        check_bits(self.w_bits, "ptq: w_bits")
        check_bits(self.a_bits, "ptq: a_bits")
        if self.attn_bits is not None:
            check_bits(self.attn_bits, "ptq: attn_bits")
        if str(self.log_base) not in LOG_BASES:
            raise ConfigError(f"ptq: log_base={self.log_base!r}; choose one of {', '.join(LOG_BASES)}.")
        object.__setattr__(self, "log_base", str(self.log_base))
        if self.act_calib not in ACT_CALIB:
            raise ConfigError(f"ptq: act_calib={self.act_calib!r}; choose one of {', '.join(ACT_CALIB)}.")
        if not isinstance(self.reparam, bool):
            raise ConfigError(f"ptq: reparam must be true or false, got {self.reparam!r}.")
        if isinstance(self.n_calib, bool) or not isinstance(self.n_calib, int) or self.n_calib < 1:
            raise ConfigError(f"ptq: n_calib={self.n_calib!r} must be a positive integer, e.g. 32.")

    def supports(self, backbone: Backbone) -> str | None:
        ops, reason = backbone.block_ops()
        if reason:
            return reason
        done = accel_names(backbone.accel)
        if any(n in ("int8", "ptq") for n in done) or (isinstance(backbone, ReducedBackbone) and backbone.kernel):
            return f"it is already quantised ({'+'.join(done)})."
        return None

    def _build(self, backbone: Backbone, calib: Any) -> tuple[Backbone, dict[str, Any]]:
        x = calibration_images(calib, backbone, self.n_calib, self.seed)
        ops, _ = backbone.block_ops()
        runner = ReducedBackbone(copy.deepcopy(backbone.model), backbone.spec, ops=ops,
                                 reducer=getattr(backbone, "reducer", None))
        ref = features(runner, x, pool="tokens")
        n_batches = -(-len(x) // 8)
        stats, consumers = _collect(runner, x, batch_size=8, per_batch=2 ** 16 // n_batches, seed=self.seed)
        kernel, candidates = self._convert(runner, stats, consumers)
        runner.kernel = kernel.to(runner.device)
        methods = _METHODS if self.act_calib == "auto" else (self.act_calib,)
        scores = {}
        for m in methods:
            _activate(candidates, m)
            scores[m] = float(nn.functional.cosine_similarity(features(runner, x, pool="tokens"), ref, dim=-1).mean())
        chosen = max(scores, key=scores.get)
        _activate(candidates, chosen)
        runner.__dict__["weights_id"] = hash_state_dict(nn.ModuleDict({"model": runner.model, "kernel": kernel}))
        runner.calibration = {"token_cosine": scores, "act_calib": chosen, "n_images": int(x.shape[0])}
        return runner, {"act_calib_used": chosen, "calib": {"n": int(x.shape[0]), "digest": tensor_digest(x)}}

    def _convert(self, runner: ReducedBackbone, stats: dict[Any, _Stat], consumers: dict[tuple[int, str], list[str]]
                 ) -> tuple[PTQKernel, list[tuple[torch.Tensor, torch.Tensor, dict[str, tuple]]]]:
        """Reparameterise LayerNorms, swap in :class:`QuantLinear`, build the attention quantisers (in place)."""
        ab, ops = self.a_bits, runner.ops
        candidates: list[tuple[torch.Tensor, torch.Tensor, dict[str, tuple]]] = []  # (scale buf, zero buf, per method)
        attn = []
        with torch.no_grad():
            for i, blk in enumerate(ops.blocks(runner.model)):
                fixed: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
                for nk, norm in (("norm1", ops.norm1(blk)), ("norm2", ops.norm2(blk))):
                    names = consumers.get((i, nk), [])
                    if self.reparam and names and isinstance(norm, nn.LayerNorm) and norm.bias is not None \
                            and norm.weight is not None:
                        st = stats[(i, nk)]
                        s, z = minmax_params(st.ch_lo, st.ch_hi, ab)
                        lins = [blk.get_submodule(n) for n in names]
                        dev = norm.weight.device
                        g2, b2, ws, bs, s_t, z_t = layernorm_reparam(
                            norm.weight.float(), norm.bias.float(), s.to(dev), z.to(dev), [lin.weight.float() for lin in lins],
                            [None if lin.bias is None else lin.bias.float() for lin in lins])
                        norm.weight.copy_(g2)
                        norm.bias.copy_(b2)
                        for n, lin, w, b in zip(names, lins, ws, bs):
                            lin.weight.copy_(w)
                            if lin.bias is None:
                                lin.bias = nn.Parameter(b.to(lin.weight.dtype), requires_grad=False)
                            else:
                                lin.bias.copy_(b)
                            fixed[n] = (s_t, z_t)
                for name, lin in list(blk.named_modules()):
                    if not isinstance(lin, nn.Linear) or (i, name) not in stats:
                        continue
                    st = stats[(i, name)]
                    per = ({m: fixed[name] for m in _METHODS} if name in fixed else
                           {m: search_act_params(st.sample, ab, st.lo, st.hi, m) for m in _METHODS})
                    ql = QuantLinear(quantize_weight(lin.weight, self.w_bits), lin.bias, *per["mse"], ab)
                    _set_module(blk, name, ql.to(lin.weight.device))
                    candidates.append((ql.in_scale, ql.in_zero, per))
                aq = AttnQuant(ab, self.attn_bits or ab, self.log_base == "sqrt2").to(runner.device)
                for j, nm in enumerate(("q", "k", "v")):
                    st = stats[(i, nm)]
                    per = {m: search_act_params(st.sample, ab, st.lo, st.hi, m) for m in _METHODS}
                    candidates.append((aq.scale[j:j + 1], aq.zero[j:j + 1], per))
                attn.append(aq)
        return PTQKernel(attn), candidates


def _activate(candidates: list[tuple[torch.Tensor, torch.Tensor, dict[str, tuple]]], method: str) -> None:
    """Load the ``method`` activation ranges into every quantiser's buffers."""
    with torch.no_grad():
        for scale, zero, per in candidates:
            s, z = per[method]
            scale.copy_(s.reshape(scale.shape))
            zero.copy_(z.reshape(zero.shape))


def w8a8(params: dict[str, str]) -> PTQ:
    """``w8a8`` = ``ptq:w_bits=8,a_bits=8`` (other ptq parameters may follow)."""
    return PTQ.from_params({"w_bits": "8", "a_bits": "8", **params})


def w6a6(params: dict[str, str]) -> PTQ:
    """``w6a6`` = ``ptq:w_bits=6,a_bits=6``."""
    return PTQ.from_params({"w_bits": "6", "a_bits": "6", **params})


def w4a4(params: dict[str, str]) -> PTQ:
    """``w4a4`` = ``ptq:w_bits=4,a_bits=4``."""
    return PTQ.from_params({"w_bits": "4", "a_bits": "4", **params})


__all__ = ["PTQ", "QuantLinear", "AttnQuant", "PTQKernel", "w8a8", "w6a6", "w4a4"]
