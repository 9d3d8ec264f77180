"""Shipped models on Cortex-M cores: `edgessm export-c MODEL --mcu CORE --verify N` for every
model and core asked for: flash and RAM of the model's own object file at -Os and -O2, a
bit-exact run of N test sequences on the emulated core (qemu-system-arm), instructions and
cycles per token (the first --trace-tokens tokens of the first sequence, the core's published
instruction timing), the real-time factor at 80 MHz where the task has a token rate (FSDD: 100
log-mel frames per second) and tokens per second otherwise. Prints JSON lines; --record
appends the table to benchmarks/RESULTS.md.

    PYTHONPATH=src python benchmarks/bench_mcu.py [--models all|a,b] [--mcus cortex-m4,...]
        [--more MODEL=CORE,CORE] [--verify 2] [--verify-small 20] [--trace-tokens 2] [--record]

Float models are quantized as `edgessm export-c` does (PTQ, loihi2 spec, the first 512
training sequences of the checkpoint's task).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import append_results, emit

import edgessm as es
from edgessm import io
from edgessm.deploy import task_for
from edgessm.data import load_task
from edgessm.export import export_c
from edgessm.export.c import _needs_calibration
from edgessm.export.mcu import CLOCK_HZ, MCUS, OPT_LEVELS


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all", help="comma-separated shipped models, or all")
    ap.add_argument("--mcus", default="cortex-m4", help=f"comma-separated cores of {', '.join(MCUS)}")
    ap.add_argument("--more", action="append", default=[], metavar="MODEL=CORE,CORE",
                    help="further cores for one model (repeatable), e.g. smnist-loihi2=cortex-m0plus,cortex-m7")
    ap.add_argument("--verify", type=int, default=2, help="test sequences run on the emulated core")
    ap.add_argument("--verify-small", type=int, default=20,
                    help="test sequences for models with d_model <= 32 (fast under emulation)")
    ap.add_argument("--trace-tokens", type=int, default=2)
    ap.add_argument("--calibrate", type=int, default=512)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    names = list(io.shipped_models()) if a.models == "all" else [m for m in a.models.split(",") if m]
    jobs = [(n, [m for m in a.mcus.split(",") if m]) for n in names]
    for spec in a.more:
        n, _, cores = spec.partition("=")
        jobs.append((n, [m for m in cores.split(",") if m]))
    rows = []
    for name, mcus in jobs:
        model = es.load(name)
        task = task_for(model, None)
        cal = load_task(task, "train", limit=a.calibrate).x if _needs_calibration(model, None) else None
        n = a.verify_small if model.config.d_model <= 32 else a.verify
        te = load_task(task, "test", limit=n).x
        for mcu in mcus:
            with tempfile.TemporaryDirectory(prefix="bench_mcu-") as tmp:
                t0 = time.time()
                r = export_c(model, Path(tmp), name=name.replace("-", "_"), calibration=cal, calibrate=a.calibrate,
                             verify=te, min_seconds=0.05, source=name, mcu=mcu, task=task,
                             trace_tokens=a.trace_tokens)
            m = r["mcu"]
            rec = {"bench": "mcu", "model": name, "task": task, "spec": r["spec"], "mcu": mcu,
                   "n": m["n"], "length": m["length"], "verified": m["verified"], "mismatches": m["mismatches"],
                   "compared": m["compared"], "compiler": m["compiler"], "qemu": m["qemu"],
                   "builds": m["builds"], "wall_s": time.time() - t0}
            emit(rec)
            rows.append(rec)
    if a.record and rows:
        table = ["| model | core (emulated board) | opt | flash (text + rodata) | RAM (state + stack) | "
                 "instructions / token | cycles / token (CPI) | at 80 MHz | verified / mismatches |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            for opt in OPT_LEVELS:
                b = r["builds"][opt]
                if "real_time_factor" in b:
                    speed = f"RTF {b['real_time_factor']:.3f} ({b['headroom']:.1f}x headroom at 100 tokens/s)"
                else:
                    speed = f"{b['tokens_per_s_at_80MHz']:.0f} tokens/s ({b['tokens_per_s_at_80MHz'] / r['length']:.2f} sequences/s)"
                table.append(
                    f"| {r['model']} | {r['mcu']} ({b['board']}, {b['core']}) | {opt} | "
                    f"{b['flash_bytes']} B ({b['text_bytes']} + {b['rodata_bytes']}) | "
                    f"{b['ram_bytes']} B ({b['state_bytes']} + {b['stack_bytes']}) | "
                    f"{b['instructions_per_token']:.0f} | {b['cycles_per_token']:.0f} ({b['cpi']:.2f}) | {speed} | "
                    f"{b['verified']} of {r['n']} / {b['mismatches']} of {b['compared']} |")
        cores = sorted({r["mcu"] for r in rows})
        notes = (f"Each model's own object file ({rows[0]['compiler']}, -std=c99 -Wall -Wextra -pedantic -Werror, "
                 f"-mthumb -mfloat-abi=soft, -ffunction-sections -fdata-sections), apart from the harness and the "
                 f"C library; RAM = static data (0 for every model) + the state of one stream + the stack of the step "
                 f"(-fstack-usage, deepest call chain). Verified: test sequences whose every logit (and the overflow "
                 f"counts) equal the integer engine's, run on qemu-system-arm {rows[0]['qemu']}; the float models "
                 f"are quantized by PTQ (loihi2 spec). Instructions: counted in an execution trace over the first "
                 f"tokens of the first sequence, including the call of the step. Cycles: each executed instruction "
                 f"at the published timing of its core (Cortex-M4 TRM instruction set summary, zero wait states, "
                 f"P = 2 for a taken branch; the Cortex-M7 at the M4 timing and the Cortex-M0+ at the Cortex-M0 "
                 f"timing: upper bounds), at {CLOCK_HZ / 1e6:.0f} MHz. Cores: {', '.join(cores)}. "
                 f"Emulation is deterministic: the figures do not depend on the load of this shared machine.")
        append_results("Cortex-M: flash, RAM, cycles per token, bit-exact under emulation", table, notes)


if __name__ == "__main__":
    main()
