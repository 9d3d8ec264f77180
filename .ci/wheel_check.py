"""Run the installed edgessm's commands on the shipped models and check what they print (used by
wheel.sh from a fresh venv; argv[1] is the installed `edgessm` script)."""
import json
import os
import subprocess
import tempfile
import sys
import time

EXE = sys.argv[1]
failures = []


def run(*args, check=None, env=None):
    t0 = time.time()
    r = subprocess.run([EXE, *args, "--json"], capture_output=True, text=True,
                       env=None if env is None else {**os.environ, **env})
    dt = time.time() - t0
    line = f"{dt:6.1f}s  edgessm {' '.join(args)}"
    try:
        out = json.loads(r.stdout) if r.returncode == 0 else None
    except json.JSONDecodeError:
        out = None
    err = None
    if r.returncode or out is None:
        err = f"exit {r.returncode}: {r.stderr.strip()[-800:]}"
    elif check:
        err = check(out)
    print(line + ("" if err is None else f"  FAILED {err}"), flush=True)
    if err is not None:
        failures.append(line)
    return out


def acc_ok(o):
    a = o["accuracy"]
    a = a["mean"] if isinstance(a, dict) else a
    return None if 0.0 <= a <= 1.0 and o["n"] > 0 else f"bad accuracy/n {a} {o['n']}"


models = run("models")["models"]
names = [m["name"] for m in models]
print("shipped:", ", ".join(names))
for m in names:
    run("eval", m, "--limit", "8", check=acc_ok)
run("stream", "smnist", "--index", "0", check=lambda o: None if o["tokens"] == 784 else "tokens")
run("stream", "fsdd01-ternary", "--index", "0", check=lambda o: None if o["tokens"] > 0 else "tokens")
run("deploy", "smnist", "--target", "cpu", "--limit", "8", check=acc_ok)
run("deploy", "smnist-loihi2", "--target", "loihi2", "--limit", "4", check=acc_ok)
run("deploy", "fsdd01-ternary", "--target", "crossbar", "--limit", "4", check=acc_ok)
run("export-c", "smnist-loihi2", "--out", "c_smnist", "--verify", "2",
    check=lambda o: None if o["verified"] and o["mismatches"] == 0 else f"mismatches {o['mismatches']}")
run("export-c", "fsdd01-ternary", "--out", "c_fsdd", "--verify", "2",
    check=lambda o: None if o["verified"] and o["mismatches"] == 0 else f"mismatches {o['mismatches']}")
run("export-onnx", "smnist", "--out", "smnist_step.onnx", "--verify", "1",
    check=lambda o: None if o["verify"]["predictions_differing"] == 0 and o["verify"]["max_abs_diff"] < 1e-3
    else f"onnx differs {o['verify']}")
run("export-onnx", "psmnist", "--out", "psmnist_seq.onnx", "--mode", "sequence", "--verify", "4",
    check=lambda o: None if o["verify"]["predictions_differing"] == 0 else f"onnx differs {o['verify']}")


def demo_ok(o):
    bad = [r for r in o["rows"] if "error" in r or r.get("data") != "sample"]
    return None if not bad and len(o["rows"]) == 5 else f"rows {bad or o['rows']}"


with tempfile.TemporaryDirectory() as empty:      # a fresh machine: no data root, no downloads
    run("demo", "--offline", "--no-report", "--deploy-limit", "20", "--trials", "1", check=demo_ok,
        env={"EDGESSM_DATA": empty})
if failures:
    print(f"wheel check: {len(failures)} command(s) failed", file=sys.stderr)
    sys.exit(1)
print("wheel check: all commands passed")
