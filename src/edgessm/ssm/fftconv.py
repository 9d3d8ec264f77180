"""The CPU fast path of the S4D layer's causal FFT convolution (``kernel.fft_conv``).

The same mathematics as ``kernel._FFTConv`` (forward ``y = irfft(U^ K^)``, backward
``du = irfft(G^ conj(K^))``, ``dK = irfft(sum_b G^ conj(U^))``), with three costs removed:

* the FFT-domain products run in C (``fftconv.c``): the forward product in one pass, and both
  backward products in one pass over G^ and U^ (du's product in place in G^'s buffer; the batch
  sum of dK^ in a fixed order, so the gradients do not depend on the thread count), OpenMP over
  channels with ``torch.get_num_threads()`` threads;
* the (B, H) rows run in chunks of ``CHUNK_ROWS`` (pad, transform, product, inverse transform
  of one chunk while it is in cache, instead of each stage passing over the whole tensor), in
  buffers from a pool, reused from one call and one training step to the next instead of fresh
  memory written once per call; the pad is a copy into a buffer whose tail is kept zero;
* the FFTs run with ``ducc0.fft`` when it is installed (the ``fft`` extra; ``EDGESSM_FFT``
  chooses), the chunks shared by one Python thread per torch thread, each computing a whole
  chunk at one thread; else with ``torch.fft``, chunk after chunk at all threads.

Used for CPU float32 and float64 tensors; other devices and dtypes, and tracing (ONNX export,
torch.compile), take the torch path of ``kernel.py``. Without a C compiler the torch path is
used, with one warning (``available()`` says why).
"""
from __future__ import annotations

import collections
import ctypes
import os
import threading
import weakref
from pathlib import Path

import torch

from ..errors import ConfigError
from ..toolchain import NativeLib, ptr

_SRC = Path(__file__).with_name("fftconv.c")
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared", "-std=c99"]


