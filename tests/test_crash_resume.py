"""Training killed at any moment resumes exactly: SIGKILL after every file operation of the
checkpoint writer and at random moments, and SIGTERM, then --resume; the final weights equal
an uninterrupted run's bit for bit.

The runs are forked from one driver process (this file run as a script) that imports torch
once and runs single-threaded, so each kill-and-resume costs a fraction of a second.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import needs_mnist

TINY = {"model": {"preset": "neuromorphic", "d_model": 8, "d_state": 4, "n_layers": 1, "dropout": 0.1},
        "data": {"task": "smnist", "limit_train": 32, "limit_val": 16, "limit_test": 16},
        "train": {"epochs": 2, "batch_size": 16, "seed": 3, "warmup_epochs": 0.5, "threads": 1, "ema": 0.9}}


@needs_mnist
def test_killed_runs_resume_exactly(tmp_path):
    r = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["boundaries"] >= 20            # every file operation of every checkpoint
    assert report["killed_at_boundaries"] == report["boundaries"]
    assert report["sigterm_stopped"] >= 1
    assert report["mismatches"] == [], report["mismatches"]


# ---- the driver ------------------------------------------------------------------------------
def _fork(fn) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:  # noqa: BLE001 - the child reports and exits
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def _count_file_ops(kill_at, counter_file):
    """Patch the file operations a checkpoint is made of; SIGKILL this process right after
    operation number `kill_at` (or just count them into `counter_file`)."""
    import shutil
    import pathlib
    import safetensors.torch as st
    n = [0]

    def wrap(owner, name):
        orig = getattr(owner, name)

        def f(*a, **k):
            r = orig(*a, **k)
            n[0] += 1
            if kill_at is not None and n[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if counter_file is not None:
                Path(counter_file).write_bytes(str(n[0]).encode())
            return r
        setattr(owner, name, f)
    for owner, name in ((os, "replace"), (os, "rename"), (shutil, "rmtree"), (st, "save_file"),
                        (pathlib.Path, "write_text")):
        wrap(owner, name)


def _run(out, kill_at=None, counter_file=None, resume=False):
    def body():
        from edgessm.errors import CheckpointError
        from edgessm.train import from_dict, train
        _count_file_ops(kill_at, counter_file)
        quiet = dict(progress=False, log=lambda s: None)
        if resume:
            try:
                train(from_dict(TINY), out, resume=True, **quiet)
                return
            except CheckpointError as e:
                if "nothing to resume" not in str(e):
                    raise
        train(from_dict(TINY), out, **quiet)
    return _fork(body)


def _finish(out) -> int:
    """Resume until the run completes; the number of resumes."""
    for k in range(10):
        _, status = os.waitpid(_run(out, resume=True), 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            if any('"final"' in line for line in (Path(out) / "metrics.jsonl").read_text().splitlines()):
                return k + 1
        else:
            raise RuntimeError(f"resume of {out} failed with status {status}")
    raise RuntimeError(f"{out} did not finish")


def _epochs(out):
    keep = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "final")
    recs = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{k: _untimed(v) for k, v in r.items() if k in keep} for r in recs]


def _untimed(metrics):
    """Metrics without wall-clock figures (which differ from run to run)."""
    return {k: v for k, v in metrics.items() if k != "train_minutes"} if isinstance(metrics, dict) else metrics


def main(root: Path):
    import torch
    torch.set_num_threads(1)
    import torch._dynamo  # noqa: F401 - imported by the first optimizer step; once, before forking
    import edgessm.train  # noqa: F401
    from edgessm.data import load_task
    for split in ("train", "val", "test"):      # warm the data caches once, before forking
        load_task("smnist", split, limit=32, val_fraction=0.1, seed=0)
    counter = root / "count"
    t0 = time.time()
    os.waitpid(_run(root / "ref", counter_file=counter), 0)
    ref_s = time.time() - t0
    boundaries = int(counter.read_text())
    outs, killed, random_killed, terms = [], 0, 0, 0
    for k in range(1, boundaries + 1):
        out = root / f"kill{k}"
        _, status = os.waitpid(_run(out, kill_at=k), 0)
        killed += os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        if not os.WIFSIGNALED(status):
            continue
        _finish(out)
        outs.append(out)
    rng = random.Random(7)
    n_random = 3
    for k in range(n_random):
        out = root / f"random{k}"
        pid = _run(out)
        time.sleep(rng.uniform(0.05, 0.9) * ref_s)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        random_killed += os.WIFSIGNALED(status)
        if os.WIFSIGNALED(status):
            _finish(out)
            outs.append(out)
    # SIGTERM must land inside the training loop: before train() installs its handler the
    # default action kills the run, after the last step it finishes normally. How long the
    # loop lasts within a run depends on the machine, so the delay adapts (at most 8 tries).
    frac = rng.uniform(0.3, 0.8)
    for k in range(8):
        if terms >= 2:
            break
        out = root / f"term{k}"
        pid = _run(out)
        time.sleep(frac * ref_s)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        metrics = out / "metrics.jsonl"
        finished = metrics.is_file() and '"final"' in metrics.read_text()
        stopped = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and not finished
        terms += stopped
        if not stopped:
            frac = frac * 0.6 if finished else min(0.95, frac * 1.3)
        _finish(out)
        outs.append(out)
    # compare (the driver touches torch only now, after every fork)
    import edgessm as es
    ref = {n: es.load(root / "ref" / n).state_dict() for n in ("last", "best")}
    ref_epochs = _epochs(root / "ref")
    ref_best = _untimed(json.loads((root / "ref" / "best" / "model.json").read_text())["metrics"])
    bad = []
    for out in outs:
        for n in ("last", "best"):
            sd = es.load(out / n).state_dict()
            if any(not torch.equal(sd[k], ref[n][k]) for k in ref[n]):
                bad.append(f"{out.name}/{n} weights")
        if _epochs(out) != ref_epochs:
            bad.append(f"{out.name} metrics.jsonl")
        if _untimed(json.loads((out / "best" / "model.json").read_text())["metrics"]) != ref_best:
            bad.append(f"{out.name} best metrics")
        if any(p.name.endswith((".new", ".old")) for p in out.iterdir()):
            bad.append(f"{out.name} left temporary directories")
    print(json.dumps({"boundaries": boundaries, "random": n_random, "killed_at_boundaries": int(killed),
                      "killed_at_random": random_killed,
                      "sigterm_stopped": int(terms), "mismatches": bad}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
