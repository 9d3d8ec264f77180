"""Quantizers: integer mantissas for compile time, fake quantizers with straight-through
gradients for quantization-aware training.

Weights (encoder, mixing, decoder), one row per output channel::

    W[c, j]  ~  m[c, j] * g[c] * 2**f[c]

with m a signed integer of ``bits`` bits (ternary: {-1,0,1}, binary: {-1,1}), g a positive
integer descale factor of ``descale_bits`` bits (1 for power-of-two scales) and f an
exponent. Per-tensor scaling uses one (g, f) for every row.

S4D coefficients (dA, dB, 2C, D): v ~ m * 2**e, with one exponent per layer (or per channel).

Straight-through estimators: ``round_ste(x)`` rounds forward and is the identity backward;
clamping passes no gradient outside the range. LSQ learns the step size s with the
gradient of ``round_ste(clamp(w / s)) * s`` (Esser et al. 2020, "Learned step size
quantization"), scaled by 1/sqrt(numel * qmax). TWN: Li et al. 2016, "Ternary weight
networks" (threshold 0.7 * mean|w|, scale = mean of the kept |w|).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..ssm import fused
from .fixedpoint import int_range, round_half_up
from .spec import TensorSpec

_TINY = 1e-30


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half up forward, identity backward."""
    return x + (round_half_up(x) - x).detach()


