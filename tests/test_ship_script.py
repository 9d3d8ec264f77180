"""resume/ship.sh refuses what it cannot ship, before it builds or writes anything."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIP = ROOT / "resume" / "ship.sh"


def _ship(*args):
    return subprocess.run(["bash", str(SHIP), *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def _run_dir(tmp_path, done, total):
    run = tmp_path / "run"
    (run / "last").mkdir(parents=True)
    (run / "best").mkdir()
    (run / "config.json").write_text(json.dumps({"data": {"task": "smnist"}, "train": {"epochs": total}}))
    (run / "last" / "trainer.json").write_text(json.dumps({"epoch": done}))
    (run / "best" / "model.json").write_text("{}")
    qaft = tmp_path / "qaft.toml"
    qaft.write_text("[train]\nepochs = 1\n")
    return run, qaft


def test_ship_refuses_wrong_arguments_missing_files_and_unfinished_runs(tmp_path):
    r = _ship("a", "b")
    assert r.returncode == 2 and "usage" in r.stderr
    r = _ship(tmp_path / "nope", tmp_path / "q.toml", "x")
    assert r.returncode == 2 and "config.json is missing" in r.stderr
    run, qaft = _run_dir(tmp_path, done=12, total=50)
    r = _ship(run, qaft, "shiptest")
    assert r.returncode == 1 and "trained 12 of 50 epochs" in r.stderr
    assert not (ROOT / "src" / "edgessm" / "models" / "shiptest").exists()
    assert not (ROOT / "runs" / "shiptest_ship").exists()


def test_ship_refuses_a_run_without_a_final_test_or_no_better_than_the_shipped_model(tmp_path):
    run, qaft = _run_dir(tmp_path, done=50, total=50)
    r = _ship(run, qaft, "shiptest")
    assert r.returncode == 1 and "has no test accuracy" in r.stderr
    assert not (ROOT / "src" / "edgessm" / "models" / "shiptest").exists()
    shipped = ROOT / "src" / "edgessm" / "models" / "smnist" / "model.json"
    before, had_out = shipped.read_bytes(), (ROOT / "runs" / "smnist_ship").exists()
    old = json.loads(before)["metrics"]["test_accuracy"]
    for acc in (old, old - 0.01):
        (run / "best" / "model.json").write_text(json.dumps({"metrics": {"test_accuracy": acc}}))
        r = _ship(run, qaft, "smnist")
        assert r.returncode == 1 and "not replacing it" in r.stderr, r.stderr
    assert shipped.read_bytes() == before
    assert (ROOT / "runs" / "smnist_ship").exists() == had_out
