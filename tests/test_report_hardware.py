"""The report's hardware figures (Loihi 2 energy split and per-layer work, crossbar tiling,
conductances, programming error and energy split), its published figures, its options, and
the one module through which it reaches the targets."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import needs_fsdd, needs_mnist

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def hw_report(tmp_path_factory):
    """The two hardware sections alone (they make their own runs when the accuracy section is absent)."""
    from edgessm.report import build_report
    out = tmp_path_factory.mktemp("hwreport")
    path = build_report(out, "smnist", None, 4, calibrate=8, crossbar_limit=6, trials=2,
                        sections=("loihi2", "crossbar"))
    return out, path, json.loads((out / "report.json").read_text())


@needs_mnist
def test_loihi2_energy_split_and_layers(hw_report):
    _, path, doc = hw_report
    s = doc["sections"]["loihi2"]
    assert not s["errors"], s["errors"]
    assert [f for f in s["figures"]] == ["loihi2.png"]
    energy = s["energy"]
    assert {r["mode"] for r in energy} == {"token", "pipelined"}
    for mode in ("token", "pipelined"):
        rr = [r for r in energy if r["mode"] == mode]
        total = rr[0]["total_energy_per_token_j"]
        assert sum(r["energy_per_token_j"] for r in rr) == pytest.approx(total, rel=1e-9)
        assert sum(r["share"] for r in rr) == pytest.approx(1.0)
        kinds = {r["component"]: r["kind"] for r in rr}
        assert kinds == {"synaptic": "dynamic", "neurons": "dynamic", "messages": "dynamic", "hops": "dynamic",
                         "static": "static"}
        assert all(r["energy_per_token_j"] > 0 for r in rr)
    tok = {r["component"]: r["energy_per_token_j"] for r in energy if r["mode"] == "token"}
    pipe = {r["component"]: r["energy_per_token_j"] for r in energy if r["mode"] == "pipelined"}
    # the same work per token in both modes; only the static share (power x time per token) differs
    assert tok["synaptic"] == pytest.approx(pipe["synaptic"]) and tok["static"] > pipe["static"]
    # per-layer synaptic ops add up to the synaptic energy of the cost model
    layers = s["rows"]
    e_syn = s["assumptions"]["energy_synop_j"][0]
    assert sum(r["synops_per_token"] for r in layers) * e_syn == pytest.approx(tok["synaptic"], rel=1e-9)
    names = [r["population"] for r in layers]
    assert names[0] == "input" and names[-1] == "decoder" and "s4d3.state" in names and len(set(names)) == len(names)
    for r in layers:
        assert r["synops_per_token"] >= 0 and r["messages_per_token"] <= r["neurons"] + 1e-9
        if not r["state"]:
            assert 0.0 <= r["spike_sparsity"] <= 1.0
    assert layers[-1]["synops_per_token"] == 0            # the decoder drives no synapse
    graded = [r for r in layers if not r["state"]]
    sent = sum(r["messages_per_token"] for r in graded)
    assert 1 - sent / sum(r["neurons"] for r in graded) == pytest.approx(s["spike_sparsity"])
    # time per token: streaming = one step, fall-through and one-at-a-time = depth steps
    stream, fall, one = s["timing"]
    depth = s["assumptions"]["depth_steps"]
    assert stream["time_per_token_s"] == pytest.approx(s["assumptions"]["time_per_step_s"])
    assert fall["time_per_token_s"] == pytest.approx(depth * stream["time_per_token_s"])
    assert one["time_per_token_s"] == pytest.approx(fall["time_per_token_s"])
    assert stream["energy_per_token_j"] == pytest.approx(sum(pipe.values()))
    assert one["energy_per_token_j"] == pytest.approx(sum(tok.values()))
    # the published calibration point beside the model's own figures for that network
    cal = s["calibration_network"]
    assert cal["cores"] == 6 and 31e-6 / 2 <= cal["time_per_step_s"] <= 2 * 31e-6
    # the published Loihi 2 vs Jetson ratios beside this model's measured CPU over modelled Loihi 2 figures
    jt = s["jetson"]
    assert jt["loihi2_step_s"] == pytest.approx(stream["time_per_token_s"])
    for name, e in jt["engines"].items():
        assert e["latency_ratio"] == pytest.approx(e["time_per_token_s"] / jt["loihi2_step_s"])
        assert e["energy_ratio"] == pytest.approx(e["energy_per_token_j"] / jt["loihi2_energy_per_token_j"])
    assert set(jt["engines"]) == {"cpu-fast (C engine)", "torch net.step"} and jt["params"] > 0
    # the second published measurement beside the model's prediction for it
    sp = {r["what"]: r for r in s["second_point"]["rows"]}
    assert sp["neuro cores"]["published"] == 74 and sp["latency per inference"]["modelled"] > 0
    html = path.read_text()
    assert "arXiv:2409.15022" in html and "Published" in html
    assert "1000x" in html and "75x" in html and "29x" in html and "arXiv:2608.18341" in html


@needs_fsdd
def test_crossbar_tiling_conductances_and_energy(hw_report):
    from edgessm import io
    from edgessm.targets import get
    _, path, doc = hw_report
    s = doc["sections"]["crossbar"]
    assert not s["errors"], s["errors"]
    assert s["figures"] == ["crossbar_arrays.png", "crossbar_programming.png"]
    prog = get("crossbar").compile(io.load("fsdd01-ternary"), seed="0")
    res = prog.resources()
    # tiling: every layer once, in network order, on disjoint contiguous arrays covering all of them
    tiles = s["rows"]
    assert [t["layer"] for t in tiles] == prog.order()
    idx = [a for t in tiles for a in t["array_indices"]]
    assert idx == list(range(res["arrays"])) and s["arrays"] == res["arrays"]
    for t in tiles:
        assert t["arrays"] == len(t["array_indices"]) == res["stages"][t["layer"]]["arrays"]
        assert 0 < t["utilization"] <= 1 and all(0 < u <= 1 for u in t["array_utilization"])
        assert sum(t["array_utilization"]) / t["arrays"] == pytest.approx(t["utilization"])
    # programming error: one count per programmed device, conductances inside the device's range
    pr = s["programming"]
    assert sum(pr["counts"]) == pr["devices"] == res["devices"] == res["arrays"] * 64 * 64
    assert len(pr["edges_us"]) == len(pr["counts"]) + 1
    assert 0 <= pr["programmed_min_us"] and pr["programmed_max_us"] <= pr["clip_max_us"] == 1.5 * 225.0
    assert pr["target_min_us"] == pytest.approx(50.0) and pr["target_max_us"] == pytest.approx(225.0)
    assert pr["std_within_5_sigma_us"] == pytest.approx(3.5, abs=1.2)     # write noise 2.7-4.3 uS
    assert pr["outside_5_sigma"] > 0                                        # 0.2 % stuck devices
    for name, m in pr["maps"].items():
        g = m["g_us"]
        assert len(g) == 64 and all(len(row) == 64 for row in g)
        assert all(0 <= v <= 1.5 * 225.0 for row in g for v in row)
        assert all(50.0 - 1e-6 <= v <= 225.0 + 1e-6 for row in m["target_us"] for v in row)
    assert {m["layer"] for m in pr["maps"].values()} == {"s4d0", "mixing0"}
    # the cost model's split into arrays, ADC, DAC and digital sums to its total
    for mode in ("token", "pipelined"):
        rr = [r for r in s["energy"] if r["mode"] == mode]
        assert {r["component"] for r in rr} == {"crossbar", "adc", "dac", "digital"}
        assert sum(r["energy_per_token_j"] for r in rr) == pytest.approx(rr[0]["total_energy_per_token_j"])
        assert all(r["energy_per_token_j"] >= 0 and r["kind"] == "dynamic" for r in rr)
    acc = s["accuracy"]
    lo, hi = acc["accuracy_ci95"]
    assert acc["n"] == 6 and lo <= acc["accuracy"] <= hi and len(acc["trials"]) == 2
    sw = s["software_accuracy"]
    assert sw["n"] == 6 and sw["accuracy_ci95"][0] <= sw["accuracy"] <= sw["accuracy_ci95"][1]
    html = path.read_text()
    assert "95.1%" in html and "81.7%" in html and "arXiv:2412.20215" in html


def test_published_figures():
    from edgessm.errors import UnknownNameError
    from edgessm.report import published
    from edgessm.targets.loihi2 import CALIBRATION_POINT
    published.check()
    q = {f.key: f for f in published.figures("quantization")}
    assert [q[k].value for k in ("m24_scifar_float", "m24_scifar_ptq", "m24_scifar_qaft")] == [86.5, 71.7, 84.1]
    assert all(f.source == "[M24]" and "arXiv:2409.15022" in f.citation for f in q.values())
    x = {f.key: f for f in published.FIGURES if f.source == "[IMSSA]"}
    assert (x["imssa_software"].value, x["imssa_on_chip"].value) == (95.1, 81.7)
    assert (x["imssa_noise_2bit"].value, x["imssa_noise_5bit"].value) == (15.0, 5.0)
    assert published.get("m24_time_per_step").value == CALIBRATION_POINT["time_per_step_s"]
    for f in published.FIGURES:
        d = f.to_dict()
        assert d["kind"] == "published" and d["citation"] and f.unit and f.what and f.text()
    with pytest.raises(UnknownNameError):
        published.get("no-such-figure")


def test_unknown_options_fail_before_writing(tmp_path):
    from edgessm.errors import ConfigError
    from edgessm.report import build_report
    for kw in ({"no_such_option": 1}, {"sections": ("accuracy", "nope")}, {"trials": 0}):
        with pytest.raises(ConfigError):
            build_report(tmp_path / "r", "smnist", None, 4, **kw)
    with pytest.raises(ConfigError):
        build_report(tmp_path / "r", "smnist", None, 0)
    assert not (tmp_path / "r").exists()


def test_options_defined_once():
    """The command line's report and the demo's use build_report's defaults; the command
    written into the report names only the options that differ from them."""
    from edgessm.report.context import Options
    o = Options.from_keywords({})
    assert o.changed() == {} and o.resolved()["robust_sweeps"]["write_noise_linear"]
    assert Options.from_keywords({"trials": 5, "specs": ["loihi2"]}).changed() == {"trials": 5, "specs": ("loihi2",)}


def test_targets_reached_through_one_module():
    """Only report/runs.py calls deploy, a target's compile or evaluate_program."""
    root = Path(__file__).resolve().parents[1] / "src" / "edgessm" / "report"
    pat = re.compile(r"cli_deploy|targets import (get|evaluate_program)|targets\.get\(|evaluate_program|(?<!runs)\.compile\(")
    offenders = []
    for f in root.rglob("*.py"):
        if f.name == "runs.py":
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if pat.search(line):
                offenders.append(f"{f.relative_to(root)}:{i}: {line.strip()}")
    assert not offenders, offenders


