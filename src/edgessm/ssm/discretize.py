"""Discretization of the continuous diagonal SSM x' = A x + B u, y = 2 Re(C x) + D u.

Both rules return complex (dA, dB) with the shapes of A (…, N/2):

* ``zoh``:      dA = exp(dt A),                 dB = (dA - 1) / A * B
* ``bilinear``: dA = (1 + dt A/2) / (1 - dt A/2), dB = dt B / (1 - dt A/2)
"""
from __future__ import annotations

import torch

from ..errors import ConfigError

DISCRETIZATIONS = ("zoh", "bilinear")


def discretize(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, method: str = "zoh"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """dt (H,) real, A and B (H, N/2) complex -> (dA, dB) (H, N/2) complex."""
    dtA = dt.unsqueeze(-1) * A
    if method == "zoh":
        dA = torch.exp(dtA)
        dB = (dA - 1) / A * B
    elif method == "bilinear":
        den = 1 - dtA / 2
        dA = (1 + dtA / 2) / den
        dB = dt.unsqueeze(-1) * B / den
    else:
        raise ConfigError(f"unknown discretization {method!r}; expected one of {', '.join(DISCRETIZATIONS)}")
    return dA, dB


def log_dA(dt: torch.Tensor, A: torch.Tensor, dA: torch.Tensor, method: str) -> torch.Tensor:
    """Complex log of dA, used to build powers dA**l as exp(l * log dA) accurately."""
    if method == "zoh":
        return dt.unsqueeze(-1) * A  # exact, no branch cut issues
    return torch.log(dA)
