"""Pure quantiser math for simulated post-training quantisation (fake quantisation).

Conventions: asymmetric uniform quantisation to unsigned codes ``0..2^b - 1``,
``q = clamp(round(x / s) + z, 0, 2^b - 1)``, ``x_hat = (q - z) * s`` with an
integer zero point ``z``. Weights are quantised per output channel, activations
per tensor, post-softmax attention with a log2 (or log-sqrt2) quantiser, as in
RepQ-ViT (Li et al., ICCV 2023).
"""

from __future__ import annotations

import torch

from vitlab.errors import ConfigError

SHRINK_GRID = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)
TAIL_GRID = (0.0, 1e-4, 1e-3, 1e-2)


def check_bits(bits: int, what: str = "bits") -> int:
    """Validate a bit width (2..16)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ConfigError(f"{what}={bits!r} must be an integer from 2 to 16, e.g. 8.")
    return bits


def minmax_params(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point covering ``[min(lo, 0), max(hi, 0)]`` (any broadcastable shape).

    Example:
        >>> s, z = minmax_params(torch.tensor(-1.0), torch.tensor(3.0), 2)
        >>> round(s.item(), 4), z.item()
        (1.3333, 1.0)
    """
    qmax = 2 ** bits - 1
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    scale = ((hi - lo) / qmax).clamp_min(1e-8)
    zero = (-lo / scale).round().clamp(0, qmax)
    return scale, zero


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise then dequantise ``x`` (scale/zero broadcast against ``x``).

    Example:
        >>> fake_quant(torch.tensor([0.1, 0.9, 5.0]), torch.tensor(0.5), torch.tensor(0.0), 2)
        tensor([0.0000, 1.0000, 1.5000])
    """
    q = (torch.round(x / scale) + zero).clamp(0, 2 ** bits - 1)
    return (q - zero) * scale


def quantize_weight(w: torch.Tensor, bits: int, grid: tuple[float, ...] = SHRINK_GRID) -> torch.Tensor:
    """Per-output-channel fake quantisation of ``w [out, in]``, clipping range chosen per row by MSE.

    Each row's ``[min, max]`` is shrunk by every factor in ``grid``; the factor with
    the smallest squared error of that row wins.

    Example:
        >>> w = torch.randn(4, 16)
        >>> bool((quantize_weight(w, 8) - w).abs().max() < 0.05)
        True
    """
    w2 = w.reshape(w.shape[0], -1).float()
    lo, hi = w2.amin(1, keepdim=True), w2.amax(1, keepdim=True)
    best, best_err = w2, torch.full((w2.shape[0], 1), float("inf"), device=w.device)
    for f in grid:
        s, z = minmax_params(lo * f, hi * f, bits)
        wq = fake_quant(w2, s, z, bits)
        err = (wq - w2).pow(2).sum(1, keepdim=True)
        better = err < best_err
        best = torch.where(better, wq, best)
        best_err = torch.where(better, err, best_err)
    return best.reshape(w.shape).to(w.dtype)


def search_act_params(sample: torch.Tensor, bits: int, lo: float, hi: float, method: str = "mse",
                      tails: tuple[float, ...] = TAIL_GRID) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor activation scale/zero point from calibration data.

    Args:
        sample: 1-D random sample of the activation's values.
        bits: bit width.
        lo, hi: exact min and max seen during calibration.
        method: ``minmax`` (the full range) or ``mse`` (the tail-clipped range, from quantiles
            ``tails`` of ``sample``, with the smallest squared error on ``sample``).

    Example:
        >>> x = torch.randn(10000)
        >>> s, z = search_act_params(x, 4, float(x.min()), float(x.max()))
        >>> s_mm, _ = search_act_params(x, 4, float(x.min()), float(x.max()), "minmax")
        >>> bool(s <= s_mm)
        True
    """
    lo_t, hi_t = torch.tensor(lo), torch.tensor(hi)
    if method == "minmax" or sample.numel() < 16:
        return minmax_params(lo_t, hi_t, bits)
    if method != "mse":
        raise ConfigError(f"unknown activation calibration {method!r}; use minmax or mse.")
    sample = sample.float().flatten()
    cands = [(lo_t, hi_t)]
    pos = [t for t in tails if t > 0]
    if pos:
        qv = torch.quantile(sample, torch.tensor(pos + [1 - t for t in pos]))
        cands += [(qv[i], qv[len(pos) + i]) for i in range(len(pos))]
    best, best_err = minmax_params(lo_t, hi_t, bits), float("inf")
    for a, b in cands:
        s, z = minmax_params(a, b, bits)
        err = float((fake_quant(sample, s, z, bits) - sample).pow(2).mean())
        if err < best_err:
            best, best_err = (s, z), err
    return best


