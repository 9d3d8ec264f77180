"""Memristive in-memory-compute target: device config, hardware-aware training
wrapper and the crossbar simulator.

    from edgessm.targets.crossbar import hw_wrap, CrossbarConfig
    train(cfg, out, wrap=hw_wrap("default", weight_bits=2), init="runs/fsdd01/best")
    program = edgessm.targets.get("crossbar").compile(model, seed=3, write_noise_sigma_us=15)

``CrossbarConfig`` is a resolved device; ``CrossbarTargetConfig`` is what a user asks of the
target (a device preset and the fields to change, the rest taken from the device or the model).
"""
from .device import (FIELDS, PRESETS, REFERENCES, CrossbarConfig, CrossbarTargetConfig, load_device,
                     parse_options, table_markdown)
from .hw import HwSequenceModel, hw_wrap, project, save_hw
from .program import CrossbarProgram, CrossbarState, CrossbarTarget

__all__ = ["CrossbarConfig", "CrossbarTargetConfig", "FIELDS", "PRESETS", "REFERENCES", "load_device",
           "parse_options", "table_markdown", "HwSequenceModel", "hw_wrap", "project", "save_hw",
           "CrossbarProgram", "CrossbarState", "CrossbarTarget"]
