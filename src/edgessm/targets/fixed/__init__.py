"""``fixed``: integer-only execution of a quantized network (numpy int64), bit-exact to the
quantized PyTorch model. ``targets/loihi2`` builds on it."""
from .engine import Engine, EngineState
from .program import FixedConfig, FixedProgram, FixedTarget, lower

__all__ = ["Engine", "EngineState", "FixedConfig", "FixedProgram", "FixedTarget", "lower"]
