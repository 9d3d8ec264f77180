"""The CPU fast path of the S4D layer's causal FFT convolution (``kernel.fft_conv``).

The same mathematics as ``kernel._FFTConv`` (forward ``y = irfft(U^ K^)``, backward
``du = irfft(G^ conj(K^))``, ``dK = irfft(sum_b G^ conj(U^))``), with three costs removed:

* the FFT-domain products run in C (``fftconv.c``): the forward product in one pass, and both
  backward products in one pass over G^ and U^ (du's product in place in G^'s buffer; the batch
  sum of dK^ in a fixed order, so the gradients do not depend on the thread count), OpenMP over
  channels with ``torch.get_num_threads()`` threads;
* the large intermediate buffers (the zero-padded input, the spectra, the full-length inverse
  transforms) come from a pool and are reused from one call and one training step to the
  next, instead of fresh memory written once per call; the pad is a copy into a buffer whose
  tail is kept zero;
* the FFTs run with ``ducc0.fft`` when it is installed (the ``fft`` extra) and measured faster
  (``fft_library``: at one thread, or for large transforms; ``EDGESSM_FFT`` chooses), in the
  pooled buffers, with the same threads; else with ``torch.fft``.

Used for CPU float32 and float64 tensors; other devices and dtypes, and tracing (ONNX export,
torch.compile), take the torch path of ``kernel.py``. Without a C compiler the torch path is
used, with one warning (``available()`` says why).
"""
from __future__ import annotations

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
# the FFT library of the fast path (environment EDGESSM_FFT): "auto" (ducc0 where it measured
# faster, see fft_library), "ducc0" (when installed), "torch" (torch.fft)
FFT = os.environ.get("EDGESSM_FFT", "auto")
# auto, more than one thread: ducc0 from this many elements (rows x padded length) per transform.
# Measured on a 2-core CPU at 2 threads (benchmarks/RESULTS.md): torch.fft 6% faster on
# 64 x 64 x 1600, ducc0 1.2-1.3x faster on 64 x 128 x 1600; at one thread ducc0 1.4-2x faster on both.
DUCC_AUTO_MIN = 1 << 23
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


def fft_library(numel: int | None = None) -> str:
    """The FFT library of the fast path for transforms of `numel` elements (rows x padded
    length): "ducc0" or "torch". With FFT = "auto": ducc0 when installed and either one thread
    runs or the transform has at least DUCC_AUTO_MIN elements (numel None: a large one)."""
    choice = _check_fft(FFT)
    if _DUCC is None or choice == "torch":
        return "torch"
    if choice == "ducc0" or numel is None or torch.get_num_threads() == 1:
        return "ducc0"
    return "ducc0" if numel >= DUCC_AUTO_MIN else "torch"


def describe() -> str:
    """The fast path's FFT library in words (for logs): ``fft_library``'s choice for the
    smallest and the largest transforms."""
    small, large = fft_library(0), fft_library(None)
    if small != large:
        return f"ducc0 for transforms of >= {DUCC_AUTO_MIN} elements, else torch.fft"
    if small == "ducc0":
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

    def take_owned(self, shape, dtype) -> torch.Tensor:
        """A scratch tensor whose memory comes back to the pool by itself when the last tensor
        viewing it is freed (its storage holds a numpy view of a pooled array; the pool reuses
        the array once that view is collected): for a result handed out as a view."""
        key = (tuple(shape), dtype, "owned")
        with self.lock:
            lst = self.held.get(key)
            base = lst.pop() if lst else None
        if base is None:
            base = torch.empty(shape, dtype=dtype).numpy()
        view = base.view()
        weakref.finalize(view, self._back, key, base)
        return torch.from_numpy(view)

    def _back(self, key, base) -> None:
        with self.lock:
            lst = self.held.setdefault(key, [])
            if len(lst) < self.keep:
                lst.append(base)


