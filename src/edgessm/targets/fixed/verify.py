"""Verification of the generated C against the numpy integer engine: the code that
``edgessm export-c --verify`` and ``export_c(..., verify=X)`` run.

    res = verify_c(net, "out/", "smnist", X_test)   # {"verified", "mismatches", ...}

It compiles the export (:func:`build`) with the test harness ``harness.c`` (package data), runs
the sequences through it and through :class:`~.engine.Engine` (numpy backend), and compares
every token's integer logits and the overflow counters; it also times the C step on this CPU.
It lives apart from the generator so that the generator never imports the engine (the
engine's C backend imports the generator).
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ...errors import InputError, ToolchainError
from ...quant.fixedpoint import quantize_input_np
from ...quant.intnet import IntNet
from ...resources import package_path
from ...toolchain import cache_dir, cache_key, compile_into, find_cc, section_bytes
from .cgen import CFLAGS, OVERFLOW_KINDS, state_bytes
from .engine import Engine


def find_compiler() -> str:
    """The host C compiler that verifies the export (:func:`edgessm.toolchain.find_cc`)."""
    return find_cc("verifying the C export", "export without --verify")


def as_inputs(X, d_input: int) -> np.ndarray:
    """Verification inputs as float32 (B, L, d_input), checked (InputError)."""
    try:
        import torch
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    X = np.asarray(X)
    if X.ndim != 3 or X.shape[2] != d_input or X.shape[0] < 1 or X.shape[1] < 1:
        raise InputError(f"verification inputs must be (batch, length, {d_input}) with batch, length >= 1, "
                         f"got shape {tuple(X.shape)}")
    if not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X)):
        raise InputError("verification inputs must be finite numbers (no NaN or inf)")
    return np.ascontiguousarray(X, dtype=np.float32)


def _define(header: str, name: str) -> int:
    m = re.search(rf"^#define {name} (\d+)$", header, re.M)
    if not m:
        raise ToolchainError(f"the generated header has no {name}; was it written by edgessm export-c?")
    return int(m.group(1))


def build(out_dir, name: str, cc: str | None = None) -> dict:
    """Compile the export in `out_dir` (object, for its size) and the harness (executable),
    cached in ``<cache>/build/export-c`` by the hash of the sources, compiler and flags."""
    cc = cc or find_compiler()
    out = Path(out_dir)
    hdr, src = out / f"{name}.h", out / f"{name}.c"
    harness = package_path("targets", "fixed", "harness.c")
    htext = hdr.read_text()
    P = name.upper()
    defines = [f'-DEDGESSM_HEADER="{name}.h"', f"-DEDGESSM_NAME={name}", "-DEDGESSM_FLOAT_HELPERS",
               f"-DEDGESSM_D_INPUT={_define(htext, P + '_D_INPUT')}",
               f"-DEDGESSM_D_OUTPUT={_define(htext, P + '_D_OUTPUT')}",
               f"-DEDGESSM_READOUT_MEAN={_define(htext, P + '_READOUT_MEAN')}"]
    key = cache_key(htext, src.read_bytes(), harness.read_bytes(), cc=cc, flags=CFLAGS + defines, native=False)
    d = cache_dir("export-c")
    obj, exe = d / f"{name}-{key}.o", d / f"{name}-{key}-harness"
    compile_into(obj, [cc, *CFLAGS, "-c", str(src)], f"compiling {src.name} with {cc} {' '.join(CFLAGS)}")
    compile_into(exe, [cc, *CFLAGS, *defines, "-I", str(out), str(src), str(harness)],
                 f"compiling {src.name} with the test harness ({cc} {' '.join(CFLAGS)})")
    return {"object": obj, "harness": exe, "cc": cc, "host_text_bytes": section_bytes(obj, ".text"),
            "host_rodata_bytes": section_bytes(obj, ".rodata")}


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
    "readout_mismatches" (a mean readout: the C state's running sum and its predicted class
    against the sums of its logits, per class and sequence),
    "overflows" (C) and "overflows_engine" (per kind, summed over the sequences),
    "c_us_per_token" (the C step on this CPU, one stream: process CPU time per token, which a
    busy machine disturbs less than wall time; "c_wall_us_per_token" is the wall time),
    "sizeof_state", "n", "length"}.
    """
    cc = cc or find_compiler()
    X = as_inputs(X, net.d_input)
    B, L, _ = X.shape
    xm, ref, eng_over = engine_reference(net, X)
    b = build(out_dir, name, cc)
    with tempfile.TemporaryDirectory(prefix="edgessm-export-c-") as td:
        fin, fout = Path(td) / "in.bin", Path(td) / "out.bin"
        with open(fin, "wb") as f:
            f.write(np.array([B, L, net.d_input], np.int32).tobytes())
            f.write(X.astype(np.float32).tobytes())
            f.write(xm.astype(np.int32).tobytes())
        cmd = [str(fin), str(fout), repr(float(min_seconds))]
        try:
            r = subprocess.run([str(b["harness"]), *cmd], capture_output=True, text=True, check=False)
        except OSError:                       # a damaged cached executable: built again, once
            b["harness"].unlink(missing_ok=True)
            b = build(out_dir, name, cc)
            try:
                r = subprocess.run([str(b["harness"]), *cmd], capture_output=True, text=True, check=False)
            except OSError as e:
                raise ToolchainError(f"cannot run the compiled C test harness {b['harness']} "
                                     f"({e.strerror or e})") from None
        if r.returncode:
            raise ToolchainError(f"the compiled C test harness failed (exit {r.returncode}): "
                                 f"{(r.stderr or r.stdout).strip()[:2000]}")
        got = np.fromfile(fout, dtype=np.int32).astype(np.int64)
    if got.size != ref.size:
        raise ToolchainError(f"the C test harness wrote {got.size} logits, expected {ref.size}")
    got = got.reshape(ref.shape)
    stats = json.loads(r.stdout)
    diff = got != ref
    c_over = {k: int(stats[k]) for k in OVERFLOW_KINDS}
    mism = int(diff.sum())
    res = {"verified": bool(mism == 0 and c_over == eng_over and stats["encode_mismatches"] == 0
                            and stats["readout_mismatches"] == 0 and stats["sizeof_state"] == state_bytes(net)),
           "mismatches": mism, "compared": int(diff.size),
           "samples_with_mismatch": int(diff.reshape(B, -1).any(1).sum()),
           "max_abs_diff": int(np.abs(got - ref).max()) if mism else 0,
           "encode_mismatches": int(stats["encode_mismatches"]),
           "readout_mismatches": int(stats["readout_mismatches"]),
           "overflows": c_over, "overflows_engine": eng_over,
           "c_us_per_token": 1e6 * (stats["cpu_seconds"] if stats["cpu_seconds"] > 0 else stats["seconds"])
           / max(int(stats["timed_tokens"]), 1),
           "c_wall_us_per_token": 1e6 * stats["seconds"] / max(int(stats["timed_tokens"]), 1),
           "c_timed_tokens": int(stats["timed_tokens"]), "sizeof_state": int(stats["sizeof_state"]),
           "host_text_bytes": b["host_text_bytes"], "host_rodata_bytes": b["host_rodata_bytes"],
           "compiler": cc, "cflags": " ".join(CFLAGS), "n": int(B), "length": int(L)}
    return res
