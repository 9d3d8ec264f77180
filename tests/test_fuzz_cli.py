"""Seeded fuzz over the command line's options and the run config's fields: every case ends
in success or a one-line error with exit status 2, never a traceback, a hang (each case has a
timeout) or NaN in JSON output.

The cases run forked from one driver process (this file run as a script), single-threaded."""
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from conftest import needs_mnist

CASES, SEED, TIMEOUT_S = 40, 20261201, 60


@needs_mnist
def test_fuzz_cli_and_config(tmp_path):
    r = subprocess.run([sys.executable, __file__, str(tmp_path), str(CASES), str(SEED)],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["cases"] == CASES
    assert report["failures"] == [], "\n".join(report["failures"])
    assert report["ok"] >= 3 and report["refused"] >= 15      # both kinds are exercised


# ---- case generation -------------------------------------------------------------------------
BAD_INTS = ["0", "-1", "-7", "abc", "nan", "inf", "1e12", "2.5", "", "0x10", "1,2"]
BAD_FLOATS = ["nan", "inf", "-inf", "-1", "abc", "", "1e400"]


def _int(rng, lo, hi):
    return str(rng.randint(lo, hi)) if rng.random() < 0.6 else rng.choice(BAD_INTS)


def _toml_value(rng, v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    return repr(v)


CONFIG_FIELDS = {
    "model": {"preset": ["neuromorphic", "standard", "bogus", 3], "d_model": [4, 8, 0, -2, 10**7, 2.5, "x"],
              "d_state": [2, 4, 3, 0, 10**6], "n_layers": [1, 2, 0, 10**7], "dropout": [0.0, 0.1, 1.5, float("nan")],
              "dt_min": [1e-3, 0.0, -1.0, float("inf")], "activation": ["relu", "tanh"], "residual": [True, 2],
              "mix_norm": [True, "yes"],
              "nosuch": [1]},
    "data": {"task": ["smnist", "psmnist", "nope"], "val_fraction": [0.1, 1.0, -0.5, float("nan")],
             "limit_train": [32, 48, -1, "x"], "limit_val": [16, -3], "limit_test": [16, 2.5]},
    "train": {"epochs": [1, 2, 0, -1, 10**9], "batch_size": [16, 0, -1, 2**30], "lr": [1e-3, 0.0, -1.0, float("nan"), float("inf")],
              "ssm_lr": [1e-3, -0.1], "weight_decay": [0.0, 0.01, -1.0], "warmup_epochs": [0.5, float("nan"), -2.0],
              "grad_clip": [1.0, 0.0, float("nan"), -1.0], "seed": [0, 3, -1, 10**20],
              "eval_batch_size": [16, 0, -4], "threads": [1, 0, -3, 10**6], "nosuch": [1]},
}


def _config(rng, path: Path) -> None:
    sections = {"model": {"preset": "neuromorphic", "d_model": 8, "d_state": 4, "n_layers": 1},
                "data": {"task": "smnist", "limit_train": 32, "limit_val": 16, "limit_test": 16},
                "train": {"epochs": 1, "batch_size": 16, "threads": 1}}
    for _ in range(rng.choice([0, 1, 1, 2])):      # 0: a valid config; else 1-2 random fields
        sec = rng.choice(list(CONFIG_FIELDS))
        key = rng.choice(list(CONFIG_FIELDS[sec]))
        sections[sec][key] = rng.choice(CONFIG_FIELDS[sec][key])
    if rng.random() < 0.08:
        sections[rng.choice(["trian", "modle"])] = {"epochs": 1}
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {_toml_value(rng, v)}\n" for k, v in kv.items())
                   for s, kv in sections.items())
    if rng.random() < 0.05:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(64)))
    else:
        path.write_text(text)


