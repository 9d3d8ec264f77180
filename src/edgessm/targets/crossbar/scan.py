"""The hardware-aware state recurrence as one native scan with its own backward.

``state_scan(A, U, fs, ...)`` computes, for every batch row and channel,
``w_t = DAC(ADC(A w_(t-1) + U_t))`` over the whole sequence in C (scan.c), and its backward
(straight-through through the roundings, zero where a converter clipped) in C as well: the
Python loop over time of the reference (``HwSequenceModel(scan="loop")``) costs ~10 torch
calls per token, the native scan a few microseconds per sequence and channel.

The library is compiled once per machine with the C compiler of the CPU target (cached by
source hash). Without a compiler the model falls back to the reference loop, with one
warning (``available()`` says why).
"""
from __future__ import annotations

import ctypes
import warnings
from pathlib import Path

import torch

from ...errors import EdgessmError
from ..cpu.build import NativeLib, ptr

_SRC = Path(__file__).with_name("scan.c")
# IEEE results: no -ffast-math (the converters' floor(x + 0.5) must match torch's exactly);
# no traps and no errno let the compiler vectorize the compares and floor
_FLAGS = ["-O3", "-march=native", "-fno-fast-math", "-fno-trapping-math", "-fno-math-errno", "-fPIC", "-shared", "-std=c99"]
_warned = False


def _bind(lib):
    U8 = ctypes.POINTER(ctypes.c_uint8)
    for suf, T in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        P = ctypes.POINTER(T)
        f = getattr(lib, f"hw_scan_fwd_{suf}")
        f.restype = ctypes.c_int64
        f.argtypes = [ctypes.c_int] * 4 + [P, P, P] + [ctypes.c_int] * 4 + [P, P, U8, ctypes.c_int]
        g = getattr(lib, f"hw_scan_bwd_{suf}")
        g.restype = ctypes.c_int
        g.argtypes = [ctypes.c_int] * 4 + [P, P, P, U8, P, P, P, ctypes.c_int]


_LIB = NativeLib(_SRC, _FLAGS + ["-fopenmp"], _FLAGS, bind=_bind)   # channels over threads; else one


def available() -> tuple[bool, str]:
    """(True, "") when the native scan can run here, else (False, the reason)."""
    return _LIB.available()


def warn_fallback():
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"crossbar hardware-aware scan: native kernel unavailable ({_LIB.why}); "
                      f"using the Python loop over time (slow)", RuntimeWarning, stacklevel=3)


def _u8(t: torch.Tensor):
    return ptr(t, ctypes.c_uint8)


class _Scan(torch.autograd.Function):
    """M (H, K, K), v (H, L, B) -> Y (H, L, B); batch innermost (see scan.c)."""

    @staticmethod
    def forward(ctx, M, V, fs, adc, dac, qa, qd, counter):
        H, L, B = V.shape
        n2 = M.shape[-1] - 1
        dt = V.dtype
        T = ctypes.c_float if dt == torch.float32 else ctypes.c_double
        suf = "f32" if dt == torch.float32 else "f64"
        Mc, Vc = M.detach().contiguous(), V.detach().contiguous()
        fsc = fs.detach().to(dt).contiguous()
        Y = torch.empty_like(Vc)
        W = torch.empty(H, L, n2, B, dtype=dt)
        mask = torch.empty(H, L, n2, B, dtype=torch.uint8)
        sat = getattr(_LIB.get(), f"hw_scan_fwd_{suf}")(B, L, H, n2, ptr(Mc, T), ptr(Vc, T), ptr(fsc, T),
                                                 int(adc), int(dac), int(qa), int(qd), ptr(Y, T),
                                                 ptr(W, T), _u8(mask), torch.get_num_threads())
        if sat < 0:
            raise MemoryError("native crossbar scan: out of memory")
        counter.append(int(sat))
        ctx.save_for_backward(Mc, Vc, W, mask)
        ctx.suf, ctx.T = suf, T
        return Y

    @staticmethod
    def backward(ctx, gY):
        M, V, W, mask = ctx.saved_tensors
        H, L, n2, B = W.shape
        T = ctx.T
        gYc = gY.to(V.dtype).contiguous()
        gV = torch.empty_like(V)
        gM = torch.empty_like(M)
        if getattr(_LIB.get(), f"hw_scan_bwd_{ctx.suf}")(B, L, H, n2, ptr(M, T), ptr(V, T), ptr(W, T), _u8(mask),
                                                   ptr(gYc, T), ptr(gV, T), ptr(gM, T),
                                                   torch.get_num_threads()):
            raise MemoryError("native crossbar scan: out of memory")
        return gM, gV, None, None, None, None, None, None


def block_scan(M: torch.Tensor, v: torch.Tensor, fs: torch.Tensor, adc_bits: int | None,
               dac_bits: int | None) -> tuple[torch.Tensor, int]:
    """The S4D layer's output column before its ADC, y (B, L, H), and the number of ADC
    saturations of the state columns.

    M (H, K, K) (out, in): the block matrices [[A, b], [c, d]] (K = n2 + 1); v (B, L, H): the
    DAC'd inputs; fs (H, n2): the state ADC full scales; adc_bits / dac_bits: None skips that
    converter on the state (calibration: no ADC; analog state: no DAC)."""
    if _LIB.get() is None:
        raise EdgessmError(f"native crossbar scan unavailable: {_LIB.why}")
    if v.dtype not in (torch.float32, torch.float64) or M.dtype != v.dtype:
        raise EdgessmError(f"native crossbar scan: float32 or float64 inputs of one dtype, got {M.dtype}, {v.dtype}")
    if v.device.type != "cpu":
        raise EdgessmError(f"native crossbar scan runs on CPU tensors, got {v.device}")
    qa = (1 << (adc_bits - 1)) - 1 if adc_bits else 0
    qd = (1 << (dac_bits - 1)) - 1 if dac_bits else 0
    counter: list[int] = []
    B = v.shape[0]
    pad = -B % 8                        # the kernel runs 8 batch rows per SIMD step
    vt = v.permute(2, 1, 0)
    if pad:
        vt = torch.nn.functional.pad(vt, (0, pad))
    Y = _Scan.apply(M, vt, fs, adc_bits is not None, dac_bits is not None, qa, qd, counter)
    return Y[..., :B].permute(2, 1, 0), counter[0]
