"""Export of quantized networks to other toolchains.

    from edgessm.export import export_c
    res = export_c(qmodel, "out/", name="smnist", verify=X_test)   # out/smnist.h, out/smnist.c

``c``: portable C99 for microcontrollers, bit-exact to the integer engine (``targets/fixed``,
whose generator ``targets/fixed/cgen.py`` writes the code).
Command line: ``edgessm export-c MODEL --out DIR [--verify N] [--mcu CORE]`` (``export/cli.py``);
``mcu``: cross-compiled for a Cortex-M core, sized, run bit-exact under emulation and its cycles
per token counted (``export/mcu.py``, harness and start-up code in ``export/cortexm/``).
"""
from ..targets.fixed.cgen import CFLAGS, CCompilerError, build, find_compiler, generate, verify_c
from .c import export_c

__all__ = ["CFLAGS", "CCompilerError", "build", "export_c", "find_compiler", "generate", "verify_c"]
