"""Import an S4D layer of the reference implementation (state-spaces/s4, models/s4/s4d.py).

Its layer maps (B, H, L) -> (B, H, L) as y = GLU(Conv1x1(GELU(K * u + D u))), GLU over
channels, with K_l = 2 Re(sum_n C_n (exp(dt A_n) - 1)/A_n exp(dt A_n l)), i.e. ZOH with
B = 1. That is exactly an edgessm Block with GELU, GLU mixing, no norm, no residual;
edgessm's Block is batch-first, (B, L, H).
"""
from __future__ import annotations

import torch

from ..errors import CheckpointError
from .network import Block

REFERENCE_KEYS = ("kernel.log_dt", "kernel.C", "kernel.log_A_real", "kernel.A_imag", "D",
                  "output_linear.0.weight", "output_linear.0.bias")


def from_reference_s4d(state_dict: dict) -> Block:
    """Build a Block with the same outputs as the reference S4D layer of `state_dict`."""
    missing = [k for k in REFERENCE_KEYS if k not in state_dict]
    if missing:
        raise CheckpointError(f"not a reference S4D state_dict: missing key(s) {', '.join(missing)}; "
                              f"expected {', '.join(REFERENCE_KEYS)}")
    sd = {k: torch.as_tensor(state_dict[k]) for k in REFERENCE_KEYS}
    H = sd["kernel.log_dt"].shape[0]
    n2 = sd["kernel.log_A_real"].shape[-1]
    want = {"kernel.log_dt": (H,), "kernel.C": (H, n2, 2), "kernel.log_A_real": (H, n2),
            "kernel.A_imag": (H, n2), "D": (H,), "output_linear.0.weight": (2 * H, H, 1),
            "output_linear.0.bias": (2 * H,)}
    for k, shape in want.items():
        if tuple(sd[k].shape) != shape:
            raise CheckpointError(f"reference S4D key {k} has shape {tuple(sd[k].shape)}, "
                                  f"expected {shape} for d_model={H}, d_state={2 * n2}")
    if any(not torch.isfinite(v).all() for v in sd.values()):
        raise CheckpointError("reference S4D state_dict contains NaN or infinite values")
    block = Block(H, 2 * n2, activation="gelu", mixing="glu", residual=False, norm="none",
                  prenorm=False, dropout=0.0, init="lin", discretization="zoh")
    dtype = sd["kernel.log_dt"].dtype if sd["kernel.log_dt"].is_floating_point() else torch.float32
    block.to(dtype)
    with torch.no_grad():
        s = block.s4d
        s.log_dt.copy_(sd["kernel.log_dt"])
        s.C.copy_(sd["kernel.C"])
        s.log_A_real.copy_(sd["kernel.log_A_real"])
        s.A_imag.copy_(sd["kernel.A_imag"])
        s.D.copy_(sd["D"])
        block.mix.weight.copy_(sd["output_linear.0.weight"].squeeze(-1))
        block.mix.bias.copy_(sd["output_linear.0.bias"])
    return block
