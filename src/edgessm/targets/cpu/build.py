"""Compile the C kernel once per machine into a shared library (cached by source hash)."""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ...errors import EdgessmError

FLAGS = ["-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", "-fPIC", "-shared", "-std=c99",
         "-pthread"]


def cache_dir() -> Path:
    root = os.environ.get("EDGESSM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgessm")
    return Path(root) / "build"


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise EdgessmError("the fast CPU engine needs a C compiler (cc, gcc or clang) on PATH, or CC set; "
                           "install one (e.g. apt-get install gcc) or use engine='torch'")
    return cc


def build_shared(source: Path, flags: list[str] | None = None) -> ctypes.CDLL:
    flags = FLAGS if flags is None else flags
    text = source.read_bytes()
    cc = compiler()
    key = hashlib.sha256(text + " ".join([cc] + flags).encode()).hexdigest()[:16]
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
