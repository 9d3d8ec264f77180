"""The native kernels of hardware-aware training (scan.c), with their own backward.

``block_scan`` runs the S4D layer's recurrence ``w_t = DAC(ADC(A w_(t-1) + b v_t))`` over the
whole sequence in C, and its backward (straight-through through the roundings, zero where a
converter clipped) in C as well: the Python loop over time of the reference
(``HwSequenceModel(scan="loop")``) costs ~10 torch calls per token. ``converter`` (DAC / ADC of a
matrix-vector product with its range and gain), ``amax_abs`` (the range trackers) and
``write_noise_sum`` are the elementwise torch passes around it fused into one pass each, with
the torch ops' bits (tests/test_crossbar_scan.py).

The library is compiled once per machine by the C toolchain (``edgessm.toolchain``, cached by
source, flags, compiler and CPU). Without a compiler the model falls back to the reference loop, with one
warning (``available()`` says why).
"""
from __future__ import annotations

import ctypes
import functools
import threading
import weakref
from pathlib import Path

import torch

from ...errors import EdgessmError
from ...toolchain import NativeLib, ptr

_SRC = Path(__file__).with_name("scan.c")
# IEEE results: no -ffast-math (the converters' floor(x + 0.5) must match torch's exactly);
# no traps and no errno let the compiler vectorize the compares and floor
_FLAGS = ["-O3", "-march=native", "-fno-fast-math", "-fno-trapping-math", "-fno-math-errno", "-fPIC", "-shared", "-std=c99"]


def _bind(lib):
    U8 = ctypes.POINTER(ctypes.c_uint8)
    I8 = ctypes.POINTER(ctypes.c_int8)
    for suf, T in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        P = ctypes.POINTER(T)
        f = getattr(lib, f"hw_scan_fwd_{suf}")
        f.restype = ctypes.c_int64
        f.argtypes = [ctypes.c_int] * 4 + [P, P, P] + [ctypes.c_int] * 4 + [P, P, P, I8, U8] + [ctypes.c_int] * 2
        g = getattr(lib, f"hw_scan_bwd_{suf}")
        g.restype = ctypes.c_int
        g.argtypes = [ctypes.c_int] * 4 + [P, P, P, I8, ctypes.c_int, U8, P, P, P] + [ctypes.c_int] * 3
        for name in ("hw_to_hlb", "hw_to_blh"):
            f = getattr(lib, f"{name}_{suf}")
            f.restype = None
            f.argtypes = [ctypes.c_int] * 4 + [P, P, ctypes.c_int]
        f = getattr(lib, f"hw_amax_abs_{suf}")
        f.restype = None
        f.argtypes = [ctypes.c_int64, ctypes.c_int, P, P]
        f = getattr(lib, f"hw_conv_fwd_{suf}")
        f.restype = ctypes.c_int64
        f.argtypes = [ctypes.c_int64, ctypes.c_int, P, T, P, T, T, P, U8, ctypes.c_int]
        f = getattr(lib, f"hw_conv_bwd_{suf}")
        f.restype = None
        f.argtypes = [ctypes.c_int64, P, U8, T, T, P, ctypes.c_int]
        f = getattr(lib, f"hw_write_noise_{suf}")
        f.restype = None
        f.argtypes = [ctypes.c_int64, P, P, P] + [T] * 5 + [P]


_LIB = NativeLib(_SRC, _FLAGS + ["-fopenmp"], _FLAGS, bind=_bind,   # channels over threads; else one
                 purpose="the crossbar's native hardware-aware scan")


def available() -> tuple[bool, str]:
    """(True, "") when the native scan can run here, else (False, the reason)."""
    return _LIB.available()


def warn_fallback():
    _LIB.warn_unavailable("crossbar hardware-aware scan", "using the Python loop over time (slow)", stacklevel=3)


def _u8(t: torch.Tensor):
    return ptr(t, ctypes.c_uint8)


def _p(t, T):
    """ptr, or NULL for None."""
    return ptr(t, T) if t is not None else ctypes.POINTER(T)()


