"""Verification of the generated C against the numpy integer engine: the code that
``edgessm export-c --verify`` and ``export_c(..., verify=X)`` run.

    res = verify_c(net, "out/", "smnist", X_test)   # {"verified", "mismatches", ...}

It compiles the export (``cgen.build``) with its test harness, runs the sequences through it and
through :class:`~.engine.Engine` (numpy backend), and compares every token's integer logits and
the overflow counters; it also times the C step on this CPU. It lives apart from the generator so
that the generator never imports the engine (the engine's C backend imports the generator).
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ...quant.fixedpoint import quantize_input_np
from ...quant.intnet import IntNet
from .cgen import CFLAGS, OVERFLOW_KINDS, CCompilerError, _as_inputs, _state_bytes, build, find_compiler
from .engine import Engine


def engine_reference(net: IntNet, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """The numpy integer engine on float inputs X (B, L, d_in), token by token: (encoded inputs
    xm, integer logits (B, L, d_out), overflows per kind summed over the sequences, the input
    encoding's included): what the C is compared with."""
    B, L, _ = X.shape
    xm, in_over = quantize_input_np(X, net.in_exp, net.in_bits)
    eng = Engine(net, backend="numpy")          # the reference, not the C it is compared with
    st = eng.init_state(B)
    ref = np.empty((B, L, net.d_output), np.int64)
    for t in range(L):
        ref[:, t], st = eng.step_int(np.ascontiguousarray(xm[:, t]), st)
    eng_over = dict(eng.overflows)
    eng_over["input"] += in_over
    return xm, ref, eng_over


def verify_c(net: IntNet, out_dir, name: str, X, cc: str | None = None, min_seconds: float = 0.2) -> dict:
    """Compile the export in `out_dir` with a test harness, run the sequences X (B, L, d_in),
    float) through it and through the integer engine, and compare.

    Inputs are encoded as ``FixedProgram.encode`` does (``quantize_input_np`` of the float32
    values); the C step gets those mantissas, and the C float helper ``<name>_encode`` is
    checked against them too. Returns {"verified", "mismatches", "compared" (integer logits:
    tokens x classes), "samples_with_mismatch", "max_abs_diff", "encode_mismatches",
    "overflows" (C) and "overflows_engine" (per kind, summed over the sequences),
    "c_us_per_token" (the C step on this CPU, one stream: process CPU time per token, which a
    busy machine disturbs less than wall time; "c_wall_us_per_token" is the wall time),
    "sizeof_state", "n", "length"}.
    """
    cc = cc or find_compiler()
    X = _as_inputs(X, net.d_input)
    B, L, _ = X.shape
    xm, ref, eng_over = engine_reference(net, X)
    b = build(out_dir, name, cc)
    with tempfile.TemporaryDirectory(prefix="edgessm-export-c-") as td:
        fin, fout = Path(td) / "in.bin", Path(td) / "out.bin"
        with open(fin, "wb") as f:
            f.write(np.array([B, L, net.d_input], np.int32).tobytes())
            f.write(X.astype(np.float32).tobytes())
            f.write(xm.astype(np.int32).tobytes())
        r = subprocess.run([str(b["harness"]), str(fin), str(fout), repr(float(min_seconds))],
                           capture_output=True, text=True, check=False)
        if r.returncode:
            raise CCompilerError(f"the compiled C test harness failed (exit {r.returncode}): "
                                 f"{(r.stderr or r.stdout).strip()[:2000]}")
        got = np.fromfile(fout, dtype=np.int32).astype(np.int64)
    if got.size != ref.size:
        raise CCompilerError(f"the C test harness wrote {got.size} logits, expected {ref.size}")
    got = got.reshape(ref.shape)
    stats = json.loads(r.stdout)
    diff = got != ref
    c_over = {k: int(stats[k]) for k in OVERFLOW_KINDS}
    mism = int(diff.sum())
    res = {"verified": bool(mism == 0 and c_over == eng_over and stats["encode_mismatches"] == 0
                            and stats["sizeof_state"] == _state_bytes(net)),
           "mismatches": mism, "compared": int(diff.size),
           "samples_with_mismatch": int(diff.reshape(B, -1).any(1).sum()),
           "max_abs_diff": int(np.abs(got - ref).max()) if mism else 0,
           "encode_mismatches": int(stats["encode_mismatches"]),
           "overflows": c_over, "overflows_engine": eng_over,
           "c_us_per_token": 1e6 * (stats["cpu_seconds"] if stats["cpu_seconds"] > 0 else stats["seconds"])
           / max(int(stats["timed_tokens"]), 1),
           "c_wall_us_per_token": 1e6 * stats["seconds"] / max(int(stats["timed_tokens"]), 1),
           "c_timed_tokens": int(stats["timed_tokens"]), "sizeof_state": int(stats["sizeof_state"]),
           "host_text_bytes": b["host_text_bytes"], "host_rodata_bytes": b["host_rodata_bytes"],
           "compiler": cc, "cflags": " ".join(CFLAGS), "n": int(B), "length": int(L)}
    return res
