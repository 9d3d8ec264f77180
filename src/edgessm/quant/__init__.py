"""Quantization: fixed-point formats, quantizers (uniform, power-of-two, LSQ, ternary,
binary), QuantSpec, the quantized model (fake-quant in training, integer-exact in eval),
PTQ and the QAT wrapper.

    spec = QuantSpec.preset("loihi2")
    qmodel = quantize(model, spec, calibration=X)       # PTQ
    net = qmodel.integer_network()                      # what targets/fixed executes
"""
from .fixedpoint import int_range, rshift_round_np, rshift_round_t, saturate_np, saturate_t
from .intnet import DenseInt, IntNet, IntState, S4DInt
from .model import QuantSequenceModel, build_quantized, check_quantizable, unsupported
from .ptq import calibration_data, qat_wrap, quant_wrap, quantize
from .quantizers import (fake_quant_act, fake_quant_coeff, fake_quant_weight, quantize_coeff,
                         quantize_weight, round_ste)
from .spec import KINDS, METHODS, PRESETS, QuantSpec, TensorSpec

__all__ = ["QuantSpec", "TensorSpec", "KINDS", "METHODS", "PRESETS", "QuantSequenceModel",
           "build_quantized", "quantize", "qat_wrap", "quant_wrap", "calibration_data", "check_quantizable",
           "unsupported", "IntNet", "IntState", "DenseInt", "S4DInt", "quantize_weight", "fake_quant_weight",
           "quantize_coeff", "fake_quant_coeff", "fake_quant_act", "round_ste", "int_range",
           "rshift_round_np", "rshift_round_t", "saturate_np", "saturate_t"]