class _Pool:
    """The large buffers of the scan, reused from one call and one training step to the next:
    what it keeps for its backward (states, masks, its inputs: ~8 MB per layer for the fsdd
    model) and its layout copies. Fresh memory costs a page fault per 4 kB on first touch, a
    large share of the scan's forward without the pool. A kept buffer comes back when the autograd node
    that holds it is freed (nothing can read it any more), a layout copy when it has been read;
    at most `keep` per shape and dtype wait here."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self.free: dict = {}
        self.lock = threading.Lock()

    def take(self, shape, dtype) -> torch.Tensor:
        with self.lock:
            lst = self.free.get((tuple(shape), dtype))
            if lst:
                return lst.pop()
        return torch.empty(shape, dtype=dtype)

    def give(self, *ts):
        with self.lock:
            for t in ts:
                if t is not None:
                    lst = self.free.setdefault((tuple(t.shape), t.dtype), [])
                    if len(lst) < self.keep:
                        lst.append(t)

    def clear(self):
        with self.lock:
            self.free.clear()


_POOL = _Pool()


def _native(dt):
    return (_LIB.get(), ctypes.c_float if dt == torch.float32 else ctypes.c_double,
            "f32" if dt == torch.float32 else "f64")


def _to_hlb(x: torch.Tensor, Bp: int) -> torch.Tensor:
    """(B, L, H) -> (H, L, Bp), the padding lanes zero (scan.c's layout)."""
    lib, T, suf = _native(x.dtype)
    B, L, H = x.shape
    x = x.contiguous()
    out = _POOL.take((H, L, Bp), x.dtype)
    getattr(lib, f"hw_to_hlb_{suf}")(B, L, H, Bp, ptr(x, T), ptr(out, T), torch.get_num_threads())
    return out


def _to_blh(x: torch.Tensor, B: int) -> torch.Tensor:
    """(H, L, Bp) -> (B, L, H), the first B lanes."""
    lib, T, suf = _native(x.dtype)
    H, L, Bp = x.shape
    out = torch.empty(B, L, H, dtype=x.dtype)
    getattr(lib, f"hw_to_blh_{suf}")(B, L, H, Bp, ptr(x, T), ptr(out, T), torch.get_num_threads())
    return out


class _Scan(torch.autograd.Function):
    """M (H, K, K), v (B, L, H) -> Y (B, L, H), all contiguous; inside, scan.c's layout
    (H, L, Bp) with the batch innermost, padded to Bp (a multiple of 8) lanes."""

    @staticmethod
    def forward(ctx, M, v, fs, adc, dac, qa, qd, counter, pairs, dith=None, sparse=False):
        B, L, H = v.shape
        n2 = M.shape[-1] - 1
        Bp = B + (-B % 8)                  # the kernel runs 8 batch rows per SIMD step
        dt = v.dtype
        lib, T, suf = _native(dt)
        Mc = M.detach().contiguous()
        Vc = _to_hlb(v.detach(), Bp)
        fsc = fs.detach().to(dt).contiguous()
        Y = _POOL.take(Vc.shape, dt)
        # what the backward needs: the states w_t, as the DAC's int8 codes when there is a DAC of
        # at most 8 bits (a quarter of the memory), and the straight-through masks
        grad = any(ctx.needs_input_grad[:2])
        shape = (H, L, n2, Bp)
        codes = _POOL.take(shape, torch.int8) if grad and dac and qd <= 127 else None
        W = _POOL.take(shape, dt) if grad and codes is None else None
        mask = _POOL.take(shape, torch.uint8) if grad else None
        sat = getattr(lib, f"hw_scan_fwd_{suf}")(Bp, L, H, n2, ptr(Mc, T), ptr(Vc, T), ptr(fsc, T),
                                                 int(adc), int(dac), int(qa), int(qd), _p(dith, T), ptr(Y, T),
                                                 _p(W, T), _p(codes, ctypes.c_int8), _p(mask, ctypes.c_uint8),
                                                 int(sparse), torch.get_num_threads())
        if sat < 0:
            raise MemoryError("native crossbar scan: out of memory")
        counter.append(int(sat))
        if grad:
            ctx.save_for_backward(Mc, Vc, W, codes, mask)
            weakref.finalize(ctx, _POOL.give, Vc, W, codes, mask)     # back to the pool with the node
        else:
            _POOL.give(Vc)
        ctx.B, ctx.qd, ctx.pairs, ctx.sparse = B, int(qd), bool(pairs), bool(sparse)
        y = _to_blh(Y, B)
        _POOL.give(Y)
        return y

    @staticmethod
    def backward(ctx, gY):
        M, V, W, codes, mask = ctx.saved_tensors
        H, L, n2, Bp = mask.shape
        lib, T, suf = _native(V.dtype)
        gYc = _to_hlb(gY.to(V.dtype), Bp)
        gV = _POOL.take(V.shape, V.dtype)
        gM = torch.empty_like(M)
        if getattr(lib, f"hw_scan_bwd_{suf}")(Bp, L, H, n2, ptr(M, T), ptr(V, T), _p(W, T),
                                              _p(codes, ctypes.c_int8), ctx.qd, _u8(mask), ptr(gYc, T),
                                              ptr(gV, T), ptr(gM, T), int(ctx.pairs), int(ctx.sparse),
                                              torch.get_num_threads()):
            raise MemoryError("native crossbar scan: out of memory")
        gv = _to_blh(gV, ctx.B)
        _POOL.give(gYc, gV)
        return gM, gv, None, None, None, None, None, None, None, None, None


@functools.lru_cache(maxsize=8)
def pair_structure(K: int) -> torch.Tensor:
    """(K, K) bool: the entries a block of complex pairs can have (``hw.block_matrix``): the
    2 x 2 blocks of the states p and n2/2 + p, the input column, the output row. Cached per K:
    do not modify the result."""
    n2 = K - 1
    n = n2 // 2
    m = torch.zeros(K, K, dtype=torch.bool)
    r = torch.arange(n2)
    p = r % n
    m[r, p] = True
    m[r, n + p] = True
    m[:, n2] = True
    m[n2, :] = True
    return m


def block_scan(M: torch.Tensor, v: torch.Tensor, fs: torch.Tensor, adc_bits: int | None,
               dac_bits: int | None, pairs: bool = False,
               dither: torch.Tensor | None = None, sparse: bool = False) -> tuple[torch.Tensor, int]:
    """The S4D layer's output column before its ADC, y (B, L, H), and the number of ADC
    saturations of the state columns.

    M (H, K, K) (out, in): the block matrices [[A, b], [c, d]] (K = n2 + 1); v (B, L, H): the
    DAC'd inputs; fs (H, n2): the state ADC full scales; adc_bits / dac_bits: None skips that
    converter on the state (calibration: no ADC; analog state: no DAC).

    pairs: M's gradient only at the entries a block of complex pairs can have (``hw.block_matrix``:
    the 2 x 2 blocks of the states p and n2/2 + p, the b column, the c row, d), 0 elsewhere,
    for a caller whose M has constant zeros there (its gradient there goes nowhere): a quarter
    of the products of the full gradient for n2 = 16.

    dither (H, L, n2): the state's rounding offsets U in (0, 1) (``hw.dither_offsets``), the
    DAC rounding floor(x qd + U) instead of floor(x qd + 1/2); needs a DAC and no state ADC.

    sparse: M is exactly 0 outside the complex-pair structure (:func:`pair_structure`; a
    digital recurrence, or blocks without write noise): forward and backward skip those zeros,
    3 products per state row instead of K, the same values. Checked; needs pairs."""
    if _LIB.get() is None:
        raise EdgessmError(f"native crossbar scan unavailable: {_LIB.why}")
    if v.dtype not in (torch.float32, torch.float64) or M.dtype != v.dtype:
        raise EdgessmError(f"native crossbar scan: float32 or float64 inputs of one dtype, got {M.dtype}, {v.dtype}")
    if v.device.type != "cpu":
        raise EdgessmError(f"native crossbar scan runs on CPU tensors, got {v.device}")
    qa = (1 << (adc_bits - 1)) - 1 if adc_bits else 0
    qd = (1 << (dac_bits - 1)) - 1 if dac_bits else 0
    counter: list[int] = []
    if pairs and (M.shape[-1] - 1) % 2:
        raise EdgessmError(f"native crossbar scan: pairs needs an even number of states, got {M.shape[-1] - 1}")
    if sparse:
        if not pairs:
            raise EdgessmError("native crossbar scan: sparse needs pairs (a block of complex pairs)")
        if bool((M.detach()[:, ~pair_structure(M.shape[-1])] != 0).any()):
            raise EdgessmError("native crossbar scan: sparse, but M has entries outside the complex-pair "
                               "structure (write noise on the block?)")
    if dither is not None:
        H, L, n2 = M.shape[0], v.shape[1], M.shape[-1] - 1
        if adc_bits is not None or dac_bits is None:
            raise EdgessmError("native crossbar scan: a dithered state needs a DAC and no state ADC")
        if tuple(dither.shape) != (H, L, n2) or dither.dtype != v.dtype:
            raise EdgessmError(f"native crossbar scan: dither must be ({H}, {L}, {n2}) of {v.dtype}, got "
                               f"{tuple(dither.shape)} of {dither.dtype}")
        dither = dither.detach().contiguous()
    Y = _Scan.apply(M, v, fs, adc_bits is not None, dac_bits is not None, qa, qd, counter, bool(pairs), dither,
                    bool(sparse))
    return Y, counter[0]


def _scalar(t, dt) -> float:
    """A one-value tensor (or None: 1) as the Python float of its value in dtype dt."""
    if t is None:
        return 1.0
    t = torch.as_tensor(t).detach()
    return float(t if t.dtype == dt else t.to(dt))


class _Conv(torch.autograd.Function):
    """scan.c's hw_conv_fwd / hw_conv_bwd (see there) on x (..., cols)."""

    @staticmethod
    def forward(ctx, x, pre, fs, q, post, counter):
        dt = x.dtype
        lib, T, suf = _native(dt)
        xc = x.detach().contiguous()
        cols = xc.shape[-1] if xc.dim() else 1
        rows = xc.numel() // max(cols, 1)
        if isinstance(fs, (int, float)):
            fsc = torch.full((cols,), float(fs), dtype=dt)
        else:
            fsc = fs.detach().reshape(-1)
            if fsc.numel() not in (1, cols):
                raise EdgessmError(f"converter full scale: one value or one per column ({cols}), got {fsc.numel()}")
            fsc = fsc.to(dt).expand(cols).contiguous()
        p, z = _scalar(pre, dt), _scalar(post, dt)
        out = torch.empty_like(xc)
        mask = torch.empty(xc.shape, dtype=torch.uint8)
        sat = getattr(lib, f"hw_conv_fwd_{suf}")(rows, cols, ptr(xc, T), p, ptr(fsc, T), float(q), z,
                                                 ptr(out, T), _u8(mask), torch.get_num_threads())
        counter.append(int(sat))
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(mask)
            ctx.pz = (p, z)
        return out

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        p, z = ctx.pz
        lib, T, suf = _native(g.dtype)
        gc = g.contiguous()
        out = torch.empty_like(gc)
        getattr(lib, f"hw_conv_bwd_{suf}")(gc.numel(), ptr(gc, T), _u8(mask), p, z, ptr(out, T),
                                           torch.get_num_threads())
        return out, None, None, None, None, None


def native_ok(x: torch.Tensor) -> bool:
    """Whether the native kernels take x: a CPU float32 / float64 tensor, and the library built."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and _LIB.get() is not None


def converter(x: torch.Tensor, full_scale, bits: int, pre=None, post=None) -> tuple[torch.Tensor, int]:
    """The fused signed converter: (out, saturations), out = C(x / pre) * post with C the
    converter of ``hw.fake_converter`` (clip to [-fs, fs], round half up to 2**(bits-1) - 1
    steps per side, straight-through gradient), in one pass (scan.c) and with the same float
    operations in the same order as the torch ops ``fake_converter(x / pre, fs, bits) * post``,
    so the same bits. full_scale: a number or a tensor of one value per column (last dim);
    pre, post: None or one-value tensors without gradient; saturations: the count of
    |x / pre| > fs."""
    if not native_ok(x):
        raise EdgessmError(f"native crossbar converter: a CPU float32 / float64 tensor, got {x.dtype} on {x.device}")
    q = (1 << (bits - 1)) - 1
    counter: list[int] = []
    out = _Conv.apply(x, pre, full_scale, float(q), post, counter)
    return out, counter[0]


def amax_abs(x: torch.Tensor) -> torch.Tensor:
    """max |x| over all but the last dim, one pass (x.abs().amax(all but last) in torch)."""
    if not native_ok(x):
        raise EdgessmError(f"native crossbar amax: a CPU float32 / float64 tensor, got {x.dtype} on {x.device}")
    lib, T, suf = _native(x.dtype)
    xc = x.detach().contiguous()
    cols = xc.shape[-1]
    out = torch.empty(cols, dtype=x.dtype)
    getattr(lib, f"hw_amax_abs_{suf}")(xc.numel() // max(cols, 1), cols, ptr(xc, T), ptr(out, T))
    return out


def write_noise_sum(q: torch.Tensor, ep: torch.Tensor, em: torch.Tensor, acc: torch.Tensor, gmin: float,
                    win: float, s0: float, slope: float, kf: float):
    """acc += the programming error of the pairs for the draws ep, em (scan.c's hw_write_noise,
    the torch ops of ``hw.write_noise`` without write-verify, in one pass). In place on acc."""
    lib, T, suf = _native(q.dtype)
    qc, pc, mc = q.detach().contiguous(), ep.contiguous(), em.contiguous()
    if not acc.is_contiguous() or acc.dtype != q.dtype or acc.shape != q.shape:
        raise EdgessmError("write_noise_sum: acc must be a contiguous tensor of q's shape and dtype")
    getattr(lib, f"hw_write_noise_{suf}")(qc.numel(), ptr(qc, T), ptr(pc, T), ptr(mc, T), gmin, win, s0, slope,
                                          kf, ptr(acc, T))
