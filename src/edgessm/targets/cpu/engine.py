"""The `cpu` target: float32 streaming on this CPU, measured, not modelled.

Two engines answer the Program protocol:

* ``fast`` (default): the whole network step in one C call (``kernel.c``), preallocated
  state, no Python work per layer per token; the state is updated in place.
* ``torch``: ``SequenceModel.step`` in PyTorch (the reference the fast engine is tested against).

The fast engine is thread-safe: the network is only read and each calling thread has its own
scratch memory, so threads may step different states (or pool streams) of one program at
once, with the GIL released during the C call. One state must not be stepped by two threads
at the same time.

Tokens are checked before any state changes: NaN, infinity, or a magnitude above ``max_abs``
(default :data:`MAX_ABS`) raise InputError and leave every stream unchanged. The bound keeps
the recurrent state finite: a token of 1e37 is finite but overflows the state to infinity,
and a state once infinite or NaN never recovers while the outputs can stay finite.

``cost()`` measures the time per token on this machine; energy is that time times a
stated power (no energy counter is readable here, see ``CPU_POWER``).
"""
from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ...errors import ConfigError, InputError
from ...fields import Rule
from ...resources import package_path
from ...ssm.network import NetState
from ...toolchain import load_shared
from ..base import Cost, Program, Target, register
from ..config import Capabilities, TargetConfig

# the kernel's build: tuned to this CPU (the cache key then covers its features); IEEE
# infinities and NaN kept (-fno-finite-math-only: the kernel checks tokens for them)
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", "-fPIC", "-shared", "-std=c99",
         "-pthread"]

# Assumed active power of the cores running the engine, W per busy core. Not measured:
# no RAPL energy counter is exposed on this machine. AMD EPYC 7B13-class parts have a
# 225-280 W TDP for 64 cores, i.e. about 3.5-4.4 W per core at full load; 4 W is used.
CPU_POWER = {"watts_per_core": 4.0,
             "source": "assumed from AMD EPYC TDP / core count (225-280 W / 64 cores); not measured"}

# Largest token magnitude the fast engine accepts by default (FastProgram/StreamPool
# `max_abs=` changes it). Normalized inputs are O(1); raw 16-bit audio is below 33,000.
MAX_ABS = 1e6

_P = ctypes.POINTER(ctypes.c_float)
_PP = ctypes.POINTER(_P)


class _Net(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int) for n in ("d_in", "H", "N2", "d_out", "n_layers", "act", "mix",
                                             "residual", "norm", "prenorm", "readout_mean")] + \
               [("eps", ctypes.c_float)] + [(n, _P) for n in ("enc_w", "enc_b", "dec_w", "dec_b")] + \
               [(n, _PP) for n in ("dA_re", "dA_im", "C_re", "C_im", "D",
                                   "mix_w", "mix_b", "gamma", "beta", "mix_wt")]


_LIB = None


class _StepCall(ctypes.Structure):
    """Every pointer of one state's step, bound once (kernel.c: StepCall)."""
    _fields_ = [("net", ctypes.POINTER(_Net)), ("states", _P), ("x", _P), ("out", _P),
                ("t", ctypes.POINTER(ctypes.c_long)), ("max_abs", ctypes.c_float), ("batch", ctypes.c_int)]


class _Pool(ctypes.Structure):
    """A stream pool's rows and token counts (kernel.c: Pool)."""
    _fields_ = [("net", ctypes.POINTER(_Net)), ("states", _P), ("t", ctypes.POINTER(ctypes.c_long)),
                ("max_abs", ctypes.c_float)]


def token_error(rc: int, max_abs: float, what: str = "token") -> InputError:
    """The InputError for a kernel check code (the state was not changed)."""
    if rc == 1:
        return InputError(f"{what} contains NaN or infinite values; the state was not changed")
    if rc == 2:
        return InputError(f"{what} has a value larger in magnitude than max_abs={max_abs:g} "
                          f"(it would overflow the recurrent state); scale the input, or raise "
                          f"max_abs; the state was not changed")
    return InputError(f"the fast engine could not allocate its scratch memory (code {rc})")


def check_max_abs(max_abs) -> float:
    if isinstance(max_abs, bool) or not isinstance(max_abs, (int, float)) or \
            not (0 < max_abs < 3.4e38):
        raise ConfigError(f"max_abs must be a positive finite number below 3.4e38, got {max_abs!r}")
    return float(max_abs)