def log2_quant(x: torch.Tensor, bits: int, sqrt2: bool = True) -> torch.Tensor:
    """Log quantiser for post-softmax attention ``x`` in ``[0, 1]``.

    Codes ``q = round(-log_b x)`` with base ``b = sqrt(2)`` (RepQ-ViT's log-sqrt2) or 2;
    ``x_hat = b^-q``; values below the smallest level (``q >= 2^bits``) become 0.

    Example:
        >>> log2_quant(torch.tensor([1.0, 0.5, 0.3, 0.0]), 4, sqrt2=False)
        tensor([1.0000, 0.5000, 0.2500, 0.0000])
    """
    base_log = 0.5 if sqrt2 else 1.0
    q = torch.round(-torch.log2(x.clamp_min(0)) / base_log)
    underflow = q >= 2 ** bits
    q = q.clamp(0, 2 ** bits - 1)
    return torch.where(underflow, torch.zeros_like(x), torch.exp2(-q * base_log)).to(x.dtype)


def layernorm_reparam(gamma: torch.Tensor, beta: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                      weights: list[torch.Tensor], biases: list[torch.Tensor | None]
                      ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor],
                                 torch.Tensor, torch.Tensor]:
    """RepQ-ViT's scale reparameterisation: per-channel post-LayerNorm quantisation → per-tensor.

    With per-channel ``(s_c, z_c)`` of the LayerNorm output, ``s~ = mean(s)``,
    ``z~ = round(mean(z))``, ``r1 = s / s~`` and ``r2 = z - z~``::

        gamma' = gamma / r1            beta' = (beta + s * r2) / r1
        W'     = W * r1 (per column)   b'    = b - W (s * r2)

    The FP output of every consumer linear is unchanged, and per-tensor
    quantisation of the new LayerNorm output with ``(s~, z~)`` gives exactly the
    per-channel codes of the old one.

    Args:
        gamma, beta: LayerNorm affine ``[C]``.
        scale, zero: per-channel quantiser ``[C]`` of the LayerNorm output.
        weights, biases: the linears fed by the LayerNorm, ``[out_j, C]`` / ``[out_j]`` or None.

    Returns:
        ``(gamma', beta', weights', biases', s~, z~)``.

    Example:
        >>> g, b = torch.rand(4) + 0.5, torch.randn(4); W = torch.randn(3, 4); s = torch.rand(4) + 0.1
        >>> z = torch.tensor([0.0, 3.0, 5.0, 8.0]); n = torch.randn(2, 4)
        >>> g2, b2, (W2,), (c2,), _, _ = layernorm_reparam(g, b, s, z, [W], [None])
        >>> torch.allclose((n * g2 + b2) @ W2.T + c2, (n * g + b) @ W.T, atol=1e-5)
        True
    """
    s_t = scale.mean()
    z_t = zero.mean().round()
    r1, r2 = scale / s_t, zero - z_t
    shift = scale * r2
    gamma2, beta2 = gamma / r1, (beta + shift) / r1
    w_out, b_out = [], []
    for w, b in zip(weights, biases):
        w_out.append(w * r1)
        b_out.append((b if b is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)) - w @ shift)
    return gamma2, beta2, w_out, b_out, s_t, z_t