def _bind(lib):
    for suf, T in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        P = ctypes.POINTER(T)
        i64 = ctypes.c_int64
        f = getattr(lib, f"fc_mul_fwd_{suf}")
        f.restype = None
        f.argtypes = [i64, i64, i64, P, P, P, ctypes.c_int]
        g = getattr(lib, f"fc_mul_bwd_{suf}")
        g.restype = None
        g.argtypes = [i64, i64, i64, P, P, P, P, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        f = getattr(lib, f"fc_last_fwd_{suf}")
        f.restype = None
        f.argtypes = [i64, i64, i64, P, P, P, ctypes.c_int]
        g = getattr(lib, f"fc_last_bwd_{suf}")
        g.restype = None
        g.argtypes = [i64, i64, i64, P, P, P, P, P, ctypes.c_int]


_LIB = NativeLib(_SRC, _FLAGS + ["-fopenmp"], _FLAGS, bind=_bind,   # channels over threads; else one
                 purpose="the S4D layer's fused FFT-convolution products")
_TYPES = {torch.float32: ("f32", ctypes.c_float), torch.float64: ("f64", ctypes.c_double)}
_CTYPES = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def available() -> tuple[bool, str]:
    """(True, "") when the native products can run here, else (False, the reason)."""
    return _LIB.available()


def _ducc():
    try:
        import ducc0.fft
    except ImportError:
        return None
    return ducc0.fft


_DUCC = _ducc()
FFT_CHOICES = ("auto", "ducc0", "torch")
# the FFT library of the fast path (environment EDGESSM_FFT): "auto" (ducc0 when installed:
# its training steps measured 1.27-1.57x torch.fft's on an AMD EPYC at 1 and 2 threads, and on an
# AVX-512 Xeon 1.04-1.17x at 2 threads, 0.89-0.99x at 1; benchmarks/RESULTS.md, "Which FFT
# library where"), "ducc0" (when installed), "torch" (torch.fft)
FFT = os.environ.get("EDGESSM_FFT", "auto")
ENABLED = True                    # False: every call takes the torch path (for comparisons)


def check_choice() -> str:
    """The FFT choice in force (``FFT``, from EDGESSM_FFT), checked: a ConfigError when unknown,
    or ducc0 when it is not installed."""
    return _check_fft(FFT)


def _check_fft(name) -> str:
    if name not in FFT_CHOICES:
        raise ConfigError(f"EDGESSM_FFT / fftconv.FFT must be one of {', '.join(FFT_CHOICES)}, got {name!r}")
    if name == "ducc0" and _DUCC is None:
        raise ConfigError("EDGESSM_FFT=ducc0 but ducc0 is not installed (pip install 'edgessm[fft]')")
    return name


def fft_library() -> str:
    """The FFT library of the fast path: "ducc0" or "torch" (``FFT``; "auto": ducc0 when
    installed)."""
    choice = _check_fft(FFT)
    return "torch" if _DUCC is None or choice == "torch" else "ducc0"


def describe() -> str:
    """The fast path's FFT library in words (for logs)."""
    if fft_library() == "ducc0":
        return "ducc0"
    return "torch.fft" + (" (ducc0 not installed)" if _DUCC is None and FFT == "auto" else "")


def fft_primes(lib: str | None = None) -> tuple[int, ...]:
    """The factors of the fused path's FFT lengths for library `lib` (None: fft_library()):
    ducc0 is fastest on 2,3,5-smooth lengths (L = 784: n = 1600 measured ~6% faster than
    1568 = 2^5 7^2, benchmarks/RESULTS.md), torch.fft on 2,3,5,7-smooth ones."""
    return (2, 3, 5) if (lib or fft_library()) == "ducc0" else (2, 3, 5, 7)


def supports(u: torch.Tensor, K: torch.Tensor) -> bool:
    """Whether the fast path takes (u, K): CPU tensors of one dtype, float32 or float64, K (H, L)
    matching u's last two axes; the native library is built (else one warning)."""
    if not (ENABLED and u.device.type == "cpu" and K.device.type == "cpu" and u.dtype == K.dtype
            and u.dtype in _TYPES and K.dim() == 2 and u.dim() >= 2 and u.shape[-2:] == K.shape):
        return False
    if _LIB.get() is None:
        _LIB.warn_unavailable("S4D FFT convolution", "using the torch.fft path (slower on CPU)", stacklevel=3)
        return False
    return True


class _Pool:
    """Large buffers reused across calls, per (shape, dtype, kind). ``padL`` buffers are zero from
    L on (only their head, the first L, is ever written); the others are scratch. A buffer kept for the
    backward comes back when its autograd node is freed; at most `keep` per key wait here."""

    def __init__(self, keep: int = 6):
        self.keep = keep
        self.free: dict = {}
        self.held: dict = {}          # arrays of take_owned, free again
        # arrays of take_owned as their last view is collected: appended without the lock, as
        # the collection can run inside any allocation, also one made while the lock is held
        self.returned: collections.deque = collections.deque()
        self.lock = threading.Lock()

    def take(self, shape, dtype, kind: str = "") -> torch.Tensor:
        key = (tuple(shape), dtype, kind)
        with self.lock:
            lst = self.free.get(key)
            if lst:
                return lst.pop()
        with torch.inference_mode(False):          # a normal tensor, writable in and out of it
            return torch.zeros(shape, dtype=dtype) if kind.startswith("pad") else torch.empty(shape, dtype=dtype)

    def give(self, t: torch.Tensor | None, kind: str = "") -> None:
        if t is None or t.is_inference():          # made under inference_mode: not writable later
            return
        key = (tuple(t.shape), t.dtype, kind)
        with self.lock:
            lst = self.free.setdefault(key, [])
            if len(lst) < self.keep and all(x is not t for x in lst):
                lst.append(t)

    def clear(self) -> None:
        with self.lock:
            self.free.clear()
            self.held.clear()
            self.returned.clear()

    def take_owned(self, shape, dtype) -> torch.Tensor:
        """A scratch tensor whose memory comes back to the pool by itself when the last tensor
        viewing it is freed (its storage holds a numpy view of a pooled array; the pool reuses
        the array once that view is collected): for a result handed out as a view."""
        key = (tuple(shape), dtype, "owned")
        with self.lock:
            while self.returned:
                k, b = self.returned.popleft()
                back = self.held.setdefault(k, [])
                if len(back) < self.keep:
                    back.append(b)
            lst = self.held.get(key)
            base = lst.pop() if lst else None
        if base is None:
            base = torch.empty(shape, dtype=dtype).numpy()
        view = base.view()
        weakref.finalize(view, self._back, key, base)
        return torch.from_numpy(view)

    def _back(self, key, base) -> None:
        self.returned.append((key, base))          # atomic; never waits for the lock


POOL = _Pool()


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _f(t, dtype):
    return ptr(t, _TYPES[dtype][1])


# rows (batch x channels) per chunk, in whole batch elements (at least one): each chunk is
# padded, transformed, multiplied and transformed back while its buffers are in cache, instead of
# each stage passing over the whole (B, H, n) tensor (benchmarks/RESULTS.md, "The convolution in
# chunks of rows": 512 rows measured best of 128-2048, both FFT libraries). Fixed, not derived
# from the thread count, so that the batch sums of dK^ (per chunk, then over the chunks in order)
# do not depend on it.
CHUNK_ROWS = 512
_EXEC: dict = {}


def _spans(R: int, H: int) -> list[tuple[int, int]]:
    c = max(1, CHUNK_ROWS // max(H, 1))
    return [(a, min(R, a + c)) for a in range(0, R, c)]


def _each(fn, spans, lib: str) -> None:
    """fn(a, b, threads) for every span: with ducc0 and more than one thread, the spans are
    shared by a pool of that many Python threads, each computing at one thread (ducc0 and the
    C products release the GIL; one chunk's whole pipeline stays on one core), else in turn
    at all threads (torch.fft threads its own transforms)."""
    T = _threads()
    if lib != "ducc0" or T == 1 or len(spans) == 1:
        for a, b in spans:
            fn(a, b, T)
        return
    key = (os.getpid(), T)                     # a forked child builds its own pool
    ex = _EXEC.get(key)
    if ex is None:
        from concurrent.futures import ThreadPoolExecutor
        ex = _EXEC[key] = ThreadPoolExecutor(T, thread_name_prefix="edgessm-fftconv")
    for f in [ex.submit(fn, a, b, 1) for a, b in spans]:
        f.result()


def _copy_into(dst: torch.Tensor, src: torch.Tensor, lib: str) -> None:
    if lib == "ducc0":                         # numpy's copy releases the GIL (worker threads)
        import numpy as np
        np.copyto(dst.numpy(), src.numpy())
    else:
        dst.copy_(src)


def _r2c(x: torch.Tensor, n: int, out: torch.Tensor, lib: str, threads: int, write=None) -> None:
    """out = rfft(x zero-padded to n) along the last axis; x (c, H, L) any strides. With
    `write`, write(head) fills the padded buffer's head (c, H, L) instead of a copy of x."""
    L = x.shape[-1]
    kind = f"pad{L}"                           # zero from L on: one kind per L
    buf = POOL.take((*x.shape[:-1], n), x.dtype, kind)
    if write is None:
        _copy_into(buf[..., :L], x, lib)
    else:
        write(buf[..., :L])
    if lib == "ducc0":
        _DUCC.r2c(buf.numpy(), axes=(2,), out=out.numpy(), nthreads=threads)
    else:
        torch.fft.rfft(buf, out=out)
    POOL.give(buf, kind)


# ducc0 writes several rows of the inverse transform at once (one per SIMD lane); when the rows
# are a multiple of 4 KiB apart, those writes fall into one set of the L1 cache and evict each
# other: on an AVX-512 Xeon (16 float32 lanes) the inverse transform of a (64, 128, 2048) float32
# tensor took 2.7x as long as with the rows 64 bytes further apart, which gives the same bits
# (benchmarks/RESULTS.md, "Which FFT library where").
ROW_PAD_BYTES = 64


def _row_len(n: int, dtype: torch.dtype, lib: str) -> int:
    """The row length of a buffer the inverse transform of length n writes into: n, or for ducc0
    n plus 64 bytes when n elements are a multiple of 4 KiB (the buffer is used as [..., :n])."""
    size = dtype.itemsize
    return n + ROW_PAD_BYTES // size if lib == "ducc0" and (n * size) % 4096 == 0 else n


def _c2r(X: torch.Tensor, n: int, out: torch.Tensor, lib: str, threads: int) -> None:
    """out (c, H, n) = irfft(X, n) along the last axis; X is overwritten."""
    if lib == "ducc0":
        _DUCC.c2r(X.numpy(), axes=(2,), lastsize=n, forward=False, inorm=2, out=out.numpy(),
                  nthreads=threads, allow_overwriting_input=True)
    else:
        torch.fft.irfft(X, n=n, out=out)


def _conv_fwd(u: torch.Tensor, Kf: torch.Tensor, n: int, lib: str, epilogue=None, keep: bool = True):
    """y = irfft(rfft(u) K^) cropped to L, chunk by chunk: u (R, H, L), Kf (H, F) -> y (R, H, L),
    a strided view of a pooled (R, H, n) buffer (its rows ``_row_len`` long). With an
    `epilogue` (``fused.ActDrop``): its output z (R, H, L) instead, each chunk of y in cache on
    its way, and what its backward keeps (a copy of y, or None; None without `keep`): (z, kept)."""
    R, H, L = u.shape
    dtype, F = u.dtype, n // 2 + 1
    row = _row_len(n, dtype, lib)
    mul = getattr(_LIB.require(), f"fc_mul_fwd_{_TYPES[dtype][0]}")
    if epilogue is None:
        full = POOL.take_owned((R, H, row), dtype)
    else:
        z = torch.empty(R, H, L, dtype=dtype)
        kept = torch.empty(R, H, L, dtype=dtype) if keep and epilogue.keeps_input else None

    def chunk(a, b, t):
        X = POOL.take((b - a, H, F), _CTYPES[dtype])
        _r2c(u[a:b], n, X, lib, t)
        mul(b - a, H, F, _f(X, dtype), _f(Kf, dtype), _f(X, dtype), t)     # in place
        if epilogue is None:
            _c2r(X, n, full[a:b, :, :n], lib, t)
        else:
            Y = POOL.take((b - a, H, row), dtype)
            _c2r(X, n, Y[..., :n], lib, t)
            epilogue.forward_rows(Y[..., :L], z[a:b], None if kept is None else kept[a:b], a * H, t)
            POOL.give(Y)
        POOL.give(X)

    _each(chunk, _spans(R, H), lib)
    return full[..., :L] if epilogue is None else (z, kept)


def _spectrum(K: torch.Tensor, n: int, lib: str) -> torch.Tensor:
    """K^ = rfft(K, n): K (H, L) -> (H, F), a fresh tensor (small; kept for the backward)."""
    Kf = torch.empty(K.shape[0], n // 2 + 1, dtype=_CTYPES[K.dtype])
    _r2c(K.unsqueeze(0), n, Kf.unsqueeze(0), lib, _threads())
    return Kf


class FusedFFTConv(torch.autograd.Function):
    """Causal FFT convolution u (R, H, L), K (H, L) -> (R, H, L), zero-padded to n >= 2L - 1;
    with an epilogue (``fused.ActDrop``), its output of the convolution instead.
    The input's spectrum is not kept: the backward transforms u again, chunk by chunk (one
    transform of a chunk in cache against writing and reading back a (R, H, F) complex tensor)."""

    @staticmethod
    def forward(ctx, u, K, n, lib, epilogue=None):
        u, K = u.detach(), K.detach()
        Kf = _spectrum(K, n, lib)
        if epilogue is None:
            y = _conv_fwd(u, Kf, n, lib)
            ctx.save_for_backward(u if ctx.needs_input_grad[1] else None)
        else:
            y, kept = _conv_fwd(u, Kf, n, lib, epilogue)
            ctx.save_for_backward(u if ctx.needs_input_grad[1] else None, y if kept is None else kept)
        ctx.Kf, ctx.n, ctx.lib, ctx.epilogue = Kf, n, lib, epilogue
        return y

    @staticmethod
    def backward(ctx, gy):
        n, lib, Kf, epi = ctx.n, ctx.lib, ctx.Kf, ctx.epilogue
        need_du, need_dk = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        R, H, L = gy.shape
        dtype, F = Kf.real.dtype, n // 2 + 1
        gy = gy.to(dtype)
        cdt = _CTYPES[dtype]
        spans = _spans(R, H)
        row = _row_len(n, dtype, lib)
        du_full = POOL.take_owned((R, H, row), dtype) if need_du else None
        dKs = torch.empty(len(spans), H, F, dtype=cdt) if need_dk else None
        null = ctypes.POINTER(_TYPES[dtype][1])()
        bwd = getattr(_LIB.require(), f"fc_mul_bwd_{_TYPES[dtype][0]}")
        index = {s: i for i, s in enumerate(spans)}
        u, kept = ctx.saved_tensors if epi is not None else (*ctx.saved_tensors, None)

        def chunk(a, b, t):
            G = POOL.take((b - a, H, F), cdt)
            if epi is None:
                _r2c(gy[a:b], n, G, lib, t)
            else:                          # the epilogue's gradient written into the padded buffer
                _r2c(gy[a:b], n, G, lib, t, lambda head: epi.backward_rows(kept[a:b], gy[a:b], head, a * H, t))
            U = None
            if need_dk:
                U = POOL.take((b - a, H, F), cdt)
                _r2c(u[a:b], n, U, lib, t)
            bwd(b - a, H, F, _f(G, dtype), _f(U, dtype) if need_dk else null, _f(Kf, dtype),
                _f(dKs[index[(a, b)]], dtype) if need_dk else null, int(need_du), int(need_dk), t)
            if need_du:
                _c2r(G, n, du_full[a:b, :, :n], lib, t)
            POOL.give(G)
            POOL.give(U)

        _each(chunk, spans, lib)
        du = du_full[..., :L] if need_du else None
        dK = None
        if need_dk:
            dKf = dKs[0].clone()
            for part in dKs[1:]:                 # the chunks' batch sums, in order
                dKf += part
            dK = torch.empty(1, H, row, dtype=dtype)
            _c2r(dKf.unsqueeze(0), n, dK[..., :n], lib, _threads())
            dK = dK[0, :, :L]
        return du, dK, None, None, None


class LastOutput(torch.autograd.Function):
    """The last output of the causal convolution, u (B, H, L), K (H, L) -> (B, H):
    y = sum_j u_j K_{L-1-j}, in C (``fc_last_*``): one pass over u forward; backward one pass
    writing du and one reading u for dK (its batch sum in order of b, for any thread count)."""

    @staticmethod
    def forward(ctx, u, K):
        B, H, L = u.shape
        dtype = u.dtype
        u = u.detach().contiguous()
        R = K.detach().flip(-1).contiguous()
        y = torch.empty(B, H, dtype=dtype)
        getattr(_LIB.require(), f"fc_last_fwd_{_TYPES[dtype][0]}")(B, H, L, _f(u, dtype), _f(R, dtype),
                                                                 _f(y, dtype), _threads())
        ctx.save_for_backward(u if ctx.needs_input_grad[1] else None, R)
        return y

    @staticmethod
    def backward(ctx, g):
        u, R = ctx.saved_tensors
        H, L = R.shape
        dtype = R.dtype
        g = g.contiguous()
        B = g.shape[0]
        need_du, need_dk = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        du = torch.empty(B, H, L, dtype=dtype) if need_du else None
        dR = torch.empty(H, L, dtype=dtype) if need_dk else None
        null = ctypes.POINTER(_TYPES[dtype][1])()
        getattr(_LIB.require(), f"fc_last_bwd_{_TYPES[dtype][0]}")(
            B, H, L, _f(g, dtype), _f(u, dtype) if need_dk else null, _f(R, dtype),
            _f(du, dtype) if need_du else null, _f(dR, dtype) if need_dk else null, _threads())
        return du, (dR.flip(-1) if need_dk else None)


def last_output(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """The fast path of ``kernel.conv_last``: u (B, H, L), K (H, L) -> (B, H) (call
    ``supports(u, K)`` first)."""
    return LastOutput.apply(u, K)


def conv(u: torch.Tensor, K: torch.Tensor, n: int, lib: str, epilogue=None) -> torch.Tensor:
    """The fast path of ``kernel.fft_conv``: u (..., H, L), K (H, L) -> (..., H, L) (call
    ``supports(u, K)`` first), zero-padded to n, the FFTs by `lib` ("ducc0" or "torch"); with
    an `epilogue` (``fused.ActDrop``, u 3-D), the epilogue of the convolution, chunk by chunk."""
    shape = u.shape
    u3 = u.reshape(-1, *shape[-2:]) if u.dim() != 3 else u
    if u.requires_grad or K.requires_grad:
        y = FusedFFTConv.apply(u3, K, n, lib, epilogue)
    else:
        with torch.no_grad():
            y = _conv_fwd(u3, _spectrum(K, n, lib), n, lib, epilogue, keep=False)
            y = y if epilogue is None else y[0]
    return y.reshape(shape) if u.dim() != 3 else y
