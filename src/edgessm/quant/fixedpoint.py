"""Fixed-point arithmetic: value = mantissa * 2**exponent, mantissa a signed integer.

One rounding rule everywhere (DESIGN.md): a right shift by s > 0 rounds half up,
``(x + (1 << (s - 1))) >> s``; a shift by s <= 0 is an exact left shift by -s. Values
leave an operation through :func:`saturate_*` (or wrap-around when a spec says so) and
every value that did not fit is counted, never silently dropped.

Each function exists twice, for numpy int64 arrays (the integer engine, ``targets/fixed``)
and for torch int64 tensors (the quantized PyTorch model in eval mode); the tests prove
the two agree bit for bit. Float -> integer conversion (weights at compile time, the
input at the host boundary) is :func:`round_half_up` = floor(x + 1/2).
"""
from __future__ import annotations

import math

import numpy as np
import torch

OVERFLOW_MODES = ("saturate", "wrap")


def int_range(bits: int) -> tuple[int, int]:
    """(lo, hi) of a signed two's-complement integer of `bits` bits."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def exponent_for(max_abs: float, bits: int, headroom_bits: float = 0.0) -> int:
    """Smallest exponent e with max_abs * 2**headroom <= (2**(bits-1) - 1) * 2**e.

    A zero (or non-finite) max_abs gives the exponent that represents 1.0 at full scale.
    """
    q = (1 << (bits - 1)) - 1
    if not math.isfinite(max_abs) or max_abs <= 0:
        max_abs = 1.0
    return int(math.ceil(math.log2(max_abs * 2.0 ** headroom_bits / q) - 1e-12))


# ---- numpy (integer engine) ---------------------------------------------------------------
def rshift_round_np(x: np.ndarray, s) -> np.ndarray:
    """Round-half-up right shift by s (array or int; s <= 0: exact left shift by -s)."""
    s = np.asarray(s, dtype=np.int64)
    if s.min() > 0:                                   # the common case: a pure right shift
        return np.right_shift(x + (np.left_shift(np.int64(1), s - 1)), s)
    sp = np.maximum(s, 0)
    sn = np.maximum(-s, 0)
    half = np.left_shift(np.int64(1), sp) >> 1
    return np.left_shift(np.right_shift(x + half, sp), sn)


def saturate_np(x: np.ndarray, bits: int, mode: str = "saturate") -> tuple[np.ndarray, int]:
    """Fit x into `bits` signed bits; returns (value, number of elements that did not fit)."""
    lo, hi = int_range(bits)
    if x.size == 0 or (x.min() >= lo and x.max() <= hi):
        return x, 0
    over = int(np.count_nonzero((x < lo) | (x > hi)))
    if mode == "wrap":
        return ((x - lo) & ((1 << bits) - 1)) + lo, over
    return np.clip(x, lo, hi), over


# ---- torch (quantized model, eval mode) -----------------------------------------------------
def rshift_round_t(x: torch.Tensor, s) -> torch.Tensor:
    s = torch.as_tensor(s, dtype=torch.int64)
    if int(s.min()) > 0:
        return torch.bitwise_right_shift(x + torch.bitwise_left_shift(torch.ones_like(s), s - 1), s)
    sp = s.clamp(min=0)
    sn = (-s).clamp(min=0)
    half = torch.bitwise_left_shift(torch.ones_like(sp), sp) >> 1
    return torch.bitwise_left_shift(torch.bitwise_right_shift(x + half, sp), sn)


def saturate_t(x: torch.Tensor, bits: int, mode: str = "saturate") -> tuple[torch.Tensor, int]:
    lo, hi = int_range(bits)
    if x.numel() == 0:
        return x, 0
    mn, mx = torch.aminmax(x)
    if int(mn) >= lo and int(mx) <= hi:
        return x, 0
    over = int(((x < lo) | (x > hi)).sum())
    if mode == "wrap":
        return ((x - lo) & ((1 << bits) - 1)) + lo, over
    return x.clamp(lo, hi), over


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 1/2), the float -> integer rounding used at compile time and at the input."""
    return torch.floor(x + 0.5)


def quantize_input_np(x: np.ndarray, exponent: int, bits: int) -> tuple[np.ndarray, int]:
    """Host-side encoding of float inputs: round_half_up(x * 2**-e), saturated (float64 math,
    exact for power-of-two scaling). Done before the integer step, never inside it."""
    m = np.floor(np.asarray(x, dtype=np.float64) * 2.0 ** (-exponent) + 0.5)
    lo, hi = int_range(bits)
    over = int(np.count_nonzero((m < lo) | (m > hi)))
    return np.clip(m, lo, hi).astype(np.int64), over


def quantize_input_t(x: torch.Tensor, exponent: int, bits: int) -> tuple[torch.Tensor, int]:
    m = torch.floor(x.to(torch.float64) * 2.0 ** (-exponent) + 0.5)
    lo, hi = int_range(bits)
    over = int(((m < lo) | (m > hi)).sum())
    return m.clamp(lo, hi).to(torch.int64), over
