"""The S4D block's tail on channel-major activations (B, H, L), fused into native passes with
their own backward (fused.c): what ``Block.forward_hl`` runs after the FFT convolution on CPU.

- ``act_dropout(x, act, p)``: dropout(act(x)), one pass each way;
- ``mix_tail(m, bias, res, glu, act, p)``: after the mixing product m = W z (without its bias):
  dropout(GLU(m + bias)) or dropout(act(m + bias)), plus the residual, one pass each way (the
  bias gradient summed in the same pass);
- ``norm_mix_tail(m, bias, norm, res, glu, act, p)``: ``mix_tail`` after a batch norm of the
  mixing product in training mode (``mix_norm``): the statistics in one pass, then one pass
  each way as ``mix_tail`` (the norm's gain and shift applied in it), and one more backward
  pass for the gradient through the statistics;
- ``layer_norm_ch(x, weight, bias, eps)``: LayerNorm over axis 1 (the channels), one pass
  forward (two sweeps over a block of columns held in cache), one backward;
- ``ActDrop(act, p)``: ``act_dropout`` as the epilogue of the FFT convolution
  (``fftconv.conv(..., epilogue=)``): applied to each chunk of the convolution's output while it
  is in cache, its backward writing each chunk's input gradient into the convolution's buffer.

Dropout draws its mask from a counter-based hash of (seed, row, position), or with ``tied`` of
(seed, row) alone (one draw per channel of a sequence, kept or dropped along all its positions:
``[model] tie_dropout``, as ``network.TiedDropout`` on the torch path): the seed is one
draw of torch's default CPU generator per call (so ``torch.manual_seed`` and a checkpoint's
saved RNG state reproduce a run), the mask is the same for every thread count and the backward
recomputes it (after a ReLU with nothing added, the backward reads the output instead: no
mask, and the input can be freed). Keep probability 1 - p (p resolved to 2^-24), kept values
scaled by 1 / (1 - p), as ``nn.Dropout``; a different mask from torch's for the same seed.

The library is compiled once per machine (``edgessm.toolchain``); ``usable(x)`` says whether a
tensor takes the fused path: CPU float32, no autocast, not under torch.compile or tracing, the
library loaded. Without the library (no C compiler) the block runs its torch ops, with one
warning saying why (``available()``). float64 runs the same kernels (C library exp and erfc),
for gradient checks.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import torch

from ..errors import InputError
from ..toolchain import NativeLib, ptr

_SRC = Path(__file__).with_name("fused.c")
# FMA contraction on (the polynomials of exp and erf); no traps or errno: vectorized compares
_FLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-fno-trapping-math",
          "-fPIC", "-shared", "-std=c99"]
ACTS = {"none": 0, "relu": 1, "gelu": 2}
_enabled = os.environ.get("EDGESSM_FUSED", "1") != "0"


def _bind(lib):
    I64, I32, U64, INT = ctypes.c_int64, ctypes.c_int32, ctypes.c_uint64, ctypes.c_int
    f = lib.fb_dropout_mask
    f.restype = None
    f.argtypes = [I64, I64, U64, I32, ctypes.POINTER(ctypes.c_uint8), INT]
    for suf, T in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        P = ctypes.POINTER(T)
        for name, args in (
                ("fb_act_drop_fwd", [I64, I64, P, I64, P, P, INT, U64, I32, T, I64, INT]),
                ("fb_act_drop_bwd", [I64, I64, P, I64, P, I64, P, I64, INT, U64, I32, T, I64, INT]),
                ("fb_mix_fwd", [I64, I64, I64, P, P, P, P, I64, P, INT, INT, U64, I32, T, INT]),
                ("fb_mix_bwd", [I64, I64, I64, P, P, P, P, I64, P, P, P, P, P, P, P, INT, INT, U64, I32,
                                T, INT]),
                ("fb_chstat", [I64, I64, I64, P, ctypes.POINTER(ctypes.c_double), P, P, INT]),
                ("fb_affine2", [I64, I64, I64, P, P, P, P, P, INT]),
                ("fb_ln_fwd", [I64, I64, I64, P, I64, P, P, P, P, P, ctypes.c_double, INT]),
                ("fb_ln_bwd", [I64, I64, I64, P, I64, P, P, P, P, I64, P, P, P, P, INT]),
                ("fb_relu_out_bwd", [I64, I64, I64, P, P, I64, P, P, P, T, INT]),
                ("fb_fq_fwd", [I64, I64, P, I64, P, ctypes.POINTER(ctypes.c_uint8), T, T, T, INT, INT])):
            f = getattr(lib, f"{name}_{suf}")
            f.restype = None
            f.argtypes = args


_LIB = NativeLib(_SRC, _FLAGS + ["-fopenmp"], _FLAGS, bind=_bind,   # rows over threads; else one
                 purpose="the fused S4D block kernels")


def available() -> tuple[bool, str]:
    """(True, "") when the fused kernels can run here, else (False, the reason)."""
    return _LIB.available()


def set_enabled(on: bool) -> bool:
    """Turn the fused path of the blocks on or off (also: environment EDGESSM_FUSED=0);
    returns the previous setting."""
    global _enabled
    prev, _enabled = _enabled, bool(on)
    return prev


def enabled() -> bool:
    return _enabled


def _autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu") or torch.is_autocast_enabled()
    except TypeError:                      # older torch: no device argument
        return torch.is_autocast_cpu_enabled() or torch.is_autocast_enabled()


def usable(x: torch.Tensor) -> bool:
    """Whether the block tail of `x` (a (B, H, L) activation) runs fused: CPU float32, no
    autocast, not compiling or tracing, the fused path on, the library loaded (else one warning)."""
    if not _enabled or x.device.type != "cpu" or x.dtype != torch.float32 or _autocast() \
            or torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if _LIB.get() is None:
        _LIB.warn_unavailable("S4D block, fused tail", "using the torch ops (slower training step)", stacklevel=3)
        return False
    return True


# ---- helpers ---------------------------------------------------------------------------------
def _lib_t(x: torch.Tensor):
    if x.dtype == torch.float32:
        return _LIB.require(), ctypes.c_float, "f32"
    if x.dtype == torch.float64:
        return _LIB.require(), ctypes.c_double, "f64"
    raise InputError(f"the fused block kernels take float32 or float64 tensors, got {x.dtype}")


def _p(t, T):
    return ptr(t, T) if t is not None else ctypes.POINTER(T)()


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(x, its row stride) when x (..., L) is a stack of uniformly strided contiguous rows (e.g.
    the first L columns of a wider buffer: read in place), else (a contiguous copy, L)."""
    L = x.shape[-1]
    if x.stride(-1) == 1 or L <= 1:
        ld = x.stride(-2) if x.dim() >= 2 and x.shape[-2] > 1 else L
        expect = ld
        ok = ld >= L
        for d in range(x.dim() - 2, -1, -1):
            if x.shape[d] > 1 and x.stride(d) != expect:
                ok = False
                break
            expect *= x.shape[d]
        if ok:
            return x, ld
    return x.contiguous(), L


