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
from ...toolchain import NativeLib

_SRC = Path(__file__).with_name("scan.c")
# IEEE results: no -ffast-math (the converters' floor(x + 0.5) must match torch's exactly);
# no traps and no errno let the compiler vectorize the compares and floor
_FLAGS = ["-O3", "-march=native", "-fno-fast-math", "-fno-trapping-math", "-fno-math-errno", "-fPIC", "-shared", "-std=c99"]


def _bind(lib):
    # pointers as void *: the callers pass tensors' data_ptr() (or None for NULL), which ctypes
    # converts without the cost of a typed pointer object per argument
    U8 = I8 = P = ctypes.c_void_p
    for suf, T in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
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
        f = getattr(lib, f"hw_in_hlb_{suf}")
        f.restype = ctypes.c_int
        f.argtypes = [ctypes.c_int] * 4 + [P, T, T, P, U8, ctypes.c_int]
        f = getattr(lib, f"hw_out_blh_{suf}")
        f.restype = ctypes.c_int64
        f.argtypes = [ctypes.c_int] * 5 + [P, P, T, T, P, U8, P, ctypes.c_int]
        f = getattr(lib, f"hw_gout_hlb_{suf}")
        f.restype = None
        f.argtypes = [ctypes.c_int] * 5 + [P, U8, T, P, ctypes.c_int]
        f = getattr(lib, f"hw_gin_blh_{suf}")
        f.restype = ctypes.c_int
        f.argtypes = [ctypes.c_int] * 4 + [P, U8, T, P, ctypes.c_int]


_LIB = NativeLib(_SRC, _FLAGS + ["-fopenmp"], _FLAGS, bind=_bind,   # channels over threads; else one
                 purpose="the crossbar's native hardware-aware scan")


def available() -> tuple[bool, str]:
    """(True, "") when the native scan can run here, else (False, the reason)."""
    return _LIB.available()


def warn_fallback():
    _LIB.warn_unavailable("crossbar hardware-aware scan", "using the Python loop over time (slow)", stacklevel=3)


def _a(t):
    """The address of a (contiguous) tensor's data for a void * argument, None (NULL) for None.
    The tensor must outlive the call: never pass a temporary (``_a(x.contiguous())``)."""
    return None if t is None else t.data_ptr()


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
    getattr(lib, f"hw_to_hlb_{suf}")(B, L, H, Bp, _a(x), _a(out), torch.get_num_threads())
    return out


def _to_blh(x: torch.Tensor, B: int) -> torch.Tensor:
    """(H, L, Bp) -> (B, L, H), the first B lanes."""
    lib, T, suf = _native(x.dtype)
    H, L, Bp = x.shape
    out = torch.empty(B, L, H, dtype=x.dtype)
    getattr(lib, f"hw_to_blh_{suf}")(B, L, H, Bp, _a(x), _a(out), torch.get_num_threads())
    return out


