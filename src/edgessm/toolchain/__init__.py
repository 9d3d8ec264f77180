"""The C toolchain of edgessm, one place for everything that compiles C:

* :mod:`.host`: the host compiler (``$CC``, else cc, gcc or clang; :func:`find_cc`), its
  identity (:func:`compiler_id`) and the CPU's features (:func:`cpu_features`);
* :mod:`.build`: the build cache under ``resources.cache_root()/build``, keyed by source text,
  flags, compiler and (for -march=native builds) CPU (:func:`cache_key`); atomic builds
  (:func:`compile_into`), shared libraries (:func:`shared_library`, :func:`load_shared`);
* :mod:`.native`: a shipped ``.c`` file as a lazily built library with a remembered failure
  reason (:class:`NativeLib`) and :func:`ptr` for tensors;
* :mod:`.elf`: section sizes of ELF objects (:func:`section_bytes`);
* :mod:`.cross`: the Cortex-M cross toolchain (:func:`find_arm_toolchain`).

Used by the CPU kernel, the crossbar scan and simulator, the integer engine's C backend and
the C export (host and Cortex-M). It imports only the leaf utilities (errors, resources).
Errors are :class:`~edgessm.errors.ToolchainError`.
"""
from ..errors import ToolchainError
from .build import cache_dir, cache_key, compile_into, is_native, load_shared, run_tool, shared_library
from .cross import APT, ArmToolchain, find_arm_toolchain
from .elf import section_bytes, sections_bytes
from .host import compiler_id, cpu_features, find_cc, native_arch
from .native import NativeLib, ptr

__all__ = ["APT", "ArmToolchain", "NativeLib", "ToolchainError", "cache_dir", "cache_key", "compile_into",
           "compiler_id", "cpu_features", "find_arm_toolchain", "find_cc", "is_native", "load_shared",
           "native_arch", "ptr", "run_tool", "section_bytes", "sections_bytes", "shared_library"]
