"""The S4D layer: a diagonal state-space model applied per channel.

Continuous time, per channel h and state n (N/2 complex states; conjugates implicit):
    x'(t) = A x(t) + B u(t),      y(t) = 2 Re(C x(t)) + D u(t)
with A = -exp(log_A_real) + i A_imag, dt = exp(log_dt). After discretization (dA, dB):
    x_k = dA x_{k-1} + dB u_k,    y_k = 2 Re(C x_k) + D u_k
which equals the causal convolution y = K * u + D u with K_l = 2 Re(C dB dA^l).

Execution modes, all giving the same output (tests/test_ssm.py says how close):
    forward(u)                    FFT convolution over the whole sequence
    forward(u, mode="recurrent")  the recurrence, token by token
    forward(u, mode="chunked")    FFT convolution per chunk, carrying the state between chunks
    step(u_t, state)              one token of every stream in the batch
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, InputError
from .discretize import DISCRETIZATIONS, discretize, log_dA
from .init import INITS, init_A, init_log_dt
from .kernel import conv_last, fft_conv, vandermonde_kernel
from .validate import check_tensor

MODES = ("conv", "recurrent", "chunked")


class S4D(nn.Module):
    """Diagonal state-space layer, (B, L, H) -> (B, L, H).

    Parameters follow the reference S4D: ``log_dt`` (H), ``log_A_real`` and ``A_imag``
    (H, N/2), ``C`` (H, N/2, 2) complex stored as real pairs, ``D`` (H), and ``B``
    (H, N/2, 2), fixed to ones unless ``learn_B``.
    """

    def __init__(self, d_model: int, d_state: int = 64, init: str = "lin",
                 discretization: str = "zoh", dt_min: float = 1e-3, dt_max: float = 1e-1,
                 learn_B: bool = False):
        super().__init__()
        if d_model < 1:
            raise ConfigError(f"d_model must be >= 1, got {d_model}")
        if init not in INITS:
            raise ConfigError(f"unknown S4D init {init!r}; expected one of {', '.join(INITS)}")
        if discretization not in DISCRETIZATIONS:
            raise ConfigError(f"unknown discretization {discretization!r}; "
                              f"expected one of {', '.join(DISCRETIZATIONS)}")
        self.d_model, self.d_state = d_model, d_state
        self.init, self.discretization = init, discretization
        log_A_real, A_imag = init_A(d_model, d_state, init)
        self.log_dt = nn.Parameter(init_log_dt(d_model, dt_min, dt_max))
        self.log_A_real = nn.Parameter(log_A_real)
        self.A_imag = nn.Parameter(A_imag)
        C = torch.randn(d_model, d_state // 2, dtype=torch.cfloat)
        self.C = nn.Parameter(torch.view_as_real(C).clone())
        B = torch.view_as_real(torch.ones(d_model, d_state // 2, dtype=torch.cfloat)).clone()
        if learn_B:
            self.B = nn.Parameter(B)
        else:
            self.register_buffer("B", B)
        self.D = nn.Parameter(torch.randn(d_model))
        self._cache_key = None
        self._cache = None

    # ---- parameters -----------------------------------------------------------------
    def ssm_parameters(self) -> list[nn.Parameter]:
        """The parameters trained with their own optimizer group (no weight decay)."""
        ps = [self.log_dt, self.log_A_real, self.A_imag]
        if isinstance(self.B, nn.Parameter):
            ps.append(self.B)
        return ps

    def continuous(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dt (H,), A, B, C (H, N/2) complex)."""
        dt = torch.exp(self.log_dt)
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        return dt, A, torch.view_as_complex(self.B), torch.view_as_complex(self.C)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dA, dB, C), each (H, N/2) complex: the recurrence's coefficients."""
        dt, A, B, C = self.continuous()
        dA, dB = discretize(dt, A, B, self.discretization)
        return dA, dB, C

    def kernel(self, L: int) -> torch.Tensor:
        """Convolution kernel K (H, L)."""
        dt, A, B, C = self.continuous()
        dA, dB = discretize(dt, A, B, self.discretization)
        return vandermonde_kernel(C * dB, log_dA(dt, A, dA, self.discretization), L)

    def _discrete_cached(self):
        """Discretized coefficients, computed once while the parameters do not change.

        Cached only when no gradient is needed (inference/streaming); the key follows
        the parameters' storage and in-place version counters, so an optimizer step,
        ``load_state_dict`` or ``.double()`` invalidates it.
        """
        params = (self.log_dt, self.log_A_real, self.A_imag, self.B, self.C)
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return self.discrete()
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in params)
        if key != self._cache_key:
            self._cache = tuple(t.detach() for t in self.discrete())
            self._cache_key = key
        return self._cache

    # ---- execution modes --------------------------------------------------------------
    def forward(self, u: torch.Tensor, mode: str = "conv", chunk: int = 256) -> torch.Tensor:
        """u (B, L, H) -> y (B, L, H)."""
        check_tensor(u, ndim=3, last=self.d_model, name="u", what="(batch, length, d_model)")
        if mode == "conv":
            return self.conv_hl(u.transpose(1, 2)).transpose(1, 2)
        if mode == "recurrent":
            state = self.init_state(u.shape[0])
            ys = []
            for t in range(u.shape[1]):
                y_t, state = self._step(u[:, t], state)
                ys.append(y_t)
            return torch.stack(ys, 1)
        if mode == "chunked":
            y, _ = self.forward_chunk(u, self.init_state(u.shape[0]), chunk)
            return y
        raise ConfigError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")

    def conv_hl(self, u: torch.Tensor, epilogue=None) -> torch.Tensor:
        """The FFT convolution in channel-major layout, u (B, H, L) -> y (B, H, L); with an
        `epilogue` (``fused.ActDrop``), ``epilogue(y)``, fused into the convolution on CPU.

        No input checks: the training path of SequenceModel calls it between layers, with the
        activations kept channel-major so the FFTs run along the contiguous axis. Under
        mixed-precision autocast the convolution still runs in the parameters' precision.
        """
        if u.dtype != self.D.dtype:
            u = u.to(self.D.dtype)
        return fft_conv(u, self.skip_kernel(u.shape[-1]), epilogue)

    def conv_last_hl(self, u: torch.Tensor) -> torch.Tensor:
        """The last output of ``conv_hl``: u (B, H, L) -> y_{L-1} (B, H) =
        sum_k (K + D delta)_k u_{L-1-k}, one pass over u instead of a whole FFT convolution
        (what a last-token readout needs from the last layer)."""
        if u.dtype != self.D.dtype:
            u = u.to(self.D.dtype)
        return conv_last(u, self.skip_kernel(u.shape[-1]))

    def skip_kernel(self, L: int) -> torch.Tensor:
        """The kernel with the skip term folded in, K + D delta (H, L): y = K * u + D u in one
        convolution, so u is read once and the skip costs no pass of its own."""
        K = self.kernel(L)
        return torch.cat([K[:, :1] + self.D.unsqueeze(-1), K[:, 1:]], dim=1)

    def forward_chunk(self, u: torch.Tensor, state: torch.Tensor, chunk: int = 256
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run u (B, L, H) from `state`, by FFT convolution per chunk; returns (y, new state).

        Within a chunk of length T starting in state x0:
            y_l = (K * u)_l + D u_l + 2 Re(C dA^(l+1) x0)
            x_T = dA^T x0 + sum_j dA^(T-1-j) dB u_j
        """
        check_tensor(u, ndim=3, last=self.d_model, name="u", what="(batch, length, d_model)")
        self._check_state(state, u.shape[0])
        dt, A, B, C = self.continuous()
        dA, dB = discretize(dt, A, B, self.discretization)
        lg = log_dA(dt, A, dA, self.discretization)
        ys = []
        for s in range(0, u.shape[1], chunk):
            uc = u[:, s:s + chunk].transpose(1, 2)                  # (B, H, T)
            T = uc.shape[-1]
            powers = torch.exp(lg.unsqueeze(-1) * torch.arange(T + 1, dtype=uc.dtype, device=uc.device))  # (H, N/2, T+1)
            K = 2 * torch.einsum("hn,hnl->hl", C * dB, powers[..., :T]).real
            y = fft_conv(uc, K) + self.D.unsqueeze(-1) * uc
            y = y + 2 * torch.einsum("hn,bhn,hnl->bhl", C, state, powers[..., 1:]).real
            state = powers[..., T] * state + torch.einsum(
                "hn,hnl,bhl->bhn", dB, powers[..., :T].flip(-1), uc.to(powers.dtype))
            ys.append(y.transpose(1, 2))
        return torch.cat(ys, 1), state

    def init_state(self, batch: int = 1) -> torch.Tensor:
        """Zero state, (batch, H, N/2) complex."""
        cdtype = torch.complex128 if self.log_dt.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.d_model, self.d_state // 2, dtype=cdtype,
                           device=self.log_dt.device)

    def step(self, u_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: u_t (B, H), state (B, H, N/2) -> (y_t (B, H), new state).

        The input state is never modified; a bad token raises before any work.
        """
        check_tensor(u_t, ndim=2, last=self.d_model, name="u_t", what="(batch, d_model)")
        self._check_state(state, u_t.shape[0])
        return self._step(u_t, state)

    def _step(self, u_t, state):
        dA, dB, C = self._discrete_cached()
        state = dA * state + dB * u_t.unsqueeze(-1)
        y = 2 * (C * state).real.sum(-1) + self.D * u_t
        return y, state

    def _check_state(self, state, batch):
        want = (batch, self.d_model, self.d_state // 2)
        if not isinstance(state, torch.Tensor) or not state.is_complex() or tuple(state.shape) != want:
            got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
            raise InputError(f"S4D state must be a complex tensor of shape {want} "
                             f"(from init_state({batch})), got {got}")

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, init={self.init!r}, "
                f"discretization={self.discretization!r}")