@needs_fsdd
def test_robustness_sweeps_a_post_training_quantized_model(tmp_path):
    """A float checkpoint passed as a robust model is quantized by the crossbar compile (PTQ, at
    the weight bits given), calibrated on training inputs, and labelled so beside the shipped
    hardware-aware model."""
    import torch
    import edgessm as es
    from edgessm import io
    from edgessm.report import build_report
    torch.manual_seed(0)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=32, d_output=2, d_model=8, d_state=4, n_layers=1,
                                     dt_min=0.1, dt_max=1.0)
    io.save(m, tmp_path / "float")
    build_report(tmp_path / "r", "smnist", None, 2, crossbar_limit=4, robust_devices=1, calibrate=8,
                 sections=("robustness",), robust_sweeps={"write_noise_linear": (0.0, 30.0)},
                 robust_models=[("float, 5-bit PTQ", str(tmp_path / "float"), {"weight_bits": 5})])
    s = json.loads((tmp_path / "r" / "report.json").read_text())["sections"]["robustness"]
    assert not s["errors"], s["errors"]
    info = {m["model"]: m for m in s["models"]}
    assert info["float, 5-bit PTQ"]["training"] == "PTQ" and info["float, 5-bit PTQ"]["weight_bits"] == 5
    assert info["fsdd01-ternary"]["training"] == "hardware-aware" and info["fsdd01-ternary"]["weight_bits"] == 2
    rows = [r for r in s["rows"] if r["model"] == "float, 5-bit PTQ"]
    assert [r["value"] for r in rows] == [0.0, 30.0]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n"] == 4 and r["sets"]["weight_bits"] == 5 for r in rows)
    assert "float, 5-bit PTQ (5-bit, PTQ)" in (tmp_path / "r" / "index.html").read_text()