class _Scan(torch.autograd.Function):
    """M (H, K, K), v (B, L, H) -> Y (B, L, H), all contiguous; inside, scan.c's layout
    (H, L, Bp) with the batch innermost, padded to Bp (a multiple of 8) lanes.

    io (``layer_scan``): v is the layer's input before its DAC and Y its output after its ADC,
    for the tokens t0 .. L-1 (B, L - t0, H); both converters run in the layout changes
    (hw_in_hlb, hw_out_blh), with the bits of ``converter`` around the scan. io = (pre, qi, fs_out,
    qo, post, t0, side): the DAC's range and steps, the ADC's full scales (H,), steps and gain,
    the first token out, and a dict that receives the ADC's saturations ("sat") and each
    channel's peak |Y| before it ("peak", (H,))."""

    @staticmethod
    def forward(ctx, M, v, fs, adc, dac, qa, qd, counter, pairs, dith=None, sparse=False, io=None):
        B, L, H = v.shape
        n2 = M.shape[-1] - 1
        Bp = B + (-B % 8)                  # the kernel runs 8 batch rows per SIMD step
        dt = v.dtype
        lib, T, suf = _native(dt)
        threads = torch.get_num_threads()
        Mc = M.detach().contiguous()
        grad = any(ctx.needs_input_grad[:2])
        mi = None
        if io is None:
            Vc = _to_hlb(v.detach(), Bp)
        else:                              # the input DAC in the layout change
            pre, qi = io[0], io[1]
            Vc = _POOL.take((H, L, Bp), dt)
            mi = _POOL.take((H, L, Bp), torch.uint8)
            vc = v.detach().contiguous()      # (a name: the data must live through the call)
            if getattr(lib, f"hw_in_hlb_{suf}")(B, L, H, Bp, _a(vc), pre, qi, _a(Vc), _a(mi), threads):
                raise MemoryError("native crossbar scan: out of memory")
        fsc = fs.detach().to(dt).contiguous()
        Y = _POOL.take(Vc.shape, dt)
        # what the backward needs: the states w_t, as the DAC's int8 codes when there is a DAC of
        # at most 8 bits (a quarter of the memory), and the straight-through masks
        shape = (H, L, n2, Bp)
        codes = _POOL.take(shape, torch.int8) if grad and dac and qd <= 127 else None
        W = _POOL.take(shape, dt) if grad and codes is None else None
        mask = _POOL.take(shape, torch.uint8) if grad else None
        sat = getattr(lib, f"hw_scan_fwd_{suf}")(Bp, L, H, n2, _a(Mc), _a(Vc), _a(fsc),
                                                 int(adc), int(dac), int(qa), int(qd), _a(dith), _a(Y),
                                                 _a(W), _a(codes), _a(mask),
                                                 int(sparse), threads)
        if sat < 0:
            raise MemoryError("native crossbar scan: out of memory")
        counter.append(int(sat))
        mo = None
        if io is None:
            y = _to_blh(Y, B)
        else:                              # the output ADC in the layout change
            fso, qo, post, t0, side = io[2:]
            y = torch.empty(B, L - t0, H, dtype=dt)
            mo = _POOL.take((H, L - t0, Bp), torch.uint8)
            peak = torch.empty(H, dtype=dt)
            fsoc = fso.detach().to(dt).contiguous()
            so = getattr(lib, f"hw_out_blh_{suf}")(B, L, H, Bp, t0, _a(Y), _a(fsoc), qo, post, _a(y), _a(mo),
                                                   _a(peak), threads)
            if so < 0:
                raise MemoryError("native crossbar scan: out of memory")
            side["sat"], side["peak"] = int(so), peak
        _POOL.give(Y)
        if grad:
            ctx.save_for_backward(Mc, Vc, W, codes, mask, mi, mo)
            weakref.finalize(ctx, _POOL.give, Vc, W, codes, mask, mi, mo)     # back to the pool with the node
        else:
            _POOL.give(Vc, mi, mo)
        ctx.B, ctx.qd, ctx.pairs, ctx.sparse = B, int(qd), bool(pairs), bool(sparse)
        ctx.io = None if io is None else (io[0], io[4], io[5])         # pre, post, t0
        return y

    @staticmethod
    def backward(ctx, gY):
        M, V, W, codes, mask, mi, mo = ctx.saved_tensors
        H, L, n2, Bp = mask.shape
        lib, T, suf = _native(V.dtype)
        threads = torch.get_num_threads()
        if ctx.io is None:
            gYc = _to_hlb(gY.to(V.dtype), Bp)
        else:                              # the output ADC's gradient in the layout change
            pre, post, t0 = ctx.io
            gYc = _POOL.take((H, L, Bp), V.dtype)
            gy = gY.to(V.dtype).contiguous()
            getattr(lib, f"hw_gout_hlb_{suf}")(ctx.B, L, H, Bp, t0, _a(gy), _a(mo), post, _a(gYc), threads)
        gV = _POOL.take(V.shape, V.dtype)
        gM = torch.empty_like(M)
        if getattr(lib, f"hw_scan_bwd_{suf}")(Bp, L, H, n2, _a(M), _a(V), _a(W),
                                              _a(codes), ctx.qd, _a(mask), _a(gYc),
                                              _a(gV), _a(gM), int(ctx.pairs), int(ctx.sparse),
                                              threads):
            raise MemoryError("native crossbar scan: out of memory")
        if ctx.io is None:
            gv = _to_blh(gV, ctx.B)
        else:                              # the input DAC's gradient in the layout change
            gv = torch.empty(ctx.B, L, H, dtype=V.dtype)
            if getattr(lib, f"hw_gin_blh_{suf}")(ctx.B, L, H, Bp, _a(gV), _a(mi), pre, _a(gv), threads):
                raise MemoryError("native crossbar scan: out of memory")
        _POOL.give(gYc, gV)
        return gM, gv, None, None, None, None, None, None, None, None, None, None


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
               dither: torch.Tensor | None = None, sparse: bool = False, io=None) -> tuple[torch.Tensor, int]:
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
    3 products per state row instead of K, the same values. Checked; needs pairs.

    io: the converters of ``layer_scan`` (its internal form)."""
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
                    bool(sparse), io)
    return Y, counter[0]


def layer_scan(M: torch.Tensor, u: torch.Tensor, r, fs: torch.Tensor, fs_out: torch.Tensor, dac_bits: int,
               adc_bits: int, state_adc_bits: int | None, state_dac_bits: int | None, pairs: bool = False,
               dither: torch.Tensor | None = None, sparse: bool = False,
               t0: int = 0) -> tuple[torch.Tensor, int, torch.Tensor]:
    """An S4D layer on the arrays: its input DAC, ``block_scan`` and its output ADC, with the
    converters inside the scan's layout changes (one pass fewer each way than ``converter``
    around ``block_scan``, the same bits). u (B, L, H): the input; r: its DAC range (a number or
    a one-value tensor), also the output's digital gain; fs (H, n2): the state ADC full scales,
    fs_out (H,): the output ADC's; dac_bits / adc_bits: the input DAC's and the output ADC's;
    state_adc_bits / state_dac_bits, pairs, dither, sparse: as ``block_scan``; t0: the first
    token out. Returns (y (B, L - t0, H), the ADC saturations of the states and the output,
    the peak |output| per channel before its ADC over those tokens (H,))."""
    L = u.shape[1]
    if not 0 <= t0 < L:
        raise EdgessmError(f"native crossbar scan: first token out {t0} outside the {L} tokens")
    if tuple(fs_out.shape) != (M.shape[0],):
        raise EdgessmError(f"native crossbar scan: fs_out must be ({M.shape[0]},), got {tuple(fs_out.shape)}")
    dt = u.dtype
    side: dict = {}
    io = (_scalar(r, dt), float((1 << (dac_bits - 1)) - 1), fs_out, float((1 << (adc_bits - 1)) - 1),
          _scalar(r, dt), int(t0), side)
    y, sat = block_scan(M, u, fs, state_adc_bits, state_dac_bits, pairs=pairs, dither=dither, sparse=sparse,
                        io=io)
    return y, sat + side["sat"], side["peak"]


def _scalar(t, dt) -> float:
    """A one-value tensor (or None: 1) as the Python float of its value in dtype dt."""
    if t is None:
        return 1.0
    if isinstance(t, torch.Tensor) and t.dtype == dt:
        return t.item()
    t = torch.as_tensor(t).detach()
    return float(t if t.dtype == dt else t.to(dt))


@functools.lru_cache(maxsize=64)
def _full(cols: int, value: float, dt) -> torch.Tensor:
    """(cols,) of one value, cached (read only)."""
    return torch.full((cols,), value, dtype=dt)


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
            fsc = _full(cols, float(fs), dt)
        elif fs.dtype == dt and fs.dim() == 1 and fs.shape[0] == cols and fs.is_contiguous():
            fsc = fs.detach()
        else:
            fsc = fs.detach().reshape(-1)
            if fsc.numel() not in (1, cols):
                raise EdgessmError(f"converter full scale: one value or one per column ({cols}), got {fsc.numel()}")
            fsc = fsc.to(dt).expand(cols).contiguous()
        p, z = _scalar(pre, dt), _scalar(post, dt)
        out = torch.empty_like(xc)
        mask = torch.empty(xc.shape, dtype=torch.uint8)
        sat = getattr(lib, f"hw_conv_fwd_{suf}")(rows, cols, _a(xc), p, _a(fsc), float(q), z,
                                                 _a(out), _a(mask), torch.get_num_threads())
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
        getattr(lib, f"hw_conv_bwd_{suf}")(gc.numel(), _a(gc), _a(mask), p, z, _a(out),
                                           torch.get_num_threads())
        return out, None, None, None, None, None


class _Mvm(torch.autograd.Function):
    """``array_mvm``: x (..., in), W (out, in), bias (out,) or None -> y (..., out)."""

    @staticmethod
    def forward(ctx, x, W, bias, r, qd, qa, full_scale, side):
        dt = x.dtype
        lib, T, suf = _native(dt)
        threads = torch.get_num_threads()
        xc = x.detach().contiguous()
        cin, cout = xc.shape[-1], W.shape[0]
        rows = xc.numel() // cin
        conv = getattr(lib, f"hw_conv_fwd_{suf}")
        v = torch.empty(rows, cin, dtype=dt)
        md = torch.empty(rows, cin, dtype=torch.uint8)
        ones = _full(cin, 1.0, dt)
        conv(rows, cin, _a(xc), r, _a(ones), qd, 1.0, _a(v), _a(md), threads)        # the DAC
        Wd = W.detach()
        n = torch.mm(v, Wd.t())
        peak = torch.empty(cout, dtype=dt)
        getattr(lib, f"hw_amax_abs_{suf}")(rows, cout, _a(n), _a(peak))
        fs = full_scale(peak).detach().to(dt).contiguous()
        y = torch.empty(rows, cout, dtype=dt)
        ma = torch.empty(rows, cout, dtype=torch.uint8)
        side["sat"] = int(conv(rows, cout, _a(n), 1.0, _a(fs), qa, r, _a(y), _a(ma), threads))   # the ADC
        if bias is not None:
            y += bias.detach()
        ctx.save_for_backward(v, Wd, md, ma)
        ctx.r, ctx.shape = r, x.shape
        return y.view(*x.shape[:-1], cout)

    @staticmethod
    def backward(ctx, gy):
        v, W, md, ma = ctx.saved_tensors
        lib, T, suf = _native(v.dtype)
        threads = torch.get_num_threads()
        rows, cout = ma.shape
        bwd = getattr(lib, f"hw_conv_bwd_{suf}")
        g = gy.to(v.dtype).contiguous().view(rows, cout)
        gn = torch.empty_like(g)
        bwd(g.numel(), _a(g), _a(ma), 1.0, ctx.r, _a(gn), threads)                     # through the ADC
        gW = torch.mm(gn.t(), v) if ctx.needs_input_grad[1] else None
        gx = None
        if ctx.needs_input_grad[0]:
            gv = torch.mm(gn, W)
            gx = torch.empty_like(gv)
            bwd(gv.numel(), _a(gv), _a(md), ctx.r, 1.0, _a(gx), threads)               # through the DAC
            gx = gx.view(ctx.shape)
        gb = g.sum(0) if ctx.needs_input_grad[2] else None
        return gx, gW, gb, None, None, None, None, None


def array_mvm(x: torch.Tensor, W: torch.Tensor, bias: torch.Tensor | None, r, dac_bits: int, adc_bits: int,
              full_scale) -> tuple[torch.Tensor, int]:
    """An array's matrix-vector products on x (..., in) as one autograd node: y = ADC(DAC(x / r)
    W^T) r + bias, both converters as ``converter`` (the same bits: the DAC with full scale 1,
    the ADC with one full scale per output column and the digital gain r), W (out, in) the
    matrix the array applies. full_scale: peak (out,) -> the ADC's full scales (out,), called
    with the column maxima of |DAC(x / r) W^T| before the ADC (the caller's range tracking).
    Returns (y, the ADC saturations)."""
    if not native_ok(x):
        raise EdgessmError(f"native crossbar products: a CPU float32 / float64 tensor, got {x.dtype} on {x.device}")
    if W.dim() != 2 or x.shape[-1] != W.shape[1] or W.dtype != x.dtype:
        raise EdgessmError(f"native crossbar products: W (out, {x.shape[-1]}) of {x.dtype}, got "
                           f"{tuple(W.shape)} of {W.dtype}")
    side: dict = {}
    y = _Mvm.apply(x, W, bias, _scalar(r, x.dtype), float((1 << (dac_bits - 1)) - 1),
                   float((1 << (adc_bits - 1)) - 1), full_scale, side)
    return y, side["sat"]


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
    getattr(lib, f"hw_amax_abs_{suf}")(xc.numel() // max(cols, 1), cols, _a(xc), _a(out))
    return out


def write_noise_sum(q: torch.Tensor, ep: torch.Tensor, em: torch.Tensor, acc: torch.Tensor, gmin: float,
                    win: float, s0: float, slope: float, kf: float):
    """acc += the programming error of the pairs for the draws ep, em (scan.c's hw_write_noise,
    the torch ops of ``hw.write_noise`` without write-verify, in one pass). In place on acc."""
    lib, T, suf = _native(q.dtype)
    qc, pc, mc = q.detach().contiguous(), ep.contiguous(), em.contiguous()
    if not acc.is_contiguous() or acc.dtype != q.dtype or acc.shape != q.shape:
        raise EdgessmError("write_noise_sum: acc must be a contiguous tensor of q's shape and dtype")
    getattr(lib, f"hw_write_noise_{suf}")(qc.numel(), _a(qc), _a(pc), _a(mc), gmin, win, s0, slope,
                                          kf, _a(acc))