def _check(x: torch.Tensor, name: str, ndim: int = 3) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise InputError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.device.type != "cpu":
        raise InputError(f"the fused block kernels run on the CPU; {name} is on {x.device}")
    if x.numel() == 0:
        raise InputError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.shape[-1] >= 2**31:
        raise InputError(f"{name}: sequences of 2^31 or more steps are not supported")
    return x


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise InputError(f"dropout p must be a number in [0, 1), got {p!r}")
    return float(p)


def _check_act(act: str) -> int:
    if act not in ACTS:
        raise InputError(f"activation must be one of {', '.join(ACTS)}, got {act!r}")
    return ACTS[act]


def _param(t, n: int, name: str, like: torch.Tensor):
    if t is None:
        return None
    if t.shape != (n,) or t.dtype != like.dtype or t.device != like.device:
        raise InputError(f"{name} must be a ({n},) {like.dtype} tensor on {like.device}, "
                         f"got {tuple(t.shape)} {t.dtype} on {t.device}")
    return t.contiguous()


DROP_TIED = 1 << 30      # the kernels' flag in the threshold: one draw per row (fused.c)


def _drop(p: float, seed: int | None, tied: bool = False):
    """(threshold on 24 bits, with DROP_TIED for tied dropout; scale; seed) of dropout p; p = 0:
    no dropout."""
    _check_tied(tied)
    if p == 0.0:
        return 0, 1.0, 0
    thr = int(round(p * 2**24)) | (DROP_TIED if tied else 0)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())   # torch's default CPU generator
    return thr, 1.0 / (1.0 - p), seed & (2**64 - 1)


