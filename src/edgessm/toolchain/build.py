"""Builds on the host, cached: a compiled file is kept under ``resources.cache_root()/build``
and named by a key over its source text, the compiler (path and ``--version``), the flags
and, for builds tuned to this CPU (-march, -mcpu, -mtune), the CPU's model and features (a
cache shared by several machines, e.g. a home folder on a network drive, keeps one library per
CPU kind: a library built with -march=native on one CPU can die with SIGILL on another).

Every build writes a temporary file next to its destination and renames it into place, so
a reader (another thread or process) sees either no file or a whole one; a cached library
that does not load (truncated, damaged) is rebuilt once (:func:`load_shared`).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from ..errors import ToolchainError
from ..resources import cache_root
from .host import compiler_id, cpu_features, find_cc

TAIL = 3000             # characters of a failing tool's error output shown


def cache_dir(*sub: str) -> Path:
    """``cache_root()/build[/sub...]``."""
    return cache_root().joinpath("build", *sub)


def is_native(flags) -> bool:
    """Whether `flags` tune the code for this CPU (then the key covers the CPU's features)."""
    return any(f.startswith(("-march", "-mcpu", "-mtune")) for f in flags)


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


def _shown(cmd: list[str], n: int = 8) -> str:
    return " ".join(cmd[:n]) + (" ..." if len(cmd) > n else "")


def tail(text: str, n: int = TAIL) -> str:
    """The last `n` characters of a tool's output (where its summary is)."""
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def run_tool(cmd: list[str], what: str, cwd=None) -> subprocess.CompletedProcess:
    """Run a compiler, linker or binary utility; a ToolchainError with the end of its error
    output when it cannot be run or fails."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=cwd)
    except OSError as e:
        raise ToolchainError(f"{what}: cannot run {cmd[0]} ({e.strerror or e}); install it or fix PATH / CC") from None
    if r.returncode:
        raise ToolchainError(f"{what} failed (exit {r.returncode}: {_shown(cmd)}):\n{tail(r.stderr or r.stdout)}")
    return r


def compile_into(out: Path, cmd: list[str], what: str) -> Path:
    """Run ``cmd -o TMP`` (TMP a new file beside `out`) and rename TMP to `out`; nothing when
    `out` exists. A ToolchainError when the cache folder is not writable or the command fails
    (TMP is removed)."""
    out = Path(out)
    if out.is_file():
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=out.suffix or ".bin", prefix=f".{out.stem}-", dir=out.parent)
    except OSError as e:
        raise ToolchainError(f"cannot write the compiled code to {out.parent} ({e.strerror or e}); "
                             f"set EDGESSM_CACHE to a writable directory") from None
    os.close(fd)
    try:
        run_tool([*cmd, "-o", tmp], what)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def shared_library(source, flags: list[str], *, cc: str | None = None, name: str | None = None,
                   subdir: str = "", libs: tuple = (), purpose: str = "building C code",
                   fallback: str = "") -> Path:
    """A shared library compiled from `source` with `flags`, cached: its path.

    source: a ``.c`` file (compiled where it is), or {file name: text} (written to a temporary
    folder, its ``.c`` files compiled with ``-I`` that folder; the library is named after the
    first). cc: the compiler (default :func:`~.host.find_cc`, whose error names `purpose` and
    `fallback`). subdir: a folder under the cache. libs: linked after the sources (``-lm``)."""
    cc = cc or find_cc(purpose, fallback)
    files = source if isinstance(source, dict) else None
    if files is not None:
        texts = list(files.values())
        cfiles = [f for f in files if f.endswith(".c")]
        name = name or Path(cfiles[0]).stem
    else:
        source = Path(source)
        texts, name = [source.read_bytes()], name or source.stem
    key = cache_key(*texts, cc=cc, flags=flags, native=is_native(flags))
    out = cache_dir(*([subdir] if subdir else [])) / f"{name}-{key}.so"
    if out.is_file():
        return out
    if files is None:
        return compile_into(out, [cc, *flags, str(source), *libs], f"compiling {source.name} with {cc}")
    with tempfile.TemporaryDirectory(prefix=f"edgessm-{name}-") as td:
        for fname, text in files.items():
            (Path(td) / fname).write_bytes(text if isinstance(text, bytes) else str(text).encode())
        return compile_into(out, [cc, *flags, "-I", td, *(str(Path(td) / f) for f in cfiles), *libs],
                            f"compiling {', '.join(cfiles)} ({purpose}) with {cc}")


def load_shared(source, flags: list[str], **kw) -> ctypes.CDLL:
    """:func:`shared_library` loaded with ctypes (its path as ``.path``). A cached library
    that does not load is removed and built again, once; a fresh one that does not load is a
    ToolchainError."""
    path = shared_library(source, flags, **kw)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        try:
            path.unlink()
        except OSError:
            pass
        path = shared_library(source, flags, **kw)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as e:
            raise ToolchainError(f"cannot load the compiled library {path}: {e}") from None
    lib.path = path
    return lib
