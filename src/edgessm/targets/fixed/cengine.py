"""The compiled C backend of the integer engine (``Engine(net, backend="c")``).

The C is the export's (``cgen/``, ``generate(net, name, engine_pops=...)``): the same
layer functions, so the same arithmetic, plus a host-side entry point that runs a whole
batch of sequences in one call and counts what :class:`~.engine.Engine` counts: graded
spikes (messages, synops) per population, overflows per tensor and kind, with optional
sigma-delta messaging. It is compiled once per network into a shared library by the C
toolchain (``edgessm.toolchain``; cached in ``<cache>/build/engine`` by the hash of the source,
compiler, flags and CPU kind) and loaded with ctypes.

The streaming state stays in numpy (:class:`~edgessm.quant.intnet.IntState`, int64 arrays): a call
reads the states (and sigma-delta references) of every stream, runs its tokens and writes
new arrays, so states move freely between the two backends and the old state is unchanged.
"""
from __future__ import annotations

import ctypes

import numpy as np

from ...errors import ConfigError, ToolchainError
from ...quant.fixedpoint import int_range
from ...quant.intnet import IntNet
from ...toolchain import find_cc, load_shared, native_arch
from .cgen import CFLAGS, check_net, generate

NAME = "net"            # the C prefix; every network is its own library, so one name will do
_P = ctypes.c_void_p
PURPOSE, FALLBACK = "the integer engine's C backend", "use backend='numpy' (or 'auto')"
ENGINE_CFLAGS = ["-O3", "-fPIC", "-shared"]    # a shared library, CFLAGS (-O3 after -O2 wins) +
ENGINE_NATIVE = ["-march=native"]             # tuned to this CPU where the compiler can (~20 % faster)


def load_engine(code: dict, name: str = NAME, cc: str | None = None) -> ctypes.CDLL:
    """Compile generated engine code (``generate(..., engine_pops=...)``) into a shared library
    with :data:`CFLAGS` + :data:`ENGINE_CFLAGS` (and -march=native on x86-64 and arm64, else or
    if that fails without), cached in ``<cache>/build/engine``, and load it (its path:
    ``.path``)."""
    cc = cc or find_cc(PURPOSE, FALLBACK)
    err = None
    for extra in ([ENGINE_NATIVE, []] if native_arch() else [[]]):
        try:
            return load_shared({f"{name}.h": code["h"], f"{name}.c": code["c"]}, CFLAGS + ENGINE_CFLAGS + extra,
                               cc=cc, subdir="engine", purpose=PURPOSE, fallback=FALLBACK)
        except ToolchainError as e:
            err = e
    raise err


def unavailable(net: IntNet) -> Exception | None:
    """Why the C backend cannot run `net`, as the error to raise (ToolchainError: no compiler;
    ConfigError: a bit width beyond int32, a shift beyond int64), or None."""
    try:
        find_cc(PURPOSE, FALLBACK)
    except ToolchainError as e:
        return e
    try:
        check_net(net)
    except ConfigError as e:
        return ConfigError(f"the integer engine's C backend cannot run this network: {e}; "
                           f"use backend='numpy' (or 'auto')")
    return None


