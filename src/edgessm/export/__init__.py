"""Export of quantized networks to other toolchains.

    from edgessm.export import export_c
    res = export_c(qmodel, "out/", name="smnist", verify=X_test)   # out/smnist.h, out/smnist.c

``c``: portable C99 for microcontrollers, bit-exact to the integer engine (``targets/fixed``,
whose generator ``targets/fixed/cgen/`` writes the code).
Command line: ``edgessm export-c MODEL --out DIR [--verify N] [--mcu CORE]`` (``cli/export.py``);
``mcu``: cross-compiled for a Cortex-M core, sized, run bit-exact under emulation and its cycles
per token counted (``export/mcu.py``, harness and start-up code in ``export/cortexm/``).
"""
__all__ = ["CFLAGS", "CCompilerError", "ToolchainError", "build", "export_c", "find_compiler", "generate",
           "verify_c"]


def __getattr__(name):   # imported on first use, so the command line (cli/export.py) starts fast
    import importlib
    if name == "export_c":
        value = importlib.import_module(".c", __name__).export_c
    elif name in ("verify_c", "build", "find_compiler"):
        value = getattr(importlib.import_module("..targets.fixed.verify", __name__), name)
    elif name in ("CCompilerError", "ToolchainError"):          # two names of one error
        value = importlib.import_module("..errors", __name__).ToolchainError
    elif name in __all__:
        value = getattr(importlib.import_module("..targets.fixed.cgen", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
