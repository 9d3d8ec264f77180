"""ctypes bindings of sim.c, the crossbar simulator's inner loops (compiled once per machine
by the C toolchain, ``edgessm.toolchain``, cached by source, flags, compiler and CPU).
``available()`` says whether they load."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import torch

from ...toolchain import NativeLib, ptr

_SRC = Path(__file__).with_name("sim.c")
_FLAGS = ["-O3", "-march=native", "-fno-fast-math", "-fno-trapping-math", "-fno-math-errno", "-fPIC",
          "-shared", "-std=gnu99"]
_OMP = ["-fopenmp"]
_MASK = (1 << 63) - 1

_F = ctypes.POINTER(ctypes.c_float)
_D = ctypes.POINTER(ctypes.c_double)
_I64 = ctypes.POINTER(ctypes.c_int64)
_U8 = ctypes.POINTER(ctypes.c_uint8)
_STAGE = [ctypes.c_int] * 6 + [_F, _F, _F, _F, _I64, _I64, _U8]


def _bind(lib):
    lib.xbar_stage.restype = ctypes.c_int64
    lib.xbar_stage.argtypes = _STAGE + [ctypes.c_int64, _F, _F, ctypes.c_uint64, ctypes.c_uint64, _D,
                                        ctypes.c_int]
    lib.xbar_s4d.restype = ctypes.c_int64
    lib.xbar_s4d.argtypes = _STAGE + [ctypes.c_int] * 4 + [_F, _F, ctypes.c_int, ctypes.c_int, _F, _F,
                                                       ctypes.c_uint64, ctypes.c_uint64, _D, ctypes.c_int]
    lib.xbar_normals.restype = None
    lib.xbar_normals.argtypes = [ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint64, _D]


# threads over rows (OpenMP); else one thread
_LIB = NativeLib(_SRC, _FLAGS + _OMP, _FLAGS, bind=_bind, purpose="the crossbar simulator's native loops")


def warn_fallback() -> None:
    """The one warning of a simulator that runs on torch ops because the C kernel is unavailable."""
    _LIB.warn_unavailable("crossbar simulator", "running on torch ops (slower)", stacklevel=4)


def available() -> tuple[bool, str]:
    return _LIB.available()


def stage_args(st, cfg) -> tuple:
    """The compact arrays of a Stage (after Stage.compact) as the C argument list (kept alive
    on the stage)."""
    if getattr(st, "_cargs", None) is None:
        keep = dict(q=st.c_q.float().contiguous(),
                    var=None if st.c_var is None or cfg.read_noise_rel <= 0 else st.c_var.float().contiguous(),
                    fs=st.c_fs.float().contiguous(), rowg=st.c_rowg.float().contiguous(),
                    cin=st.c_in.to(torch.int64).contiguous(), cout=st.c_out.to(torch.int64).contiguous(),
                    conv=st.c_conv.to(torch.uint8).contiguous())
        A, Ru, Cu = keep["q"].shape
        st._ckeep = keep
        st._cargs = (A, Ru, Cu, st.n_in, st.n_out, (1 << (cfg.adc_bits - 1)) - 1,
                     ptr(keep["q"], ctypes.c_float),
                     ptr(keep["var"], ctypes.c_float) if keep["var"] is not None else None,
                     ptr(keep["fs"], ctypes.c_float), ptr(keep["rowg"], ctypes.c_float),
                     ptr(keep["cin"], ctypes.c_int64), ptr(keep["cout"], ctypes.c_int64),
                     ptr(keep["conv"], ctypes.c_uint8))
    return st._cargs


def run_stage(st, cfg, x: torch.Tensor, seed: int, row0: int) -> tuple[torch.Tensor, int, float]:
    """x (R, n_in) DAC'd -> (R, n_out) normalized column outputs; saturations; energy sum."""
    x = x.float().contiguous()
    R = x.shape[0]
    y = torch.empty(R, st.n_out)
    e = ctypes.c_double(0.0)
    sat = _LIB.get().xbar_stage(*stage_args(st, cfg), R, ptr(x, ctypes.c_float), ptr(y, ctypes.c_float),
                          seed & _MASK, row0 & _MASK, ctypes.byref(e), torch.get_num_threads())
    if sat < 0:
        raise MemoryError("crossbar simulator: out of memory")
    return y, int(sat), e.value


def run_s4d(st, cfg, vu: torch.Tensor, scale: torch.Tensor, K: int, seed: int, row0: int, dither=None):
    """vu (B, L, H) DAC'd -> y (B, L, H) (scaled output column); saturations; energy sum.
    dither (L, H, K - 1): the digital state's rounding offsets (``hw.dither_offsets``), or None."""
    vu = vu.float().contiguous()
    B, L, H = vu.shape
    if dither is not None:
        if tuple(dither.shape) != (L, H, K - 1):
            raise ValueError(f"crossbar simulator: dither must be ({L}, {H}, {K - 1}), got {tuple(dither.shape)}")
        dither = dither.float().contiguous()
    sc = scale.float().contiguous().reshape(-1)
    y = torch.empty(B, L, H)
    e = ctypes.c_double(0.0)
    sat = _LIB.get().xbar_s4d(*stage_args(st, cfg), B, L, H, K, ptr(sc, ctypes.c_float), ptr(vu, ctypes.c_float),
                        int(cfg.state_mode == "digital"), (1 << (cfg.dac_bits - 1)) - 1,
                        None if dither is None else ptr(dither, ctypes.c_float),
                        ptr(y, ctypes.c_float), seed & _MASK, row0 & _MASK, ctypes.byref(e),
                        torch.get_num_threads())
    if sat == -2:
        raise ValueError(f"crossbar simulator: an output of S4D stage {st.name} is computed by several array "
                         "columns (each block output needs exactly one)")
    if sat < 0:
        raise MemoryError("crossbar simulator: out of memory")
    return y, int(sat), e.value


def normals(n: int, seed: int = 0, stream: int = 0) -> np.ndarray:
    """n standard normal deviates of the simulator's generator (for its tests)."""
    out = np.empty(n, dtype=np.float64)
    _LIB.get().xbar_normals(n, seed & _MASK, stream & _MASK, out.ctypes.data_as(_D))
    return out