def _lib():
    global _LIB
    if _LIB is None:
        lib = load_shared(package_path("targets", "cpu", "kernel.c"), FLAGS, libs=("-lm",),
                          purpose="the fast CPU engine", fallback="use engine='torch'")
        lib.edgessm_state_floats.restype = ctypes.c_size_t
        lib.edgessm_state_floats.argtypes = [ctypes.POINTER(_Net)]
        lib.edgessm_work_floats.restype = ctypes.c_size_t
        lib.edgessm_work_floats.argtypes = [ctypes.POINTER(_Net)]
        lib.edgessm_step_call.restype = ctypes.c_int
        lib.edgessm_step_call.argtypes = [ctypes.POINTER(_StepCall)]
        lib.edgessm_run.restype = ctypes.c_int
        lib.edgessm_run.argtypes = [ctypes.POINTER(_Net), _P, _P, _P, ctypes.c_long, ctypes.c_long,
                                    ctypes.c_float]
        # pool entry points: the pool struct as a plain address, arrays as ctypes views
        lib.edgessm_pool_push.restype = ctypes.c_int
        lib.edgessm_pool_push.argtypes = [ctypes.c_void_p, ctypes.c_long, _P, ctypes.c_long, _P]
        lib.edgessm_pool_step_rows.restype = ctypes.c_int
        lib.edgessm_pool_step_rows.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_long),
                                               ctypes.c_int, _P, _P]
        _LIB = lib
    return _LIB


def _f32(t) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().double().numpy(), dtype=np.float32)


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_P)


def check_model(model) -> None:
    from ...ssm.network import SequenceModel
    if not isinstance(model, SequenceModel):
        raise ConfigError(f"the cpu target compiles a SequenceModel, got {type(model).__name__}")


@dataclass(eq=False)
class StreamState:
    """The fast engine's state of `batch` streams: the float family's streaming state
    (:class:`~edgessm.ssm.network.NetState`) in the C kernel's layout, updated in place.

    buf (B, state_floats) float32, one row per stream: per layer the S4D state divided by dB,
    an (H, N/2) real plane then the imaginary plane, then (mean readout) the running sum (H)
    of the last block's output; t (B,) int64: tokens seen per stream; x (B, d_input) and out
    (B, d_output): the token and output buffers a step reads and writes (so a step allocates
    nothing). :meth:`FastProgram.to_net_state` and :meth:`FastProgram.from_net_state`
    convert to and from NetState."""
    buf: np.ndarray
    t: np.ndarray
    x: np.ndarray
    out: np.ndarray

    def __post_init__(self):
        self._pointers()

    @classmethod
    def zeros(cls, batch: int, floats: int, d_input: int = 1, d_output: int = 1) -> "StreamState":
        return cls(np.zeros((batch, floats), dtype=np.float32), np.zeros(batch, dtype=np.int64),
                   np.zeros((batch, d_input), dtype=np.float32), np.zeros((batch, d_output), dtype=np.float32))

    def _pointers(self):
        self.buf_p = _ptr(self.buf)
        self.t_p = self.t.ctypes.data_as(ctypes.POINTER(ctypes.c_long))
        self._program = self._call = self._call_obj = None   # bound by FastProgram on first step

    @property
    def batch(self) -> int:
        return self.buf.shape[0]

    def copy(self) -> "StreamState":
        return StreamState(self.buf.copy(), self.t.copy(), self.x.copy(), self.out.copy())


