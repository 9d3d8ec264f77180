"""The `cpu` target: measured float32 streaming (a C kernel, or PyTorch)."""
from .engine import CPU_POWER, CpuTarget, FastProgram, StreamState, TorchProgram
from .pool import StreamPool

__all__ = ["CpuTarget", "FastProgram", "TorchProgram", "StreamState", "CPU_POWER", "StreamPool"]
