"""Crossbar simulator speed: token-by-token step() vs the layer-by-layer run() (sim.c, and
the same on torch ops), side by side on the same device instance and samples.

    python benchmarks/bench_crossbar_sim.py --model fsdd-ternary --task fsdd --samples 100
    python benchmarks/bench_crossbar_sim.py --config configs/smnist_crossbar_arrays.toml --task smnist \
        --samples 100 --threads 2 --full 10000 --devices 3 [--skip-tokens] [--baseline REF]

--baseline REF: also time run() with sim.c as of git revision REF (same C interface), built
next to the current one, on the same device instance and samples ("c@REF" in the output).

--config: a model of that architecture (untrained weights; the speed does not depend on
them), calibrated on the task's training samples. Prints one JSON object: wall and CPU seconds
(all threads of the process) per path, speedups (wall), and the extrapolated wall and CPU time of
a full test set (--full samples x --devices device instances) with the fastest path; on a
machine shared with other jobs the CPU time over the threads used is the better guide to the
wall time on an idle one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def _baseline_lib(ref: str, simlib):
    """sim.c of git revision `ref`, compiled (before any timing) with the current flags."""
    import subprocess
    import tempfile
    from pathlib import Path
    from edgessm.toolchain import NativeLib
    root = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{ref}:src/edgessm/targets/crossbar/sim.c"], cwd=root,
                         capture_output=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="xbar_sim_")) / "sim.c"
    path.write_bytes(src)
    lib = NativeLib(path, simlib._FLAGS + simlib._OMP, simlib._FLAGS, bind=simlib._bind,
                    purpose=f"sim.c at {ref}")
    lib.require()
    return lib


def main(argv=None):
    p = argparse.ArgumentParser()
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model")
    g.add_argument("--config")
    p.add_argument("--task", required=True)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--full", type=int, help="samples of the full test set (default: the task's)")
    p.add_argument("--devices", type=int, default=3)
    p.add_argument("--skip-tokens", action="store_true", help="do not time the token-by-token loop")
    p.add_argument("--skip-torch", action="store_true", help="do not time run() on torch ops")
    p.add_argument("--baseline", metavar="REF", help="also time run() with sim.c of this git revision")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    import edgessm as es
    from edgessm.data import load_task
    from edgessm.targets.crossbar import simlib
    test = load_task(a.task, "test", limit=a.samples)
    calib = load_task(a.task, "train", limit=256).x
    if a.model:
        model = es.load(a.model)
    else:
        from edgessm.train.config import load_config
        cfg = load_config(a.config)
        torch.manual_seed(0)
        model = es.SequenceModel(cfg.model_config(test.x.shape[-1], int(load_task(a.task, "train").y.max()) + 1))
    T = es.targets.get("crossbar")
    X = test.x
    times, cpu, ys = {}, {}, {}
    libs = {"c": simlib._LIB}
    if a.baseline:
        libs[f"c@{a.baseline}"] = _baseline_lib(a.baseline, simlib)
    paths = [(k, "run") for k in libs] + ([] if a.skip_torch else [("torch", "run")]) + \
        ([] if a.skip_tokens else [("tokens", "run_tokens")])
    for name, fn in paths:
        prog = T.compile(model, calibration=calib, seed=0)
        prog.engine = "torch" if name == "torch" else "c"
        simlib._LIB = libs.get(name, libs["c"])
        try:
            t, c = time.perf_counter(), time.process_time()
            ys[name] = getattr(prog, fn)(X)
            times[name] = time.perf_counter() - t
            cpu[name] = time.process_time() - c
        finally:
            simlib._LIB = libs["c"]
    acc = {k: float((y[:, -1].argmax(-1) == test.y).float().mean()) for k, y in ys.items()}
    full = a.full or len(load_task(a.task, "test"))
    best = min(times.values())
    out = {"bench": "crossbar_sim", "model": a.model or a.config, "task": a.task, "samples": len(X),
           "length": X.shape[1], "threads": a.threads, "c_kernel": simlib.available()[0],
           "seconds": {k: round(v, 2) for k, v in times.items()},
           "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
           "speedup_vs_tokens": {k: round(times["tokens"] / v, 1) for k, v in times.items()} if "tokens" in times else None,
           "speedup_vs_baseline": {k: round(times[f"c@{a.baseline}"] / v, 1) for k, v in times.items()}
           if a.baseline else None,
           "accuracy_on_samples": acc,
           "full_test_set": {"samples": full, "devices": a.devices,
                             "minutes_extrapolated": round(best * full / len(X) * a.devices / 60, 1),
                             "cpu_minutes_extrapolated": round(min(cpu.values()) * full / len(X) * a.devices / 60, 1)},
           "command": "python benchmarks/bench_crossbar_sim.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