def _check_tied(tied) -> None:
    if not isinstance(tied, bool):
        raise InputError(f"tied must be true or false, got {tied!r}")


_GRAIN = 1 << 16          # elements below which a kernel runs on one thread (as torch's grain)


def _nt(numel: int) -> int:
    """Threads for a kernel over `numel` elements: torch's count, one for small tensors (the
    results are the same for any count)."""
    return 1 if numel < _GRAIN else max(1, torch.get_num_threads())


def dropout_mask(shape, p: float, seed: int, tied: bool = False) -> torch.Tensor:
    """The keep mask (bool, `shape` = (rows..., L)) the kernels draw for dropout p and `seed`
    (`tied`: each row's the same at every position)."""
    p = _check_p(p)
    thr, _, seed = _drop(p, seed, tied)
    out = torch.empty(shape, dtype=torch.uint8)
    L = shape[-1]
    _LIB.require().fb_dropout_mask(out.numel() // max(L, 1), L, seed, thr,
                                   ptr(out, ctypes.c_uint8), _nt(out.numel()))
    return out.bool()


# ---- autograd Functions ------------------------------------------------------------------------
class _ActDrop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, act, thr, scale, seed):
        lib, T, suf = _lib_t(x)
        x, ldx = _rows(x)
        y = torch.empty(x.shape, dtype=x.dtype)
        L = x.shape[-1]
        getattr(lib, f"fb_act_drop_fwd_{suf}")(x.numel() // L, L, ptr(x, T), ldx, ptr(y, T), _p(None, T),
                                               act, seed, thr, scale, 0, _nt(y.numel()))
        # ReLU: its backward reads the output (kept anyway as the mixing product's input), so
        # the input (the convolution's buffer) can be freed and no mask is recomputed
        ctx.save_for_backward(y if act == ACTS["relu"] else x)
        ctx.cfg = (act, thr, scale, seed, ldx)
        return y

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        act, thr, scale, seed, ldx = ctx.cfg
        lib, T, suf = _lib_t(x)
        g, ldg = _rows(g)
        gx = torch.empty(x.shape, dtype=x.dtype)
        L = x.shape[-1]
        if act == ACTS["relu"]:                                 # x is the output
            getattr(lib, f"fb_relu_out_bwd_{suf}")(1, x.numel() // L, L, ptr(x, T), ptr(g, T), ldg,
                                                   ptr(gx, T), _p(None, T), _p(None, T), scale,
                                                   _nt(gx.numel()))
            return gx, None, None, None, None
        getattr(lib, f"fb_act_drop_bwd_{suf}")(x.numel() // L, L, ptr(x, T), ldx, ptr(g, T), ldg,
                                               ptr(gx, T), L, act, seed, thr, scale, 0, _nt(gx.numel()))
        return gx, None, None, None, None


