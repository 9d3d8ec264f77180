"""S4D math and networks: initialization, discretization, kernel, layer, network.

Depends on torch alone (and the package's error classes).
"""
from .discretize import DISCRETIZATIONS, discretize
from .init import INITS, init_A, init_log_dt
from .kernel import fft_conv, vandermonde_kernel
from .layer import S4D
from .network import PRESETS, Block, ModelConfig, NetState, SequenceModel
from .reference import from_reference_s4d

__all__ = ["S4D", "Block", "SequenceModel", "ModelConfig", "NetState", "PRESETS", "INITS",
           "DISCRETIZATIONS", "discretize", "init_A", "init_log_dt", "fft_conv",
           "vandermonde_kernel", "from_reference_s4d"]