class CEngine:
    """One network compiled to C: :meth:`run` executes (B, L, d_in) int64 inputs."""

    def __init__(self, net: IntNet, pops: list[dict]):
        code = generate(net, NAME, engine_pops=pops)
        lib = load_engine(code, NAME)
        fn = getattr(lib, code["engine"]["run"])
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int64, ctypes.c_int64, _P, _P, _P, _P, _P, _P, ctypes.c_int64, _P, _P, _P]
        self._fn = fn
        self.lib = lib
        self.names = {k: code["engine"][k] for k in ("state_size", "init", "step")}
        self.library = str(lib.path)
        self.net = net
        self.populations = code["engine"]["populations"]          # graded populations, in C order
        self.sizes = code["engine"]["sizes"]
        self.overflow_slots = code["engine"]["overflow_slots"]    # [(tensor, kind)] per C counter
        self.in_range = int_range(net.in_bits)
        self.state_ranges = [int_range(s.state_bits) for s, _ in net.layers]
        self.ref_range = int_range(32)

    def accepts(self, xm: np.ndarray, layers: list, refs: dict | None) -> bool:
        """Whether the C backend computes exactly what numpy would for these arguments: inputs
        within the input bit width (the C takes int32), states within the state bit width (the C
        keeps them in that width), sigma-delta references within int32; shapes as expected."""
        net = self.net
        if xm.ndim != 3 or xm.shape[2] != net.d_input or len(layers) != len(net.layers):
            return False
        B = xm.shape[0]
        lo, hi = self.in_range
        if xm.size and (xm.min() < lo or xm.max() > hi):
            return False
        for (s, _), (slo, shi), pair in zip(net.layers, self.state_ranges, layers):
            for a in pair:
                if a.shape != (B, s.d_model, s.n) or a.dtype != np.int64:
                    return False
                if a.size and (a.min() < slo or a.max() > shi):
                    return False
        if refs is not None:
            rlo, rhi = self.ref_range
            for name, size in zip(self.populations, self.sizes):
                r = refs.get(name)
                if r is None or r.shape != (B, size) or r.dtype != np.int64:
                    return False
                if r.size and (r.min() < rlo or r.max() > rhi):
                    return False
        return True

    def run(self, xm: np.ndarray, layers: list, refs: dict | None, threshold: int):
        """(B, L, d_in) int64 -> (logits (B, L, d_out), new layers, new refs or None, messages,
        synops (per graded population), overflows (per slot)). Check :meth:`accepts` first."""
        B, L, _ = xm.shape
        x = np.ascontiguousarray(xm, dtype=np.int64)
        out = np.empty((B, L, self.net.d_output), np.int64)
        st_in = [np.ascontiguousarray(a) for pair in layers for a in pair]
        st_out = [np.empty_like(a) for a in st_in]
        sd = refs is not None and threshold >= 0
        if sd:
            r_in = [np.ascontiguousarray(refs[n]) for n in self.populations]
            r_out = [np.empty_like(a) for a in r_in]
        else:
            r_in = r_out = []
        msg = np.zeros(len(self.populations), np.uint64)
        syn = np.zeros(len(self.populations), np.uint64)
        ovf = np.zeros(max(len(self.overflow_slots), 1), np.uint64)

        def ptrs(arrays):
            return (_P * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])
        rc = self._fn(B, L, x.ctypes.data, out.ctypes.data, ptrs(st_in), ptrs(st_out), ptrs(r_in),
                      ptrs(r_out), int(threshold) if sd else -1, msg.ctypes.data, syn.ctypes.data,
                      ovf.ctypes.data)
        if rc:
            raise MemoryError("the integer engine's C backend could not allocate a stream state")
        new_layers = [(st_out[2 * i], st_out[2 * i + 1]) for i in range(len(layers))]
        new_refs = dict(zip(self.populations, r_out)) if sd else None
        return out, new_layers, new_refs, msg, syn, ovf


class CStream:
    """One stream stepped token by token through the compiled network's ``<name>_step`` (the
    export's API, in the engine's library): the state stays in C layout in a numpy buffer, and
    each :meth:`step` is one C call with bound pointers: the integer step a device runs, on
    this CPU (what ``edgessm bench stream`` times as ``fixed-c``). Nothing is counted in the
    Engine (use :meth:`Engine.run_int` / ``step_int`` for counted work)."""

    def __init__(self, c: CEngine):
        lib, names = c.lib, c.names
        size_fn = getattr(lib, names["state_size"])
        size_fn.restype = ctypes.c_size_t
        size_fn.argtypes = []
        n = int(size_fn())
        self._buf = np.zeros(n + 64, np.uint8)
        off = (-self._buf.ctypes.data) % 64                       # 64-byte aligned state
        self._state = self._buf[off:off + n]
        self.x = np.zeros(c.net.d_input, np.int32)
        self.y = np.zeros(c.net.d_output, np.int32)
        init = getattr(lib, names["init"])
        init.restype = None
        init.argtypes = [_P]
        self._init = init
        fn = getattr(lib, names["step"])
        fn.restype = None
        fn.argtypes = [_P, _P, _P]
        self._fn = fn
        self._args = (self._state.ctypes.data, self.x.ctypes.data, self.y.ctypes.data)
        self.in_range = c.in_range
        self.reset()

    def reset(self) -> None:
        self._init(self._args[0])

    def step(self, xm: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """One token: encoded input mantissas (d_input,) -> logit mantissas (d_output,) int32
        (into `out` if given). Inputs outside the input bit width are saturated and counted,
        as the export's step does."""
        self.x[...] = xm
        self._fn(*self._args)
        if out is None:
            return self.y.copy()
        out[...] = self.y
        return out
