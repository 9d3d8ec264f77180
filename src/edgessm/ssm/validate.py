"""Input checks shared by the layer and the network (reject before touching state)."""
from __future__ import annotations

import torch

from ..errors import InputError


def tracing() -> bool:
    """True while torch.export, torch.compile (dynamo), torch.jit or the ONNX exporter traces the
    model: the checks that read tensor values are left out of the graph (eager calls keep them)."""
    comp = getattr(torch, "compiler", None)
    if comp is not None and (getattr(comp, "is_compiling", lambda: False)()
                             or getattr(comp, "is_exporting", lambda: False)()):
        return True
    return bool(torch.jit.is_tracing() or torch.jit.is_scripting())


def check_tensor(x, *, ndim: int, last: int, name: str, what: str) -> None:
    """Raise InputError unless x is a finite floating tensor of `ndim` dims, last dim `last`."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor {what}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor {what}, got dtype {x.dtype}; "
                         f"convert it with .float()")
    if x.dim() != ndim or x.shape[-1] != last:
        raise InputError(f"{name} has shape {tuple(x.shape)}, expected {what} with last dimension {last}")
    if ndim == 3 and x.shape[1] == 0:
        raise InputError(f"{name} has length 0 (shape {tuple(x.shape)}); a sequence needs at least one token")
    if x.device.type == "meta" or tracing():
        return  # no values to look at (meta), or torch.export / dynamo / ONNX tracing a graph
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains NaN or infinite values; clean the input before feeding it")


def as_dtype(x: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """A checked floating tensor in the model's dtype; a value that does not fit is an error."""
    if x.dtype == dtype:
        return x
    y = x.to(dtype)
    if not bool(torch.isfinite(y).all()):
        raise InputError(f"{name} has values too large for the model's {str(dtype).replace('torch.', '')} "
                         f"(largest magnitude {x.abs().max().item():.3g}); scale the input")
    return y


def all_finite(x: torch.Tensor) -> bool:
    """Whether every value of x is finite (a meta tensor, which holds no values, and a traced graph
    pass)."""
    return x.device.type == "meta" or tracing() or bool(torch.isfinite(x).all())
