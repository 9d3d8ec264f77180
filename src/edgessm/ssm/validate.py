"""Input checks shared by the layer and the network (reject before touching state)."""
from __future__ import annotations

import torch

from ..errors import InputError


def check_tensor(x, *, ndim: int, last: int, name: str, what: str) -> None:
    """Raise InputError unless x is a finite floating tensor of `ndim` dims, last dim `last`."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor {what}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor {what}, got dtype {x.dtype}; "
                         f"convert it with .float()")
    if x.dim() != ndim or x.shape[-1] != last:
        raise InputError(f"{name} has shape {tuple(x.shape)}, expected {what} with last dimension {last}")
    if x.device.type == "meta" or torch.compiler.is_compiling():
        return  # no values to look at (meta), or a compiled graph (its caller checked the data)
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains NaN or infinite values; clean the input before feeding it")
