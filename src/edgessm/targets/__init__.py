"""Execution targets: one folder per executor, all answering the Program protocol, each
declaring its typed config and its capabilities."""
from .base import Cost, Program, Target, available, evaluate_program, get, register
from .config import Capabilities, TargetConfig, parse_sets

__all__ = ["Cost", "Program", "Target", "Capabilities", "TargetConfig", "get", "register", "available",
           "evaluate_program", "parse_sets"]