def test_write_noise_study_file_becomes_panels(tmp_path):
    from edgessm.report import plots
    from edgessm.report.sections.robustness import study
    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "benchmarks/results/crossbar_write_noise.json").read_text())
    st = study(root / "benchmarks/results/crossbar_write_noise.json")
    pts = [p for p in doc["points"] if p["param"] == "write_noise_sigma_us"]
    assert sum(len(s["rows"]) for s in st["sweeps"]) == len(pts)
    keys = {s["key"] for s in st["sweeps"]}
    assert {"study_fsdd_all", "study_fsdd_linear", "study_fsdd-01_all", "study_fsdd-01_linear"} <= keys
    for s in st["sweeps"]:
        assert {r["model"] for r in s["rows"]} >= {"hw-2bit", "hw-5bit"}
        assert all(0.0 <= r["accuracy"] <= 1.0 and r["trials"] == 5 for r in s["rows"])
        assert [p["value"] for p in s["published"]] == [5.0, 15.0]
    name = plots.robustness(st["sweeps"], {}, tmp_path, name="robustness_study")
    assert (tmp_path / name).is_file()
    assert "note" in study(tmp_path / "missing.json") and "sweeps" not in study(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "x"}')
    with pytest.raises(ValueError, match="points"):
        study(bad)