def _absmax(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Max |w| per row (C,) or for the whole tensor broadcast to (C,)."""
    a = w.detach().abs()
    if w.dim() == 1:
        a = a.unsqueeze(-1)
    m = a.amax(-1) if per_channel else a.amax().expand(a.shape[0])
    return m.clamp(min=_TINY)


def _mean_abs(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    a = w.detach().abs()
    return (a.mean(-1) if per_channel else a.mean().expand(a.shape[0])).clamp(min=_TINY)


def split_descale(sigma: torch.Tensor, descale_bits: int, pow2: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Step sizes sigma (C,) -> (g, f) int64 with g * 2**f ~ sigma, g < 2**(descale_bits-1)."""
    sigma = sigma.detach().to(torch.float64).clamp(min=_TINY)
    if pow2:
        f = torch.ceil(torch.log2(sigma) - 1e-12)
        return torch.ones_like(f, dtype=torch.int64), f.to(torch.int64)
    gmax = (1 << (descale_bits - 1)) - 1
    f = torch.ceil(torch.log2(sigma / gmax) - 1e-12)
    g = round_half_up(sigma / torch.exp2(f)).clamp(1, gmax)
    return g.to(torch.int64), f.to(torch.int64)


def split_descale_np(sigma: np.ndarray, descale_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``split_descale`` (pow2 = False) of float64 step sizes in numpy: the same (g, f) values,
    as float64 arrays, for callers that quantize small matrices outside torch."""
    sigma = np.maximum(np.asarray(sigma, dtype=np.float64), _TINY)
    gmax = (1 << (descale_bits - 1)) - 1
    f = np.ceil(np.log2(sigma / gmax) - 1e-12)
    return np.clip(np.floor(sigma / np.exp2(f) + 0.5), 1, gmax), f


def weight_step(w: torch.Tensor, ts: TensorSpec, lsq_step: torch.Tensor | None = None) -> torch.Tensor:
    """The float step size per output channel (C,), before descale rounding."""
    C = w.shape[0]
    if ts.method in ("uniform", "pow2"):
        return _absmax(w, ts.per_channel) / ts.qmax
    if ts.method == "lsq":
        if lsq_step is None:
            raise ValueError("lsq needs its learned step")
        return lsq_step.abs().clamp(min=_TINY).expand(C)
    if ts.method == "ternary":
        a = w.detach().abs()
        delta = 0.7 * _mean_abs(w, ts.per_channel)
        mask = a > delta.unsqueeze(-1)
        if ts.per_channel:
            alpha = (a * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        else:
            alpha = ((a * mask).sum() / mask.sum().clamp(min=1)).expand(C)
        return alpha.clamp(min=_TINY)
    if ts.method == "binary":
        return _mean_abs(w, ts.per_channel)
    raise ValueError(ts.method)


def _mantissa_float(w: torch.Tensor, ts: TensorSpec, step_q: torch.Tensor) -> torch.Tensor:
    """Integer-valued float mantissas (C, K), with straight-through gradient to w."""
    if ts.method == "ternary":
        delta = 0.7 * _mean_abs(w, ts.per_channel)
        m = torch.sign(w.detach()) * (w.detach().abs() > delta.unsqueeze(-1))
        return m
    if ts.method == "binary":
        return torch.where(w.detach() >= 0, 1.0, -1.0).to(w.dtype)
    q = ts.qmax
    return round_ste(torch.clamp(w / step_q.unsqueeze(-1), -q, q))


@dataclass
class QWeight:
    """Integer weights: W ~ m * g[:, None] * 2**f[:, None]."""
    m: torch.Tensor   # (C, K) int64
    g: torch.Tensor   # (C,) int64 descale factor
    f: torch.Tensor   # (C,) int64 exponent

    def dequant(self) -> torch.Tensor:
        return self.m.double() * (self.g.double() * torch.exp2(self.f.double())).unsqueeze(-1)


def quantize_weight(w: torch.Tensor, ts: TensorSpec, lsq_step: torch.Tensor | None = None) -> QWeight:
    """Integer weights for compile time (no gradient)."""
    with torch.no_grad():
        step = weight_step(w, ts, lsq_step)
        g, f = split_descale(step, ts.descale_bits, ts.method == "pow2")
        step_q = (g.double() * torch.exp2(f.double())).to(w.dtype)
        m = _mantissa_float(w.detach(), ts, step_q)
        return QWeight(m.to(torch.int64), g, f)


def fake_quant_weight(w: torch.Tensor, ts: TensorSpec, lsq_step: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable stand-in for the integer weights: forward = m * g * 2**f exactly."""
    return fake_quant_weight_descale(w, ts, lsq_step)[0]


def fake_quant_weight_descale(w: torch.Tensor, ts: TensorSpec, lsq_step: torch.Tensor | None = None):
    """(fake_quant_weight(w, ts, lsq_step), g, f): with the descale (g, f) of its step."""
    step = weight_step(w, ts, lsq_step)
    g, f = split_descale(step, ts.descale_bits, ts.method == "pow2")
    step_q_exact = (g.double() * torch.exp2(f.double())).to(w.dtype)
    if ts.method == "lsq":
        gscale = 1.0 / math.sqrt(w.numel() * ts.qmax)
        s = step * gscale + (step - step * gscale).detach()          # LSQ gradient scaling
        step_q = s + (step_q_exact - s).detach()
    else:
        step_q = step_q_exact
    m = _mantissa_float(w, ts, step_q.detach() if ts.method != "lsq" else step_q)
    if ts.method in ("ternary", "binary"):
        wq = m * step_q_exact.unsqueeze(-1)
        return w + (wq - w).detach(), g, f
    return m * step_q.unsqueeze(-1), g, f


def lsq_init(w: torch.Tensor, ts: TensorSpec) -> torch.Tensor:
    """Initial LSQ step: max|w| / qmax per channel (so PTQ with lsq equals uniform)."""
    return (_absmax(w, ts.per_channel) / ts.qmax).detach().clone()


# ---- fixed point values with an exponent (S4D coefficients, activations) --------------------
def coeff_exponent(v: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Exponent(s) for a (H, n) coefficient (real, or complex: both parts): (H, 1) int64."""
    a = torch.view_as_real(v).abs().amax(-1) if v.is_complex() else v.abs()
    a = a.detach().to(torch.float64)
    if a.dim() == 1:
        a = a.unsqueeze(-1)
    m = a.amax(-1) if per_channel else a.amax().expand(a.shape[0])
    q = (1 << (bits - 1)) - 1
    m = torch.where(m > 0, m, torch.ones_like(m))
    return torch.ceil(torch.log2(m / q) - 1e-12).to(torch.int64).unsqueeze(-1)


def quantize_coeff(v: torch.Tensor, bits: int, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(mantissa, exponent (H,1)) for a real (H, n)/(H,) or complex (H, n) coefficient.

    Complex values give mantissas (..., 2) (real, imag)."""
    with torch.no_grad():
        e = coeff_exponent(v, bits, per_channel)
        r = torch.view_as_real(v) if v.is_complex() else v
        r = r.detach().to(torch.float64)
        scale = torch.exp2(-e.double())
        if v.is_complex():
            scale = scale.unsqueeze(-1)
        elif v.dim() == 1:
            scale = scale.squeeze(-1)
        lo, hi = int_range(bits)
        m = round_half_up(r * scale).clamp(lo, hi).to(torch.int64)
        return m, e


def fake_quant_coeff(v: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Differentiable fixed-point rounding of a real or complex coefficient."""
    e = coeff_exponent(v, bits, per_channel).to(v.real.dtype if v.is_complex() else v.dtype)
    lo, hi = int_range(bits)
    if v.is_complex():
        r = torch.view_as_real(v)
        s = torch.exp2(e).unsqueeze(-1)
        q = torch.clamp(round_ste(r / s), lo, hi) * s
        return torch.view_as_complex(q.contiguous())
    s = torch.exp2(e) if v.dim() > 1 else torch.exp2(e.squeeze(-1))
    return torch.clamp(round_ste(v / s), lo, hi) * s


def fake_quant_act(v: torch.Tensor, exponent, bits: int, relu: bool = False) -> torch.Tensor:
    """Activation / state rounding to m * 2**e with saturation at `bits` (straight-through).

    Equal to ``clamp(round_ste(v / s), lo, hi) * s`` with s = 2**e, values and gradients alike
    (the gradient passes where the rounded value lies in [lo, hi]), in one fused autograd node:
    the forward works in place on one buffer and keeps a 1-byte mask for the backward.
    `relu`: ``relu`` of that, in the same node (the gradient passes where the rounded value lies
    in [1, hi]: the same values and gradients as ``F.relu`` after it, one pass each way fewer).
    """
    lo, hi = int_range(bits)
    return _FakeQuantAct.apply(v, 2.0 ** float(exponent), float(lo), float(hi), bool(relu))


class _FakeQuantAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, s, lo, hi, relu=False):
        native = fused.fake_quant_rows(v.detach(), s, lo, hi, relu, v.requires_grad)
        if native is not None:                            # one pass, the same bits
            y, keep = native
            if v.requires_grad:
                ctx.save_for_backward(keep)
            return y
        q = torch.div(v, s).add_(0.5).floor_()            # round half up, as round_ste
        if v.requires_grad:                               # relu: passes where the output is > 0
            ctx.save_for_backward((q >= (1.0 if relu else lo)) & (q <= hi))
        return q.clamp_(0.0 if relu else lo, hi).mul_(s)  # relu(clamp(q) s) = clamp(q, 0, hi) s

    @staticmethod
    def backward(ctx, g):
        (inside,) = ctx.saved_tensors
        return g * inside, None, None, None, None
