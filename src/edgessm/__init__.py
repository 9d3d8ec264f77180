"""edgessm: diagonal state-space models (S4D) for token-by-token streaming on edge hardware."""
from .errors import (CheckpointError, ConfigError, DataError, EdgessmError, InputError,
                     UnknownNameError)
from .ssm import S4D, Block, ModelConfig, NetState, SequenceModel, from_reference_s4d
from .io import load, save
from . import targets
from .targets import Cost
from .targets.cpu import StreamPool
from .quant import QuantSequenceModel, QuantSpec, quantize

__version__ = "0.1.0"

__all__ = ["S4D", "Block", "SequenceModel", "ModelConfig", "NetState", "from_reference_s4d",
           "save", "load", "EdgessmError", "InputError", "ConfigError", "DataError",
           "CheckpointError", "UnknownNameError", "targets", "Cost", "StreamPool", "QuantSpec",
           "QuantSequenceModel", "quantize", "__version__"]
