"""A pool of concurrent token streams over the fast CPU engine.

    pool = StreamPool(model, capacity=1000)
    sid = pool.open()                      # a stream id
    y = pool.push(sid, tokens)             # (T, d_in) -> (T, d_out): prediction after each token
    ys = pool.push_many({sid: x_t, ...})   # one token for several streams in one call
    pool.reset(sid); pool.close(sid)

Memory is fixed: `capacity` state rows are allocated once; a stream's state is one row of
``state_bytes_per_stream`` bytes. Streams advance independently (each keeps its own token
count). Every token is validated before any state is touched: a bad token (wrong shape,
NaN) raises InputError and leaves that stream, and all others, unchanged.
"""
from __future__ import annotations

import ctypes

import numpy as np

from ...errors import ConfigError, InputError
from .engine import FastProgram, _Pool, _ptr, check_max_abs, token_error

_LP = ctypes.POINTER(ctypes.c_long)
_F32 = np.dtype(np.float32)
_CF, _CL = ctypes.c_float, ctypes.c_long


class StreamPool:
    """Threads may push to different streams at once (the C step releases the GIL and keeps
    its scratch memory per thread); one stream must be fed by one thread at a time.
    Tokens larger in magnitude than `max_abs` (default: the program's, ``engine.MAX_ABS``)
    are refused like NaN: they would overflow the recurrent state."""

    def __init__(self, model_or_program, capacity: int = 64, max_abs: float | None = None):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"capacity must be a positive integer, got {capacity!r}")
        self.program = model_or_program if isinstance(model_or_program, FastProgram) \
            else FastProgram(model_or_program)
        p = self.program
        self.max_abs = p.max_abs if max_abs is None else check_max_abs(max_abs)
        need = capacity * (4 * p.state_floats + 8)
        try:
            self._states = np.zeros((capacity, p.state_floats), dtype=np.float32)
            self._t = np.zeros(capacity, dtype=np.int64)
        except (MemoryError, ValueError):
            raise ConfigError(f"a pool of {capacity} streams needs {need / 2**30:.3g} GiB "
                              f"({4 * p.state_floats} bytes of state per stream), more than can be "
                              f"allocated; use a smaller capacity") from None
        self.capacity = capacity
        self._free = list(range(capacity - 1, -1, -1))
        self._open: set[int] = set()
        self._din, self._dout = p.d_input, p.d_output
        self._c = _Pool(ctypes.pointer(p._net), _ptr(self._states), self._t.ctypes.data_as(_LP),
                        self.max_abs)
        self._addr = ctypes.addressof(self._c)
        self._push_c = p._lib.edgessm_pool_push
        self._rows_c = p._lib.edgessm_pool_step_rows

    @property
    def d_input(self) -> int:
        return self.program.d_input

    @property
    def state_bytes_per_stream(self) -> int:
        return 4 * self.program.state_floats

    def open(self) -> int:
        try:
            sid = self._free.pop()
        except IndexError:
            raise InputError(f"stream pool is full ({self.capacity} streams open); close one first "
                             f"or create the pool with a larger capacity") from None
        self._states[sid] = 0
        self._t[sid] = 0
        self._open.add(sid)
        return sid

    def _check_id(self, sid) -> int:
        try:
            ok = sid in self._open
        except TypeError:
            ok = False
        if not ok:
            raise InputError(f"stream {sid!r} is not open")
        return sid

    def close(self, sid: int) -> None:
        self._open.discard(self._check_id(sid))
        self._free.append(sid)

    def reset(self, sid: int) -> None:
        self._check_id(sid)
        self._states[sid] = 0
        self._t[sid] = 0

    def tokens_seen(self, sid: int) -> int:
        return int(self._t[self._check_id(sid)])

    def _tokens(self, x, what: str) -> np.ndarray:
        a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"{what} must be numeric, got dtype {a.dtype}")
        if a.ndim == 1:
            a = a.reshape(1, -1) if a.shape[0] == self.d_input else a.reshape(-1, 1)
        if a.ndim != 2 or a.shape[1] != self.d_input:
            raise InputError(f"{what} has shape {np.shape(x)}, expected (tokens, {self.d_input})")
        bad = ~(np.abs(a) <= self.max_abs)
        if bad.any():
            raise token_error(1 if not np.isfinite(a[bad]).all() else 2, self.max_abs, what)
        return np.ascontiguousarray(a, dtype=np.float32)

    def push(self, sid: int, tokens) -> np.ndarray:
        """Feed tokens (T, d_in) to one stream; returns the predictions (T, d_out)."""
        if sid not in self._open:
            self._check_id(sid)
        a = tokens
        if type(a) is not np.ndarray or a.dtype != _F32 or a.ndim != 2 or a.shape[1] != self._din \
                or not a.flags.c_contiguous:
            a = self._tokens(tokens, f"tokens for stream {sid}")
        T = a.shape[0]
        out = np.empty((T, self._dout), dtype=_F32)
        if not T:
            return out
        try:
            xp = _CF.from_buffer(a)           # the cheapest way to a pointer (a.ctypes is slower)
        except TypeError:                     # a read-only array
            a = a.copy()
            xp = _CF.from_buffer(a)
        rc = self._push_c(self._addr, sid, xp, T, _CF.from_buffer(out))
        if rc:
            raise token_error(rc, self.max_abs, f"tokens for stream {sid}")
        return out

    def push_many(self, tokens: dict) -> dict:
        """One token for each of several streams: {sid: (d_in,)} -> {sid: (d_out,)}."""
        n = len(tokens)
        if n == 1:      # one stream: the push path (the same one-stream kernel call)
            (sid, v), = tokens.items()
            if type(v) is np.ndarray and v.dtype == _F32 and v.shape == (self._din,) and v.flags.c_contiguous:
                return {sid: self.push(sid, v.reshape(1, -1))[0]}
        if not n:
            return {}
        if not self._open.issuperset(tokens):
            for sid in tokens:
                self._check_id(sid)
        x = np.empty((n, self._din), dtype=_F32)
        try:    # all tokens at once (numeric, one token of d_in values each) ...
            np.copyto(x, list(tokens.values()), casting="same_kind")
        except (TypeError, ValueError):
            pass
        else:
            return self._step_rows(tokens, x, n)
        for j, (sid, v) in enumerate(tokens.items()):   # ... else one by one, saying which is bad
            if type(v) is not np.ndarray or v.dtype.kind not in "fiu":
                v = self._tokens(v, f"token for stream {sid}")
            try:
                x[j] = v
            except ValueError:
                a = self._tokens(v, f"token for stream {sid}")
                raise InputError(f"push_many takes one token per stream; stream {sid} got "
                                 f"{a.shape[0]}") from None
        return self._step_rows(tokens, x, n)

    def _step_rows(self, tokens: dict, x: np.ndarray, n: int) -> dict:
        idx = np.fromiter(tokens, dtype=np.int64, count=n)
        out = np.empty((n, self._dout), dtype=_F32)
        rc = self._rows_c(self._addr, _CL.from_buffer(idx), n, _CF.from_buffer(x), _CF.from_buffer(out))
        if rc:
            raise token_error(rc, self.max_abs, "a token in push_many")
        return dict(zip(tokens, out))