class FastProgram(Program):
    target = "cpu"
    engine = "fast"

    def __init__(self, model, max_abs: float = MAX_ABS):
        check_model(model)
        model = model.fold_norms()
        self.max_abs = check_max_abs(max_abs)
        c = model.config
        self.config = c
        self.d_input, self.d_output, H = c.d_input, c.d_output, c.d_model
        keep = []  # numpy arrays the struct points into

        def arr(t):
            a = _f32(t)
            keep.append(a)
            return a

        def ptr_array(arrays):
            p = (_P * len(arrays))(*[_ptr(a) for a in arrays])
            keep.append(p)
            return ctypes.cast(p, _PP)

        layers = {k: [] for k in ("dA_re", "dA_im", "C_re", "C_im", "D", "mix_w",
                                  "mix_b", "gamma", "beta", "mix_wt")}
        eps = 1e-5
        norm_kind = {"none": 0, "layer": 1, "batch": 2}[c.norm]
        self._dB = []             # per layer (H, N/2) complex128: the kernel's state is x / dB
        self._cdtype = model.blocks[0].s4d.init_state(1).dtype if model.blocks else torch.complex64
        with torch.no_grad():
            for b in model.blocks:
                dA, dB, C = (t.to(torch.complex128) for t in b.s4d.discrete())
                self._dB.append(dB.detach().cpu())
                # the kernel keeps the state as x / dB: input weight 1, output weights C * dB
                for name, v in (("dA", dA), ("C", C * dB)):
                    layers[name + "_re"].append(arr(v.real))
                    layers[name + "_im"].append(arr(v.imag))
                layers["D"].append(arr(b.s4d.D))
                layers["mix_w"].append(arr(b.mix.weight))
                layers["mix_wt"].append(arr(b.mix.weight.t()))
                layers["mix_b"].append(arr(b.mix.bias))
                if c.norm == "layer":
                    gamma, beta, eps = b.norm.weight, b.norm.bias, b.norm.eps
                elif c.norm == "batch":
                    n = b.norm
                    inv = 1.0 / torch.sqrt(n.running_var.double() + n.eps)
                    gamma = n.weight.double() * inv
                    beta = n.bias.double() - n.running_mean.double() * gamma
                else:
                    gamma, beta = torch.ones(H), torch.zeros(H)
                layers["gamma"].append(arr(gamma))
                layers["beta"].append(arr(beta))
            enc_w, enc_b = arr(model.encoder.weight), arr(model.encoder.bias)
            dec_w, dec_b = arr(model.decoder.weight), arr(model.decoder.bias)
        self._net = _Net(c.d_input, H, c.d_state // 2, c.d_output, c.n_layers,
                         0 if c.activation == "relu" else 1, 1 if c.mixing == "glu" else 0,
                         int(c.residual), norm_kind, int(c.prenorm), int(c.readout == "mean"), eps,
                         _ptr(enc_w), _ptr(enc_b), _ptr(dec_w), _ptr(dec_b),
                         *[ptr_array(layers[k]) for k in ("dA_re", "dA_im", "C_re", "C_im", "D", "mix_w",
                                                           "mix_b", "gamma", "beta", "mix_wt")])
        self._keep = keep
        self._lib = _lib()
        self.state_floats = int(self._lib.edgessm_state_floats(ctypes.byref(self._net)))
        self._step_call = self._lib.edgessm_step_call
        # the model's weights once; the transposed mixing copies (one-stream path) are extra
        self.held_bytes = sum(a.nbytes for a in keep if isinstance(a, np.ndarray))
        self.weight_bytes = self.held_bytes - sum(a.nbytes for a in layers["mix_wt"])

    # ---- protocol ------------------------------------------------------------------------
    def init_state(self, batch: int = 1) -> StreamState:
        if not isinstance(batch, int) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch!r}")
        return StreamState.zeros(batch, self.state_floats, self.d_input, self.d_output)

    def to_net_state(self, state: StreamState) -> NetState:
        """The streams of `state` as a NetState (what ``SequenceModel.step`` and the torch engine
        take): the kernel's scaled state times dB. Every stream must have seen the same
        number of tokens (NetState counts them once)."""
        self._check_state(state)
        if state.batch and (state.t != state.t[0]).any():
            raise InputError("the streams have seen different numbers of tokens; a NetState holds one "
                             "count: convert streams of equal length")
        H, N2 = self.config.d_model, self.config.d_state // 2
        B, n = state.batch, H * N2
        layers = []
        for i, dB in enumerate(self._dB):
            off = 2 * n * i
            x = torch.complex(torch.from_numpy(state.buf[:, off:off + n].astype(np.float64)),
                              torch.from_numpy(state.buf[:, off + n:off + 2 * n].astype(np.float64)))
            layers.append((x.reshape(B, H, N2) * dB).to(self._cdtype))
        t = int(state.t[0]) if B else 0
        total = None
        if self.config.readout == "mean" and t > 0:
            off = 2 * n * len(self._dB)
            total = torch.from_numpy(state.buf[:, off:off + H].copy()).to(self._cdtype.to_real())
        return NetState(layers, t, total)

    def from_net_state(self, st: NetState) -> StreamState:
        """A NetState (of this program's model) as a fast-engine state, for streams to continue
        here: the state divided by dB (0 where dB is 0: that state stays 0)."""
        H, N2 = self.config.d_model, self.config.d_state // 2
        if not isinstance(st, NetState) or len(st.layers) != len(self._dB) or \
                any(tuple(x.shape[1:]) != (H, N2) for x in st.layers):
            raise InputError("state is not a NetState of this program's model; create one with "
                             "model.init_state(batch)")
        B, n = st.batch, H * N2
        out = StreamState.zeros(B, self.state_floats, self.d_input, self.d_output)
        for i, (x, dB) in enumerate(zip(st.layers, self._dB)):
            off = 2 * n * i
            xs = torch.where(dB != 0, x.detach().cpu().to(torch.complex128) / torch.where(dB != 0, dB, 1), 0)
            out.buf[:, off:off + n] = xs.real.reshape(B, n).numpy()
            out.buf[:, off + n:off + 2 * n] = xs.imag.reshape(B, n).numpy()
        if self.config.readout == "mean" and st.sum is not None:
            off = 2 * n * len(self._dB)
            out.buf[:, off:off + H] = st.sum.detach().cpu().numpy()
        out.t[:] = st.t
        return out

    def _check_state(self, state) -> None:
        if not isinstance(state, StreamState) or state.buf.shape[1] != self.state_floats:
            raise InputError("state was not made by this program's init_state")

    def _bind(self, state: StreamState):
        """Bind `state`'s buffers and this program's weights into one call."""
        self._check_state(state)
        call = _StepCall(ctypes.pointer(self._net), state.buf_p, _ptr(state.x), _ptr(state.out),
                         state.t_p, self.max_abs, state.batch)
        state._program, state._call = self, ctypes.byref(call)
        state._call_obj = call
        return state._call

    def step_numpy(self, x: np.ndarray, state: StreamState, out: np.ndarray | None = None) -> np.ndarray:
        """x (B, d_in) -> logits (B, d_out), updating `state` in place; into `out` if given,
        else a new array. A token of the wrong shape, or with a NaN or infinity in any
        stream, or a magnitude above `max_abs`, raises InputError and changes no stream (the C
        side checks before it steps)."""
        call = state._call if state._program is self else self._bind(state)
        if type(x) is not np.ndarray:
            x = np.asarray(x)
        if x.shape != state.x.shape:
            raise InputError(f"token has shape {x.shape}, expected (batch={state.batch}, d_input={self.d_input})")
        if out is not None and out.shape != state.out.shape:
            raise InputError(f"out has shape {out.shape}, expected {state.out.shape}")
        try:
            state.x[...] = x
        except (TypeError, ValueError):
            raise InputError(f"token must be numeric, got dtype {x.dtype}") from None
        rc = self._step_call(call)
        if rc:
            raise token_error(rc, self.max_abs)
        if out is None:
            return state.out.copy()
        out[...] = state.out
        return out

    def step(self, x_t, state: StreamState):
        """One token of every stream; the state is updated in place and returned."""
        x = x_t.detach().cpu().numpy() if isinstance(x_t, torch.Tensor) else np.asarray(x_t)
        if not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"token must be floating point, got {x.dtype}")
        return torch.from_numpy(self.step_numpy(x, state)), state

    def run(self, X) -> torch.Tensor:
        x = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
        if x.ndim != 3 or x.shape[2] != self.d_input:
            raise InputError(f"X has shape {x.shape}, expected (batch, length, {self.d_input})")
        if x.shape[1] == 0:
            raise InputError("X has length 0; a sequence needs at least one token")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise InputError(f"X must be numeric, got dtype {x.dtype}")
        bad = ~(np.abs(x) <= self.max_abs)
        if bad.any():
            raise token_error(1 if not np.isfinite(x[bad]).all() else 2, self.max_abs, "X")
        x = np.ascontiguousarray(x, dtype=np.float32)
        B, L, _ = x.shape
        out = np.empty((B, L, self.d_output), dtype=np.float32)
        for b in range(B):
            s = np.zeros(self.state_floats, dtype=np.float32)
            rc = self._lib.edgessm_run(ctypes.byref(self._net), _ptr(s), _ptr(x[b]), _ptr(out[b]), L, 0,
                                       self.max_abs)
            if rc:
                raise token_error(rc, self.max_abs, "X")
        return torch.from_numpy(out)

    def resources(self) -> dict:
        return {"weight_bytes": self.weight_bytes, "held_bytes": self.held_bytes,
                "state_bytes_per_stream": 4 * self.state_floats,
                "engine": "fast (C, float32)"}

    def stream_timed(self, x) -> tuple[np.ndarray, list[float]]:
        """One sequence x (L, d_in) fed token by token at batch 1, as a live stream arrives:
        the outputs after every token (L, d_out) and each step's wall time in seconds."""
        x = np.ascontiguousarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.d_input:
            raise InputError(f"x has shape {x.shape}, expected (length, {self.d_input})")
        state = self.init_state(1)
        out = np.empty((x.shape[0], self.d_output), dtype=np.float32)
        times = []
        for t in range(x.shape[0]):
            t0 = time.perf_counter()
            self.step_numpy(x[t:t + 1], state, out[t:t + 1])
            times.append(time.perf_counter() - t0)
        return out, times

    def time_per_token(self, tokens: int = 2000, batch: int = 1) -> float:
        """Measured seconds per step (all `batch` streams) on this machine."""
        state = self.init_state(batch)
        x = np.random.default_rng(0).standard_normal((batch, self.d_input)).astype(np.float32)
        out = np.empty((batch, self.d_output), dtype=np.float32)
        for _ in range(20):
            self.step_numpy(x, state, out)
        t0 = time.perf_counter()
        for _ in range(tokens):
            self.step_numpy(x, state, out)
        return (time.perf_counter() - t0) / tokens

    def cost(self, tokens: int = 2000, batch: int = 1) -> Cost:
        s = self.time_per_token(tokens, batch)
        p = CPU_POWER["watts_per_core"]
        return Cost(energy_per_token_j=p * s / batch, latency_per_token_s=s,
                    throughput_tokens_per_s=batch / s, power_w=p, mode="token", measured=True,
                    assumptions={"cpu_power_w": CPU_POWER, "threads": 1, "batch": batch,
                                 "energy": "measured time x assumed power"})


