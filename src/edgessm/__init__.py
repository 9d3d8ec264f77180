"""edgessm: diagonal state-space models (S4D) for token-by-token streaming on edge hardware.

The names below are imported on first use (``edgessm.S4D`` imports torch then), so that
``import edgessm`` and ``edgessm --help`` stay fast.
"""
from .errors import (CheckpointError, ConfigError, DataError, EdgessmError, InputError,
                     UnknownNameError)

__version__ = "0.1.0"

_LAZY = {
    "S4D": ".ssm", "Block": ".ssm", "ModelConfig": ".ssm", "NetState": ".ssm",
    "SequenceModel": ".ssm", "from_reference_s4d": ".ssm",
    "load": ".io", "save": ".io",
    "Cost": ".targets", "StreamPool": ".targets.cpu",
    "QuantSequenceModel": ".quant", "QuantSpec": ".quant", "quantize": ".quant",
}
_SUBMODULES = {"targets", "ssm", "io", "quant", "data", "train", "deploy", "export", "report", "bench"}

__all__ = ["S4D", "Block", "SequenceModel", "ModelConfig", "NetState", "from_reference_s4d",
           "save", "load", "EdgessmError", "InputError", "ConfigError", "DataError",
           "CheckpointError", "UnknownNameError", "targets", "Cost", "StreamPool", "QuantSpec",
           "QuantSequenceModel", "quantize", "__version__"]


def __getattr__(name):
    import importlib
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'edgessm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
