"""Compile the C kernel once per machine into a shared library, cached by the hash of the source,
the compiler (its path and its ``--version``), the flags and the CPU's features (a cache shared by
several machines, e.g. a home folder on a network drive, keeps one library per CPU kind: a library
built with -march=native on one CPU can die with SIGILL on another)."""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...errors import EdgessmError
from ...resources import cache_root

FLAGS = ["-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", "-fPIC", "-shared", "-std=c99",
         "-pthread"]


def cache_dir() -> Path:
    return cache_root() / "build"


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise EdgessmError("the fast CPU engine needs a C compiler (cc, gcc or clang) on PATH, or CC set; "
                           "install one (e.g. apt-get install gcc) or use engine='torch'")
    return cc


@functools.lru_cache(maxsize=None)
def compiler_id(cc: str) -> str:
    """The compiler's resolved path and its ``--version`` output (a new gcc behind the same
    ``cc`` gets a new cache entry)."""
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


def cache_key(*texts, cc: str, flags: list[str], native: bool = True) -> str:
    """16 hex digits over the sources, the compiler id, the flags and (for native builds) the
    CPU's features."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t if isinstance(t, bytes) else str(t).encode())
        h.update(b"\0")
    h.update(compiler_id(cc).encode() + b"\0" + " ".join(flags).encode() + b"\0")
    if native:
        h.update(cpu_features().encode())
    return h.hexdigest()[:16]


def build_shared(source: Path, flags: list[str] | None = None) -> ctypes.CDLL:
    flags = FLAGS if flags is None else flags
    text = source.read_bytes()
    cc = compiler()
    key = cache_key(text, cc=cc, flags=flags, native=any(f.startswith(("-march", "-mcpu", "-mtune")) for f in flags))
    out = cache_dir() / f"{source.stem}-{key}.so"
    if not out.is_file():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        except OSError as e:
            raise EdgessmError(f"cannot write the compiled kernel to {out.parent} ({e.strerror}); "
                               f"set EDGESSM_CACHE to a writable directory") from None
        os.close(fd)
        try:
            r = subprocess.run([cc, *flags, str(source), "-o", tmp, "-lm"], capture_output=True, text=True)
        except OSError as e:
            os.unlink(tmp)
            raise EdgessmError(f"cannot run the C compiler {cc!r} ({e.strerror}); set CC to an "
                               f"installed compiler (cc, gcc or clang) or use engine='torch'") from None
        if r.returncode:
            os.unlink(tmp)
            raise EdgessmError(f"compiling {source.name} with {cc} failed:\n{r.stderr.strip()[:2000]}")
        os.replace(tmp, out)
    return ctypes.CDLL(str(out))


class NativeLib:
    """A C library compiled from `source` on first use (:func:`build_shared`, cached), built with
    each flag set in turn until one compiles (e.g. with OpenMP, then without), its ctypes
    signatures set by `bind(lib)`. A failure is remembered with its reason (``why``), so a caller
    falls back once and can say why."""

    def __init__(self, source: Path, *flag_sets: list[str], bind):
        self.source, self.flag_sets, self.bind = source, flag_sets, bind
        self._lib: ctypes.CDLL | None = None
        self.why: str | None = None

    def get(self) -> ctypes.CDLL | None:
        """The loaded library, or None when it cannot be built or loaded here."""
        if self._lib is None and self.why is None:
            try:
                lib, err = None, None
                for flags in self.flag_sets:
                    try:
                        lib = build_shared(self.source, flags)
                        break
                    except EdgessmError as e:
                        err = e
                if lib is None:
                    raise err
                self.bind(lib)
                self._lib = lib
            except (EdgessmError, OSError) as e:
                self.why = str(e).splitlines()[0]
        return self._lib

    def available(self) -> tuple[bool, str]:
        """(True, "") when the library loads here, else (False, the reason)."""
        return self.get() is not None, self.why or ""


def ptr(t, T):
    """A ctypes pointer of type T to the data of a (contiguous) tensor."""
    return ctypes.cast(t.data_ptr(), ctypes.POINTER(T))
