"""Exceptions raised by edgessm.

Every error the library raises on purpose is an :class:`EdgessmError`; its message says
what was wrong, what was expected and what to do. The command line prints the message
(no traceback) and exits non-zero. This module imports nothing from the package, so any
layer (``ssm``, ``data``, ``quant``, ``targets``) may raise these.
"""


class EdgessmError(Exception):
    """Base class of all deliberate edgessm errors."""


class InputError(EdgessmError, ValueError):
    """Bad input tensor: wrong shape, dtype, NaN/inf, out-of-range token."""


class ConfigError(EdgessmError, ValueError):
    """A configuration, spec or command-line value is invalid."""


class DataError(EdgessmError):
    """A data set is missing, corrupt, or fails its checksum."""


class MissingDataError(DataError):
    """A data set is absent from the data root and may not be downloaded."""


class CheckpointError(EdgessmError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class ToolchainError(EdgessmError):
    """A C compiler (or the Cortex-M cross toolchain) is missing, or a build or a built program
    failed: the message names what was looked for, or ends with the compiler's error output."""


class UnknownNameError(EdgessmError, KeyError):
    """An unknown task, model, preset, target or tensor name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