POOL = _Pool()


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _rfft_padded(x: torch.Tensor, n: int, lib: str) -> torch.Tensor:
    """rfft along the last axis of x zero-padded to n: x (R, H, L) any strides -> (R, H, F)
    complex, a pooled buffer (give it back when done); by `lib` (ducc0 or torch)."""
    *lead, L = x.shape
    kind = f"pad{L}"                       # zero from L on: one kind per L (n is shared by several)
    buf = POOL.take((*lead, n), x.dtype, kind)
    buf[..., :L].copy_(x)
    if lib == "ducc0":
        out = POOL.take((*lead, n // 2 + 1), _CTYPES[x.dtype])
        _DUCC.r2c(buf.numpy(), axes=(buf.dim() - 1,), out=out.numpy(), nthreads=_threads())
    else:
        out = torch.fft.rfft(buf)
    POOL.give(buf, kind)
    return out


def _irfft_crop(X: torch.Tensor, n: int, L: int, lib: str, pooled: bool = True) -> torch.Tensor:
    """The first L samples of irfft(X, n) along the last axis, by `lib`: a view of the full
    inverse transform (rows of stride n; no copy: the kernels downstream read strided rows, and
    the memory returns to the pool when the view is freed). X may be overwritten; it goes back
    to the pool when `pooled`."""
    *lead, _ = X.shape
    rdt = X.real.dtype
    if lib == "ducc0":
        full = POOL.take_owned((*lead, n), rdt)
        _DUCC.c2r(X.numpy(), axes=(X.dim() - 1,), lastsize=n, forward=False, inorm=2,
                  out=full.numpy(), nthreads=_threads(), allow_overwriting_input=True)
    else:
        full = torch.fft.irfft(X, n=n)
    if pooled:
        POOL.give(X)
    return full[..., :L]


def _f(t, dtype):
    return ptr(t, _TYPES[dtype][1])


def _mul_fwd(Uf: torch.Tensor, Kf: torch.Tensor, dtype) -> torch.Tensor:
    """Y^ = U^ K^ (K^ broadcast over the batch): Uf (R, H, F), Kf (H, F) -> pooled (R, H, F)."""
    R, H, F = Uf.shape
    Yf = POOL.take(Uf.shape, Uf.dtype)
    getattr(_LIB.require(), f"fc_mul_fwd_{_TYPES[dtype][0]}")(
        R, H, F, _f(Uf, dtype), _f(Kf, dtype), _f(Yf, dtype), _threads())
    return Yf


class FusedFFTConv(torch.autograd.Function):
    """Causal FFT convolution u (R, H, L), K (H, L) -> (R, H, L), zero-padded to n >= 2L - 1."""

    @staticmethod
    def forward(ctx, u, K, n, lib):
        L = u.shape[-1]
        dtype = u.dtype
        u, K = u.detach(), K.detach()
        Uf = _rfft_padded(u, n, lib)
        Kp = _rfft_padded(K, n, lib)
        Kf = Kp.clone()                                  # small; kept out of the pool
        POOL.give(Kp)
        y = _irfft_crop(_mul_fwd(Uf, Kf, dtype), n, L, lib)
        if any(ctx.needs_input_grad[:2]):
            ctx.Uf, ctx.Kf = Uf, Kf
            weakref.finalize(ctx, POOL.give, Uf)          # back to the pool with the node
        else:
            POOL.give(Uf)
        ctx.L, ctx.n, ctx.dtype_, ctx.lib = L, n, dtype, lib
        return y

    @staticmethod
    def backward(ctx, gy):
        L, n, dtype, lib = ctx.L, ctx.n, ctx.dtype_, ctx.lib
        Uf, Kf = ctx.Uf, ctx.Kf
        need_du, need_dk = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        Gf = _rfft_padded(gy.to(dtype), n, lib)
        R, H, F = Gf.shape
        dKf = torch.empty_like(Kf) if need_dk else None
        getattr(_LIB.require(), f"fc_mul_bwd_{_TYPES[dtype][0]}")(
            R, H, F, _f(Gf, dtype), _f(Uf, dtype), _f(Kf, dtype),
            _f(dKf, dtype) if need_dk else ctypes.POINTER(_TYPES[dtype][1])(),
            int(need_du), int(need_dk), _threads())
        dK = _irfft_crop(dKf, n, L, lib, pooled=False) if need_dk else None
        if need_du:
            du = _irfft_crop(Gf, n, L, lib)
        else:
            du = None
            POOL.give(Gf)
        return du, dK, None, None


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


def conv(u: torch.Tensor, K: torch.Tensor, n: int, lib: str) -> torch.Tensor:
    """The fast path of ``kernel.fft_conv``: u (..., H, L), K (H, L) -> (..., H, L) (call
    ``supports(u, K)`` first), zero-padded to n, the FFTs by `lib` ("ducc0" or "torch")."""
    shape = u.shape
    u3 = u.reshape(-1, *shape[-2:]) if u.dim() != 3 else u
    if u.requires_grad or K.requires_grad:
        y = FusedFFTConv.apply(u3, K, n, lib)
    else:
        with torch.no_grad():
            Uf = _rfft_padded(u3, n, lib)
            Kf = _rfft_padded(K, n, lib)
            Yf = _mul_fwd(Uf, Kf, u.dtype)
            POOL.give(Uf)
            POOL.give(Kf)
            y = _irfft_crop(Yf, n, shape[-1], lib)
    return y.reshape(shape) if u.dim() != 3 else y