class TorchProgram(Program):
    """PyTorch `net.step`, behind the same protocol (the reference for the fast engine)."""
    target = "cpu"
    engine = "torch"

    def __init__(self, model):
        check_model(model)
        self.model = model.eval()
        self.d_input, self.d_output = model.config.d_input, model.config.d_output

    def init_state(self, batch: int = 1):
        return self.model.init_state(batch)

    @torch.no_grad()
    def step(self, x_t, state):
        return self.model.step(x_t, state)

    @torch.no_grad()
    def run(self, X):
        return self.model.forward_tokens(X)

    def resources(self) -> dict:
        return {"weight_bytes": sum(p.numel() * p.element_size() for p in self.model.parameters()),
                "engine": "torch"}

    def spec_name(self) -> str | None:
        from ...quant.model import QuantSequenceModel
        return self.model.spec.name if isinstance(self.model, QuantSequenceModel) else None

    def cost(self, tokens: int = 500, batch: int = 1) -> Cost:
        state = self.init_state(batch)
        x = torch.randn(batch, self.d_input)
        with torch.no_grad():
            for _ in range(10):
                _, state = self.model.step(x, state)
            t0 = time.perf_counter()
            for _ in range(tokens):
                _, state = self.model.step(x, state)
        s = (time.perf_counter() - t0) / tokens
        p = CPU_POWER["watts_per_core"] * torch.get_num_threads()
        return Cost(p * s / batch, s, batch / s, p, "token", True,
                    {"cpu_power_w": CPU_POWER, "threads": torch.get_num_threads(), "batch": batch})


@dataclass
class CpuConfig(TargetConfig):
    """Options of the cpu target (``deploy --set engine=torch``); it takes no spec."""
    TARGET: ClassVar[str] = "cpu"
    # "fast": the C streaming kernel (kernel.c); "torch": PyTorch's net.step
    engine: str = field(default="fast", metadata={"rule": Rule(str, choices=("fast", "torch"))})


@register("cpu")
class CpuTarget(Target):
    config_class = CpuConfig
    capabilities = Capabilities()

    def build(self, model, config: CpuConfig, calibration=None) -> Program:
        return FastProgram(model) if config.engine == "fast" else TorchProgram(model)
