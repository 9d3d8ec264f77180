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
    if tracing():   # torch.export / dynamo / ONNX: no data-dependent check inside the graph
        return
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains NaN or infinite values; clean the input before feeding it")
