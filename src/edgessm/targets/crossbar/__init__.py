"""Memristive in-memory-compute target: device config, hardware-aware training
wrapper and the crossbar simulator.

    from edgessm.targets.crossbar import hw_wrap, CrossbarConfig
    train(cfg, out, wrap=hw_wrap("default", weight_bits=2), init="runs/fsdd01/best")
    program = edgessm.targets.get("crossbar").compile(model, seed=3, write_noise_sigma_us=15)
"""
from .device import FIELDS, PRESETS, REFERENCES, CrossbarConfig, load_device, parse_options, table_markdown
from .hw import HwSequenceModel, hw_wrap, project, save_hw
from .program import CrossbarProgram, CrossbarState, CrossbarTarget

__all__ = ["CrossbarConfig", "FIELDS", "PRESETS", "REFERENCES", "load_device", "parse_options",
           "table_markdown", "HwSequenceModel", "hw_wrap", "project", "save_hw",
           "CrossbarProgram", "CrossbarState", "CrossbarTarget"]
