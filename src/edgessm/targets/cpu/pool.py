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
from .engine import FastProgram, _ptr

_LP = ctypes.POINTER(ctypes.c_long)


class StreamPool:
    def __init__(self, model_or_program, capacity: int = 64):
        if not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"capacity must be a positive integer, got {capacity!r}")
        self.program = model_or_program if isinstance(model_or_program, FastProgram) \
            else FastProgram(model_or_program)
        p = self.program
        self.capacity = capacity
        self._states = np.zeros((capacity, p.state_floats), dtype=np.float32)
        self._t = np.zeros(capacity, dtype=np.int64)
        self._free = list(range(capacity - 1, -1, -1))
        self._open: set[int] = set()

    @property
    def d_input(self) -> int:
        return self.program.d_input

    @property
    def state_bytes_per_stream(self) -> int:
        return 4 * self.program.state_floats

    def open(self) -> int:
        if not self._free:
            raise InputError(f"stream pool is full ({self.capacity} streams open); close one first "
                             f"or create the pool with a larger capacity")
        sid = self._free.pop()
        self._states[sid] = 0
        self._t[sid] = 0
        self._open.add(sid)
        return sid

    def _check_id(self, sid) -> int:
        if sid not in self._open:
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
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.ndim == 1:
            a = a.reshape(1, -1) if a.shape[0] == self.d_input else a.reshape(-1, 1)
        if a.ndim != 2 or a.shape[1] != self.d_input:
            raise InputError(f"{what} has shape {np.shape(x)}, expected (tokens, {self.d_input})")
        if not np.isfinite(a).all():
            raise InputError(f"{what} contains NaN or infinite values; the stream was not changed")
        return a

    def push(self, sid: int, tokens) -> np.ndarray:
        """Feed tokens (T, d_in) to one stream; returns the predictions (T, d_out)."""
        self._check_id(sid)
        x = self._tokens(tokens, f"tokens for stream {sid}")
        p = self.program
        out = np.empty((x.shape[0], p.d_output), dtype=np.float32)
        row = self._states[sid]
        p._lib.edgessm_run(ctypes.byref(p._net), _ptr(row), _ptr(x), _ptr(out), x.shape[0],
                           int(self._t[sid]), _ptr(p._work))
        self._t[sid] += x.shape[0]
        return out

    def push_many(self, tokens: dict) -> dict:
        """One token for each of several streams: {sid: (d_in,)} -> {sid: (d_out,)}."""
        ids = list(tokens)
        for sid in ids:
            self._check_id(sid)
        xs = [self._tokens(tokens[sid], f"token for stream {sid}") for sid in ids]
        for sid, x in zip(ids, xs):
            if x.shape[0] != 1:
                raise InputError(f"push_many takes one token per stream; stream {sid} got {x.shape[0]}")
        if not ids:
            return {}
        p = self.program
        x = np.concatenate(xs, 0)
        idx = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), p.d_output), dtype=np.float32)
        self._t[idx] += 1
        p._lib.edgessm_step_rows(ctypes.byref(p._net), _ptr(self._states), idx.ctypes.data_as(_LP),
                                 len(ids), _ptr(x), _ptr(out), self._t.ctypes.data_as(_LP), _ptr(p._work))
        return {sid: out[j] for j, sid in enumerate(ids)}