class _MixTail(torch.autograd.Function):
    @staticmethod
    def forward(ctx, m, bias, res, glu, act, thr, scale, seed):
        lib, T, suf = _lib_t(m)
        m = m.contiguous()
        B, C, L = m.shape
        H = C // 2 if glu else C
        out = torch.empty(B, H, L, dtype=m.dtype)
        res, ldr = _rows(res) if res is not None else (None, L)
        getattr(lib, f"fb_mix_fwd_{suf}")(B, H, L, ptr(m, T), _p(None, T), _p(bias, T), _p(res, T), ldr,
                                          ptr(out, T), int(glu), act, seed, thr, scale, _nt(m.numel()))
        from_out = not glu and act == ACTS["relu"] and res is None   # backward from the output
        ctx.save_for_backward(out if from_out else m, bias)
        ctx.cfg = (glu, act, thr, scale, seed, res is not None, from_out)
        return out

    @staticmethod
    def backward(ctx, g):
        m, bias = ctx.saved_tensors
        glu, act, thr, scale, seed, has_res, from_out = ctx.cfg
        lib, T, suf = _lib_t(m)
        B, C, L = m.shape
        H = C // 2 if glu else C
        g, ldg = _rows(g)
        gm = torch.empty_like(m)
        want_b = bias is not None and ctx.needs_input_grad[1]
        part = torch.empty(B, C, dtype=m.dtype) if want_b else None
        gbias = torch.empty(C, dtype=m.dtype) if want_b else None
        if from_out:                                            # m is the output
            getattr(lib, f"fb_relu_out_bwd_{suf}")(B, C, L, ptr(m, T), ptr(g, T), ldg, ptr(gm, T),
                                                   _p(part, T), _p(gbias, T), scale, _nt(gm.numel()))
        else:
            getattr(lib, f"fb_mix_bwd_{suf}")(B, H, L, ptr(m, T), _p(None, T), _p(bias, T), ptr(g, T),
                                              ldg, ptr(gm, T), _p(part, T), _p(gbias, T), _p(None, T),
                                              _p(None, T), _p(None, T), _p(None, T), int(glu), act,
                                              seed, thr, scale, _nt(gm.numel()))
        return gm, gbias, (g if has_res and ctx.needs_input_grad[2] else None), \
            None, None, None, None, None


class _NormMixTail(torch.autograd.Function):
    """dropout(f(batch_norm(m))) [+ res] in training mode, the batch statistics (mean, var) of m
    given: f GLU or an activation. The gradient flows through the statistics (as a batch norm's)."""

    @staticmethod
    def forward(ctx, m, mean, var, weight, beta, mix_bias, res, eps, glu, act, thr, scale, seed):
        lib, T, suf = _lib_t(m)
        B, C, L = m.shape
        H = C // 2 if glu else C
        rstd = torch.rsqrt(var + eps)
        gain = rstd if weight is None else weight * rstd
        shift = -mean * gain if beta is None else beta - mean * gain
        out = torch.empty(B, H, L, dtype=m.dtype)
        res, ldr = _rows(res) if res is not None else (None, L)
        getattr(lib, f"fb_mix_fwd_{suf}")(B, H, L, ptr(m, T), ptr(gain, T), ptr(shift, T), _p(res, T),
                                          ldr, ptr(out, T), int(glu), act, seed, thr, scale, _nt(m.numel()))
        ctx.save_for_backward(m, mean, rstd, gain, shift)
        ctx.cfg = (glu, act, thr, scale, seed, res is not None, weight is not None, beta is not None,
                   mix_bias is not None)
        return out

    @staticmethod
    def backward(ctx, g):
        m, mean, rstd, gain, shift = ctx.saved_tensors
        glu, act, thr, scale, seed, has_res, has_w, has_b, has_mb = ctx.cfg
        lib, T, suf = _lib_t(m)
        B, C, L = m.shape
        H = C // 2 if glu else C
        g, ldg = _rows(g)
        gz = torch.empty_like(m)                      # first d out / d (normalized m)
        part, part2 = torch.empty(B, C, dtype=m.dtype), torch.empty(B, C, dtype=m.dtype)
        s_g, s_gx = torch.empty(C, dtype=m.dtype), torch.empty(C, dtype=m.dtype)
        getattr(lib, f"fb_mix_bwd_{suf}")(B, H, L, ptr(m, T), ptr(gain, T), ptr(shift, T), ptr(g, T), ldg,
                                          ptr(gz, T), ptr(part, T), ptr(s_g, T), ptr(mean, T), ptr(rstd, T),
                                          ptr(part2, T), ptr(s_gx, T), int(glu), act, seed, thr, scale,
                                          _nt(m.numel()))
        # d m = gain (gz - mean(gz) - xhat mean(gz xhat)), xhat = (m - mean) rstd: as A gz + Bx m + Cc
        n = float(B * L)
        k2 = gain * rstd * s_gx / n
        A, Bx = gain.contiguous(), (-k2).contiguous()
        Cc = (mean * k2 - gain * s_g / n).contiguous()
        getattr(lib, f"fb_affine2_{suf}")(B, C, L, ptr(gz, T), ptr(m, T), ptr(A, T), ptr(Bx, T), ptr(Cc, T),
                                          _nt(m.numel()))
        gw = s_gx if has_w and ctx.needs_input_grad[3] else None
        gb = s_g if has_b and ctx.needs_input_grad[4] else None
        # the mixing bias before a batch norm in training: the mean removes it, its gradient is 0
        gmb = torch.zeros(C, dtype=m.dtype) if has_mb and ctx.needs_input_grad[5] else None
        return gz, None, None, gw, gb, gmb, (g if has_res and ctx.needs_input_grad[6] else None), \
            None, None, None, None, None, None


