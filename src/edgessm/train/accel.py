"""Where and how a training step runs: the device, the numeric precision, compilation.

    device     "auto" (CUDA when present, else the CPU), "cpu", "cuda" or "cuda:N"
    precision  "fp32"; "bf16-mixed" (autocast to bfloat16, CPU or CUDA); "fp16-mixed"
               (autocast to float16 with a gradient scaler, CUDA only)
    compile    torch.compile (inductor) of the model's forward and backward; on failure the run
               goes on uncompiled with one warning, never silently

Under either mixed precision the S4D kernel and its FFT convolution stay in float32 (see
``S4D.conv_hl``); autocast lowers the mixing, encoder and decoder products.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Callable

import torch

from ..errors import ConfigError
from ..resources import cache_root

PRECISIONS = ("fp32", "bf16-mixed", "fp16-mixed")
_DTYPES = {"bf16-mixed": torch.bfloat16, "fp16-mixed": torch.float16}


def check_device_name(name: str, label: str = "device") -> str:
    """The device name if it is one of the accepted forms, else a ConfigError."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ConfigError(f"{label} must be auto, cpu, cuda or cuda:N, got {name!r}")
    return name


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def available_devices() -> list[str]:
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{i}" for i in range(n)]


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """The torch.device to train on. Under torchrun, "auto" and "cuda" take the GPU of the
    process's local rank."""
    check_device_name(name)
    have = available_devices()
    if name == "auto":
        name = "cuda" if len(have) > 1 else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if len(have) == 1:
        raise ConfigError(f"device {name!r} asked for, but this machine has no CUDA device "
                          f"(torch {torch.__version__}, available: {', '.join(have)}); use --device cpu")
    dev = torch.device(name if ":" in name else f"cuda:{local_rank % (len(have) - 1)}")
    if f"cuda:{dev.index}" not in have:
        raise ConfigError(f"device {name!r} does not exist; available: {', '.join(have)}")
    return dev


def check_precision_on(precision: str, device: torch.device) -> None:
    check_precision(precision)
    if precision == "fp16-mixed" and device.type != "cuda":
        raise ConfigError("precision fp16-mixed needs a CUDA device (float16 autocast with a "
                          "gradient scaler); on the CPU use bf16-mixed or fp32")
    if precision == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision bf16-mixed: {torch.cuda.get_device_name(device)} has no bfloat16; "
                          f"use fp16-mixed or fp32")


def autocast(device: torch.device, precision: str):
    """The autocast context of a training forward (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str):
    """A gradient scaler for fp16-mixed, else None."""
    if precision == "fp16-mixed":
        return torch.amp.GradScaler(device.type)
    return None


def default_cache_dir() -> Path:
    return cache_root() / "inductor"


class Compiled:
    """A model's forward, compiled by torch.compile, with an explicit fallback.

    Compilation happens in the first training step (the forward graph in the first call, the
    backward graph in the first backward); the loop reports that step's time apart from the
    others. The generated code is cached between runs in ``$TORCHINDUCTOR_CACHE_DIR`` (default
    ``~/.cache/edgessm/inductor``). If compilation fails, the model runs uncompiled from then
    on, ``error`` says why and ``log`` gets one line.
    """

    def __init__(self, model: torch.nn.Module, enabled: bool = True,
                 log: Callable[[str], None] | None = None):
        self.model, self.enabled, self.log = model, enabled, log or (lambda s: None)
        self.error: str | None = None
        self.backward_done = False
        self._fn = model
        if enabled:
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(default_cache_dir()))
            self._fn = torch.compile(model)

    @property
    def compiled(self) -> bool:
        return self.enabled and self.error is None

    def fail(self, e: BaseException) -> None:
        """Go on uncompiled after compiler failure `e`, saying so once."""
        msg = str(e).strip().splitlines()
        self.error = f"{type(e).__name__}: {msg[0][:300] if msg else ''}"
        self.log(f"warning: torch.compile failed ({self.error}); training goes on uncompiled "
                 f"(compile = false in [train], or --no-compile, skips the attempt)")
        self._fn = self.model

    def __call__(self, *args, **kwargs):
        if not self.compiled or self.backward_done:
            return self._fn(*args, **kwargs)
        try:
            return self._fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compiler failure: go on uncompiled, say so
            from ..errors import EdgessmError
            if isinstance(e, EdgessmError):     # bad input, not the compiler
                raise
            self.fail(e)
            return self._fn(*args, **kwargs)
