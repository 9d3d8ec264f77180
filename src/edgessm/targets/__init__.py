"""Execution targets: one folder per executor, all answering the Program protocol."""
from .base import Cost, Program, Target, available, evaluate_program, get, register

__all__ = ["Cost", "Program", "Target", "get", "register", "available", "evaluate_program"]
