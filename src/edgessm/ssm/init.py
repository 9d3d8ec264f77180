"""S4D initializations of the diagonal state matrix A and the time step dt.

A = -exp(log_A_real) + i * A_imag, one (d_state/2)-vector of complex eigenvalues per
channel (the conjugate halves are implicit: outputs take 2 * Re(...)).

* ``lin``  (S4D-Lin):  A_n = -1/2 + i*pi*n
* ``inv``  (S4D-Inv):  A_n = -1/2 + i*(N/pi)*(N/(2n+1) - 1)
* ``real`` (S4D-Real): A_n = -(n + 1)            (no imaginary part)

dt is drawn log-uniformly in [dt_min, dt_max], one per channel.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError

INITS = ("lin", "inv", "real")


def init_A(d_model: int, d_state: int, init: str = "lin") -> tuple[torch.Tensor, torch.Tensor]:
    """Return (log_A_real, A_imag), both (d_model, d_state // 2), float32."""
    if d_state < 2 or d_state % 2:
        raise ConfigError(f"d_state must be an even number >= 2 (complex pairs), got {d_state}")
    n2 = d_state // 2
    n = torch.arange(n2, dtype=torch.float64)
    if init == "lin":
        real = torch.full((n2,), 0.5, dtype=torch.float64)
        imag = math.pi * n
    elif init == "inv":
        real = torch.full((n2,), 0.5, dtype=torch.float64)
        imag = (d_state / math.pi) * (d_state / (2 * n + 1) - 1)
    elif init == "real":
        real = n + 1
        imag = torch.zeros(n2, dtype=torch.float64)
    else:
        raise ConfigError(f"unknown S4D init {init!r}; expected one of {', '.join(INITS)}")
    log_A_real = torch.log(real).expand(d_model, n2).clone().float()
    A_imag = imag.expand(d_model, n2).clone().float()
    return log_A_real, A_imag


def init_log_dt(d_model: int, dt_min: float = 1e-3, dt_max: float = 1e-1,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """log(dt), dt log-uniform in [dt_min, dt_max]; shape (d_model,)."""
    if not (0 < dt_min <= dt_max):
        raise ConfigError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    r = torch.rand(d_model, generator=generator)
    return r * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