def make_case(rng, root: Path, i: int) -> list[str]:
    out = str(root / f"out{i}")
    kind = rng.choice(["eval", "stream", "bench", "train", "train", "deploy", "info", "quantize", "report"])
    if kind == "eval":
        a = ["eval", rng.choice(["smnist", "smnist", "nosuch"]), "--limit", _int(rng, 1, 8),
             "--batch-size", _int(rng, 1, 64), "--json"]
        if rng.random() < 0.3:
            a += ["--split", rng.choice(["val", "test", "bogus"])]
        return a
    if kind == "stream":
        return ["stream", "smnist", "--index", _int(rng, 0, 5), "--json"]
    if kind == "bench":
        return ["bench", "stream", "smnist", "--tokens", _int(rng, 20, 40), "--threads", _int(rng, 1, 1),
                "--batch", rng.choice(["1", "1,4", "abc", "0", "1,,2", "-3", "70000", "2"]), "--json"]
    if kind == "train":
        cfg = root / f"cfg{i}.toml"
        _config(rng, cfg)
        a = ["train", str(cfg), "--out", out, "--no-progress", "--json"]
        if rng.random() < 0.5:
            a += ["--max-minutes", rng.choice(["0.00001", "0", "-1", "nan", "abc"])]
        if rng.random() < 0.3:
            a += ["--epochs", _int(rng, 1, 1)]
        if rng.random() < 0.3:
            a += ["--seed", rng.choice(["1", "-1", "99999999999999999999", "x"])]
        return a
    if kind == "deploy":
        a = ["deploy", "smnist-loihi2", "--target", rng.choice(["loihi2", "fixed", "nosuch"]),
             "--limit", _int(rng, 1, 3), "--batch-size", _int(rng, 1, 8), "--json"]
        if rng.random() < 0.6:
            a += ["--set", rng.choice(["energy_synop_j", "static_power_chip_w", "time_synop_s", "nosuch", "="]) +
                  "=" + rng.choice(["1e-12", "0", "-1", "nan", "inf", "abc"])]
        if rng.random() < 0.3:
            a += ["--threads", _int(rng, 1, 2)]
        return a
    if kind == "quantize":
        return ["quantize", "smnist", "--out", rng.choice([out, "/proc/nope/x", str(root / "afile" / "x")]),
                "--calibrate", _int(rng, 8, 16), "--limit", _int(rng, 1, 4), "--threads", _int(rng, 1, 1), "--json"]
    if kind == "report":   # refused cases only: a valid report takes minutes
        return ["report", "--out", str(root / "afile"), "--limit", _int(rng, 1, 2), "--json"]
    return ["info", rng.choice(["smnist", "fsdd01-ternary", "nosuch", str(root)]), "--json"]


# ---- the driver ------------------------------------------------------------------------------
def _strict_json(text: str):
    def bad(c):
        raise ValueError(f"non-JSON constant {c}")
    return json.loads(text, parse_constant=bad)


def run_case(argv: list[str], root: Path, i: int) -> str | None:
    """Fork, run `edgessm argv` in the child, check how it ended; None if well, else why."""
    so, se = root / f"case{i}.out", root / f"case{i}.err"
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            fo, fe = os.open(so, os.O_WRONLY | os.O_CREAT), os.open(se, os.O_WRONLY | os.O_CREAT)
            os.dup2(fo, 1)
            os.dup2(fe, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            from edgessm.cli import main
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - a traceback is what the test looks for
            import traceback
            traceback.print_exc()
            code = 3
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    import time
    t0 = time.time()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() - t0 > TIMEOUT_S:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return f"timeout after {TIMEOUT_S} s: {argv}"
        time.sleep(0.01)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    out, err = so.read_text(), se.read_text()
    if "Traceback" in err or code not in (0, 2):
        return f"exit {code}: {argv}\n{err[-1500:]}"
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        if len(lines) != 1 or "error" not in lines[0]:
            return f"error is not one line: {argv}\n{err[-1500:]}"
        return None
    if "--json" in argv:
        try:
            _strict_json(out)
        except ValueError as e:
            return f"stdout is not strict JSON ({e}): {argv}\n{out[-500:]}"
    return None


def main(root: Path, n: int, seed: int) -> None:
    import torch
    torch.set_num_threads(1)
    import torch._dynamo  # noqa: F401 - imported by the first optimizer step; once, before forking
    import edgessm.cli  # noqa: F401
    import edgessm.train  # noqa: F401
    (root / "afile").write_text("a file, not a directory\n")
    rng = random.Random(seed)
    failures, ok, refused = [], 0, 0
    for i in range(n):
        argv = make_case(rng, root, i)
        why = run_case(argv, root, i)
        if why:
            failures.append(why)
        elif (root / f"case{i}.err").read_text().strip().splitlines()[-1:] and \
                "error" in (root / f"case{i}.err").read_text().splitlines()[-1]:
            refused += 1
        else:
            ok += 1
    print(json.dumps({"cases": n, "ok": ok, "refused": refused, "failures": failures}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