class _LayerNormCh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        lib, T, suf = _lib_t(x)
        x, ldx = _rows(x)
        B, H, L = x.shape
        y = torch.empty(x.shape, dtype=x.dtype)
        mean = torch.empty(B, L, dtype=x.dtype)
        rstd = torch.empty(B, L, dtype=x.dtype)
        getattr(lib, f"fb_ln_fwd_{suf}")(B, H, L, ptr(x, T), ldx, _p(weight, T), _p(bias, T),
                                         ptr(y, T), ptr(mean, T), ptr(rstd, T), float(eps), _nt(y.numel()))
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.has_bias, ctx.ldx = bias is not None, ldx
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        lib, T, suf = _lib_t(x)
        B, H, L = x.shape
        g, ldg = _rows(g)
        gx = torch.empty(x.shape, dtype=x.dtype)
        want_w = weight is not None and ctx.needs_input_grad[1]
        want_b = ctx.has_bias and ctx.needs_input_grad[2]
        nch = -(-L // 128)                                     # LN_CHUNK of fused.c
        part = torch.empty(2, B * nch, H, dtype=x.dtype) if want_w or want_b else None
        gw = torch.empty(H, dtype=x.dtype) if want_w else None
        gb = torch.empty(H, dtype=x.dtype) if want_b else None
        getattr(lib, f"fb_ln_bwd_{suf}")(B, H, L, ptr(x, T), ctx.ldx, _p(weight, T), ptr(mean, T),
                                         ptr(rstd, T), ptr(g, T), ldg, ptr(gx, T), _p(part, T),
                                         _p(gw, T), _p(gb, T), _nt(gx.numel()))
        return gx, gw, gb, None


class ActDrop:
    """dropout(act(y)) as the epilogue of the FFT convolution y = K * u (``fftconv.conv``,
    ``kernel.fft_conv``, ``S4D.conv_hl``): the same values, mask and gradients as
    ``act_dropout(y, act, p, seed, tied)``, without a pass of its own over y in memory. The
    convolution calls ``forward_rows`` on each chunk of rows of its output while the chunk is in
    cache, and in backward ``backward_rows`` to write the chunk's gradient with respect to y
    where its transform reads it. What the backward reads is kept: GELU (and no activation)
    its input y, ReLU its output (``keeps_input``). Called on a tensor (``self(y)``) it is
    ``act_dropout`` (for a convolution computed without chunks)."""

    def __init__(self, act: str, p: float = 0.0, seed: int | None = None, tied: bool = False):
        self.act = _check_act(act)
        self.thr, self.scale, self.seed = _drop(_check_p(p), seed, tied)
        self.keeps_input = self.act != ACTS["relu"]

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        y = _check(y, "y")
        _lib_t(y)
        return _ActDrop.apply(y, self.act, self.thr, self.scale, self.seed)

    def forward_rows(self, y: torch.Tensor, out: torch.Tensor, keep: torch.Tensor | None, r0: int,
                     threads: int) -> None:
        """out = dropout(act(y)) for a chunk: y (c, H, L) rows of one stride (a view of the
        inverse transform's rows), out and keep (a copy of y, or None) contiguous (c, H, L);
        the chunk's rows are rows r0... of the whole tensor (its dropout mask)."""
        lib, T, suf = _lib_t(y)
        y, ld = _rows(y)
        L = y.shape[-1]
        getattr(lib, f"fb_act_drop_fwd_{suf}")(y.numel() // L, L, ptr(y, T), ld, ptr(out, T), _p(keep, T),
                                               self.act, self.seed, self.thr, self.scale, r0, threads)

    def backward_rows(self, kept: torch.Tensor, g: torch.Tensor, gy: torch.Tensor, r0: int,
                      threads: int) -> None:
        """gy = the gradient with respect to y of a chunk, from g (the output's gradient, rows
        of one stride) and `kept` (the chunk's y, or for ReLU its output; contiguous); gy rows of
        one stride (the head of the convolution's padded buffer)."""
        lib, T, suf = _lib_t(kept)
        g, ldg = _rows(g)
        L = kept.shape[-1]
        ldo = gy.stride(-2) if gy.dim() >= 2 and gy.shape[-2] > 1 else L
        # ReLU from its output z: z > 0 exactly where y > 0 and the element was kept, so
        # g * keep * scale * relu'(z) is the gradient (the mask recomputed is redundant there)
        getattr(lib, f"fb_act_drop_bwd_{suf}")(kept.numel() // L, L, ptr(kept, T), L, ptr(g, T), ldg,
                                               ptr(gy, T), ldo, self.act, self.seed, self.thr, self.scale,
                                               r0, threads)


def fake_quant_rows(x: torch.Tensor, s: float, lo: float, hi: float, relu: bool,
                    need_keep: bool) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The forward of ``quant.fake_quant_act`` in one native pass: (y, keep) with y =
    clamp(floor(x / s + 1/2), lo, hi) s (relu: clamp(., 0, hi) s) and keep (bool, or None
    without `need_keep`) where the straight-through gradient passes; the bits of the torch ops.
    None when the kernel does not apply (not a CPU float32/float64 tensor, tracing or
    compiling, the fused path off; without the library one warning): then the torch ops run."""
    if not (_enabled and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and x.dim() >= 1 and x.numel() > 0 and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing()):
        return None
    if _LIB.get() is None:
        _LIB.warn_unavailable("fake quantization", "using the torch ops", stacklevel=3)
        return None
    lib, T, suf = _lib_t(x)
    x, ld = _rows(x)
    L = x.shape[-1]
    y = torch.empty(x.shape, dtype=x.dtype)
    keep = torch.empty(x.shape, dtype=torch.uint8) if need_keep else None
    getattr(lib, f"fb_fq_fwd_{suf}")(x.numel() // L, L, ptr(x, T), ld, ptr(y, T),
                                     ptr(keep, ctypes.c_uint8) if need_keep else ctypes.POINTER(ctypes.c_uint8)(),
                                     s, lo, hi, int(bool(relu)), _nt(y.numel()))
    return y, (keep.view(torch.bool) if need_keep else None)


# ---- the ops ---------------------------------------------------------------------------------
def act_dropout(x: torch.Tensor, act: str = "gelu", p: float = 0.0, seed: int | None = None,
                tied: bool = False) -> torch.Tensor:
    """dropout(act(x)) of a (B, C, L) tensor (act: none, relu, gelu (exact)); `seed` None: one
    draw of torch's default generator (when p > 0); `tied`: one draw per (b, c) for all of L."""
    a, p = _check_act(act), _check_p(p)
    x = _check(x, "x")
    _lib_t(x)
    return _ActDrop.apply(x, a, *_drop(p, seed, tied))


def mix_tail(m: torch.Tensor, bias: torch.Tensor | None, res: torch.Tensor | None = None,
             glu: bool = True, act: str = "gelu", p: float = 0.0, seed: int | None = None,
             tied: bool = False) -> torch.Tensor:
    """dropout(GLU(m + bias)) (glu; m (B, 2H, L), GLU over axis 1) or dropout(act(m + bias))
    (m (B, H, L)), plus `res` (B, H, L) when given; `tied` as ``act_dropout``."""
    a, p = _check_act(act), _check_p(p)
    m, bias, res = _check_mix(m, bias, res, glu)
    return _MixTail.apply(m, bias, res, bool(glu), a, *_drop(p, seed, tied))


def _check_mix(m, bias, res, glu):
    """(m, bias, res) of a mix tail checked: m (B, C, L), C even for GLU, bias (C,), res (B, H, L)."""
    m = _check(m, "m")
    _lib_t(m)
    B, C, L = m.shape
    if glu and C % 2:
        raise InputError(f"GLU needs an even number of channels in m, got {C}")
    H = C // 2 if glu else C
    bias = _param(bias, C, "bias", m)
    if res is not None:
        res = _check(res, "res")
        if tuple(res.shape) != (B, H, L) or res.dtype != m.dtype:
            raise InputError(f"res must be a ({B}, {H}, {L}) {m.dtype} tensor, got "
                             f"{tuple(res.shape)} {res.dtype}")
    return m, bias, res


def channel_stats(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, biased variance) per channel of m (B, C, L) over (b, l), as a batch norm's training
    statistics (accumulated in double; the same bits for any thread count)."""
    m = _check(m, "m")
    lib, T, suf = _lib_t(m)
    m = m.contiguous()
    B, C, L = m.shape
    mean, var = torch.empty(C, dtype=m.dtype), torch.empty(C, dtype=m.dtype)
    part = torch.empty(B * C * 2, dtype=torch.float64)
    getattr(lib, f"fb_chstat_{suf}")(B, C, L, ptr(m, T), ptr(part, ctypes.c_double), ptr(mean, T),
                                     ptr(var, T), _nt(m.numel()))
    return mean, var


def norm_mix_tail(m: torch.Tensor, bias: torch.Tensor | None, norm: torch.nn.BatchNorm1d,
                  res: torch.Tensor | None = None, glu: bool = True, act: str = "gelu", p: float = 0.0,
                  seed: int | None = None, tied: bool = False) -> torch.Tensor:
    """``mix_tail`` after a batch norm of the mixing product in training mode:
    dropout(f(norm(m + bias))) [+ res], m (B, C, L) without its bias. The statistics are the
    batch's (over b and l); `norm`'s running statistics are updated as ``nn.BatchNorm1d``'s
    (the mean of m + bias, the unbiased variance). In eval mode, or for a norm without running
    statistics, use the module itself."""
    a, p = _check_act(act), _check_p(p)
    _check_tied(tied)
    m, bias, res = _check_mix(m, bias, res, glu)
    B, C, L = m.shape
    if not isinstance(norm, torch.nn.BatchNorm1d) or norm.num_features != C:
        raise InputError(f"norm must be a BatchNorm1d of {C} features, got {norm!r}")
    if not norm.training or not norm.track_running_stats:
        raise InputError("norm_mix_tail runs a batch norm in training mode with running statistics")
    if B * L < 2:
        raise InputError(f"a batch norm in training needs more than one value per channel, got {B * L}")
    m = m.contiguous()
    mean, var = channel_stats(m.detach())
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        f = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
        norm.running_mean.mul_(1 - f).add_(mean if bias is None else mean + bias.detach(), alpha=f)
        norm.running_var.mul_(1 - f).add_(var * (B * L / (B * L - 1)), alpha=f)
    w = _param(norm.weight, C, "norm weight", m) if norm.affine else None
    b = _param(norm.bias, C, "norm bias", m) if norm.affine else None
    return _NormMixTail.apply(m, mean, var, w, b, bias, res, float(norm.eps), bool(glu), a,
                              *_drop(p, seed, tied))


def layer_norm_ch(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                  eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm of x (B, H, L) over axis 1 (the channels), as ``F.layer_norm`` of x.transpose(1, 2)."""
    x = _check(x, "x")
    _lib_t(x)
    if x.shape[1] < 1:
        raise InputError("x must have at least one channel")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 <= eps < float("inf"):
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    return _LayerNormCh.apply(x, _param(weight, x.shape[1], "weight", x),
                              _param(bias, x.shape[1], "bias", x), float(eps))
