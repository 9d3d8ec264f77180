"""The host's C compiler: which one (``$CC``, else cc, gcc or clang on PATH), what it is (its
path and ``--version``), and what the CPU it builds for can do (the features ``-march=native``
depends on)."""
from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess

from ..errors import ToolchainError

CANDIDATES = ("cc", "gcc", "clang")
INSTALL = "install one (e.g. `apt-get install gcc`, `dnf install gcc`, `xcode-select --install`)"


def find_cc(purpose: str = "building C code", fallback: str = "") -> str:
    """The C compiler's path: ``$CC`` (a command on PATH or a path), else the first of cc, gcc,
    clang on PATH. Otherwise a ToolchainError saying what `purpose` needs, what was looked for
    and how to install one; `fallback` names what works without a compiler."""
    tail = f"; or {fallback}" if fallback else ""
    env = os.environ.get("CC")
    if env:
        cc = shutil.which(env)
        if not cc:
            raise ToolchainError(f"{purpose} needs a C99 compiler: cannot run the C compiler CC={env!r} (no "
                                 f"such executable); unset CC or point it at cc, gcc or clang ({INSTALL}){tail}")
        return cc
    for name in CANDIDATES:
        cc = shutil.which(name)
        if cc:
            return cc
    raise ToolchainError(f"{purpose} needs a C99 compiler (cc, gcc or clang) on PATH, or CC set: none of "
                         f"{', '.join(CANDIDATES)} is on PATH and CC is not set; {INSTALL}{tail}")


@functools.lru_cache(maxsize=None)
def compiler_id(cc: str) -> str:
    """The compiler's path, resolved path and ``--version`` output (a new gcc behind the same
    ``cc`` is another compiler)."""
    path = shutil.which(cc) or cc
    try:
        real = os.path.realpath(path)
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        ver = (r.stdout or r.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        real, ver = path, "?"
    return f"{path}|{real}|{ver}"


@functools.lru_cache(maxsize=None)
def cpu_features() -> str:
    """The machine and its CPU's model and feature flags (what -march=native depends on)."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name", "CPU part", "isa")):
                    parts.append(" ".join(line.split()))
                if line.strip() == "" and len(parts) > 2:   # the first processor is enough
                    break
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def native_arch() -> bool:
    """Whether the host compilers tune for this CPU with -march=native (x86-64 and arm64)."""
    return platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")
