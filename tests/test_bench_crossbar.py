"""The crossbar sweep's results file (benchmarks/bench_crossbar.py --json): merge and summary."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_crossbar", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_crossbar.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _pt(model, value, mean, task="fsdd", fixed=None):
    return {"model": model, "task": task, "n": 300, "param": "write_noise_sigma_us", "value": value,
            "fixed": fixed or {"write_noise_slope": "0"}, "accuracy": {"mean": mean, "std": 0.01},
            "trials": [mean] * 5}


def test_threshold_is_the_first_value_below_the_drop():
    pts = [_pt("a", 0.0, 0.95), _pt("a", 5.0, 0.93), _pt("a", 10.0, 0.89), _pt("a", 15.0, 0.92)]
    assert bench.threshold(pts, 0.05) == 10.0
    assert bench.threshold(pts, 0.10) is None
    assert bench.threshold(list(reversed(pts)), 0.05) == 10.0      # order of the points does not matter


def test_results_merge_replace_and_summarize(tmp_path):
    path = str(tmp_path / "sub" / "r.json")
    bench.write_results(path, [_pt("a", 0.0, 0.95), _pt("a", 10.0, 0.80)], 0.05)
    out = bench.write_results(path, [_pt("a", 10.0, 0.94), _pt("b", 0.0, 0.9, task="fsdd-01")], 0.05)
    assert out["schema"] == "edgessm-crossbar-sweep" and out["schema_version"] == 1
    assert len(out["points"]) == 3                                  # (a, 10) replaced, b added
    again = json.loads(Path(path).read_text())
    assert again["points"] == out["points"]
    sa = next(s for s in again["summary"] if s["model"] == "a")
    assert sa["reference_accuracy"] == 0.95 and sa["first_value_below"] is None and sa["values"] == [0.0, 10.0]
    # another file's points merge in through the merge command
    other = str(tmp_path / "o.json")
    bench.write_results(other, [_pt("c", 0.0, 0.9), _pt("c", 5.0, 0.7)], 0.05)
    assert bench.main(["merge", "--json", path, "--from", other]) == 0
    merged = json.loads(Path(path).read_text())
    assert len(merged["points"]) == 5
    assert next(s for s in merged["summary"] if s["model"] == "c")["first_value_below"] == 5.0


def test_not_a_results_file_is_refused(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(SystemExit, match="not a edgessm-crossbar-sweep"):
        bench.write_results(str(p), [_pt("a", 0.0, 0.9)], 0.05)
    assert json.loads(p.read_text()) == {"schema": "something-else"}


def test_table_lists_models_values_and_threshold(tmp_path, capsys):
    path = str(tmp_path / "r.json")
    bench.write_results(path, [_pt("a", 0.0, 0.95), _pt("a", 10.0, 0.80), _pt("b", 0.0, 0.9)], 0.05)
    assert bench.main(["table", "--json", path, "--task", "fsdd", "--param", "write_noise_sigma_us",
                       "--fixed", "write_noise_slope=0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| write_noise_sigma_us | 0 | 10 |")
    assert lines[2] == "| a | 0.950 +- 0.010 | 0.800 +- 0.010 | 10 |"
    assert lines[3] == "| b | 0.900 +- 0.010 | - | not reached |"
    with pytest.raises(SystemExit):
        bench.main(["table", "--json", path, "--task", "smnist", "--param", "write_noise_sigma_us"])


# ---- benchmarks/crossbar_hw_check.py: the wrapped model per device setting ----------------------
_hw_spec = importlib.util.spec_from_file_location(
    "crossbar_hw_check", Path(__file__).resolve().parents[1] / "benchmarks" / "crossbar_hw_check.py")
hwcheck = importlib.util.module_from_spec(_hw_spec)
_hw_spec.loader.exec_module(hwcheck)


def test_hw_check_cap_moves_only_the_slow_modes():
    import torch
    import edgessm as es
    torch.manual_seed(0)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=10, d_model=8, d_state=6, n_layers=2,
                                     dt_min=0.001, dt_max=0.1)
    c = hwcheck._cap_modes(m, 0.9)
    for b, bc in zip(m.blocks, c.blocks):
        before, after = b.s4d.discrete()[0].detach().abs(), bc.s4d.discrete()[0].detach().abs()
        assert float(after.max()) <= 0.9 + 1e-6
        fast = before <= 0.9
        assert torch.allclose(after[fast], before[fast])               # fast modes unchanged
    with pytest.raises(Exception, match=r"cap_dA = 1.5"):
        hwcheck._cap_modes(m, 1.5)


@pytest.mark.parametrize("variant", ["weight_bits", ""])
def test_hw_check_rejects_a_malformed_variant_before_any_work(variant):
    import edgessm as es
    with pytest.raises(es.ConfigError, match="field=value"):
        hwcheck.main(["nowhere", "--task", "smnist", "--variant", variant])
