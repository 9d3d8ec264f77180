"""A C library of the package (a ``.c`` file shipped with it) compiled on first use, cached
(:func:`~.build.load_shared`), with a remembered failure reason, and :func:`ptr` to hand
tensors to it."""
from __future__ import annotations

import ctypes
import threading
import warnings
from pathlib import Path

from ..errors import EdgessmError, ToolchainError
from .build import load_shared


class NativeLib:
    """A C library compiled from `source` on first use, built with each flag set in turn until
    one compiles and loads (e.g. with OpenMP, then without), its ctypes signatures set by
    `bind(lib)`. A failure is remembered with its reason (``why``: the first line; ``error``:
    all of it), so a caller falls back once and can say why."""

    def __init__(self, source: Path, *flag_sets: list[str], bind, purpose: str = "", fallback: str = ""):
        self.source, self.flag_sets, self.bind = Path(source), flag_sets, bind
        self.purpose = purpose or f"the native code of {self.source.name}"
        self.fallback = fallback
        self._lib: ctypes.CDLL | None = None
        self.error: str | None = None
        self._warned = False
        self._lock = threading.Lock()

    @property
    def why(self) -> str | None:
        return self.error.splitlines()[0] if self.error else None

    def get(self) -> ctypes.CDLL | None:
        """The loaded library, or None when it cannot be built or loaded here."""
        if self._lib is None and self.error is None:
            with self._lock:
                if self._lib is None and self.error is None:
                    self._load()
        return self._lib

    def _load(self) -> None:
        err: Exception | None = None
        for flags in self.flag_sets:
            try:
                lib = load_shared(self.source, flags, purpose=self.purpose, fallback=self.fallback)
                self.bind(lib)
                self._lib = lib
                return
            except (EdgessmError, OSError, AttributeError) as e:     # AttributeError: a missing symbol
                err = e
        self.error = str(err)

    def require(self) -> ctypes.CDLL:
        """The loaded library, or a ToolchainError with the whole reason."""
        lib = self.get()
        if lib is None:
            raise ToolchainError(self.error)
        return lib

    def available(self) -> tuple[bool, str]:
        """(True, "") when the library loads here, else (False, the reason)."""
        return self.get() is not None, self.why or ""

    def warn_unavailable(self, what: str, instead: str, stacklevel: int = 3) -> None:
        """The one RuntimeWarning of a caller that falls back because the library is not
        available: "`what`: native kernel unavailable (why); `instead`". Later calls are silent.
        stacklevel as for ``warnings.warn`` called where this is called (1: that line)."""
        with self._lock:
            if self._warned:
                return
            self._warned = True
        warnings.warn(f"{what}: native kernel unavailable ({self.why}); {instead}", RuntimeWarning,
                      stacklevel=stacklevel + 1)


def ptr(t, T):
    """A ctypes pointer of type T to the data of a (contiguous) tensor."""
    return ctypes.cast(t.data_ptr(), ctypes.POINTER(T))
