"""`edgessm report` (src/edgessm/report): a small but complete report, and failures written
into it rather than raised."""
from __future__ import annotations

import functools
import json

import pytest
from conftest import needs_fsdd, needs_mnist

pytest.importorskip("matplotlib")

SECTIONS = ("accuracy", "quantization", "cost", "loihi2", "crossbar", "robustness", "study", "latency", "trace")
SMALL = dict(calibrate=8, crossbar_limit=8, trials=2, robust_devices=1,
             robust_sweeps={"write_noise": (0.0, 40.0), "write_noise_linear": (0.0, 30.0), "stuck": (0.05,),
                            "drift": (1e6,)},
             study={"batches": (1, 4), "seq_lens": (32,), "steps": 20, "torch_steps": 5, "repeats": 1},
             cost_batch=2, cost_steps=50, quant_tasks=("smnist",))


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    """One small report of the shipped models, with the w4 spec made to fail on the loihi2 target."""
    from edgessm.report import build_report
    from edgessm.targets.loihi2 import Loihi2Target
    out = tmp_path_factory.mktemp("report")
    original = Loihi2Target.build

    @functools.wraps(original)
    def flaky(self, model, config, calibration=None):
        if config.quant_spec is not None and config.quant_spec.name == "w4":
            raise RuntimeError("injected compile failure")
        return original(self, model, config, calibration)
    mp = pytest.MonkeyPatch()
    mp.setattr(Loihi2Target, "build", flaky)
    try:
        path = build_report(out, "smnist", None, 8, **SMALL)
    finally:
        mp.undo()
    return out, path, json.loads((out / "report.json").read_text())


@needs_mnist
@needs_fsdd
def test_report_files_and_sections(small_report):
    out, path, doc = small_report
    assert path == out / "index.html" and path.is_file()
    html = path.read_text()
    secs = doc["sections"]
    assert tuple(secs) == SECTIONS
    for key in SECTIONS:
        s = secs[key]
        assert s["png"], (key, s["errors"])
        assert (out / s["png"]).is_file() and (out / s["png"]).stat().st_size > 5000
        assert s["caption"] and s["rows"], key
        assert f"src='{s['png']}'" in html
    assert html.count("<table") >= 7 and "<pre>" not in html        # tables, not JSON dumps
    meta = doc["meta"]
    assert meta["machine"]["cpu_model"] and meta["machine"]["cores"] >= 1
    assert "torch" in meta["versions"] and "edgessm report --out" in meta["command"]
    assert "edgessm report --out" in html


@needs_mnist
@needs_fsdd
def test_report_accuracy_rows(small_report):
    _, _, doc = small_report
    rows = doc["sections"]["accuracy"]["rows"]
    by = {(r["model"], r["target"], r.get("spec")): r for r in rows}
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 5      # cpu, loihi2 w8, loihi2 ternary, fsdd01 software, fsdd01 crossbar
    for r in ok:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n"] >= 1
    assert by[("smnist", "cpu", None)]["status"] == "ok"
    assert by[("smnist", "loihi2", "loihi2")]["status"] == "ok"
    xb = by[("fsdd01-ternary", "crossbar", None)]
    assert xb["trials"] == 2 and len(xb["accuracy_trials"]) == 2 and xb["accuracy_std"] >= 0
    # the failing target is an error row, not an exception
    bad = by[("smnist", "loihi2", "w4")]
    assert bad["status"] == "error" and "injected compile failure" in bad["error"] and bad["accuracy"] is None
    # smnist (d_state 64) does not fit 64 x 64 arrays: a note, not a crash
    nf = by[("smnist", "crossbar", None)]
    if doc["meta"]["models"]["smnist"]["d_state"] + 1 > 64:
        assert nf["status"] == "does not fit" and nf["error"].startswith("does not fit: ")


@needs_mnist
@needs_fsdd
def test_report_other_sections(small_report):
    _, _, doc = small_report
    s = doc["sections"]
    cost = s["cost"]["rows"]
    assert any(r["measured"] for r in cost) and any(not r["measured"] for r in cost)
    for r in cost:
        if "error" not in r:
            assert r["energy_per_token_j"] > 0 and r["latency_per_token_s"] > 0 and r["throughput_tokens_per_s"] > 0
    assert any(r["target"] == "crossbar" for r in cost)
    rob = s["robustness"]["rows"]
    assert {r["sweep"] for r in rob} == {"write_noise", "write_noise_linear", "stuck", "drift"}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rob)
    assert all(r["accuracy_ci95"][0] <= r["accuracy"] <= r["accuracy_ci95"][1] for r in rob)
    # each swept model with its weight bit-width and training; the published tolerances on the noise panels
    assert s["robustness"]["models"] == [{"model": "fsdd01-ternary", "weight_bits": 2, "training": "hardware-aware",
                                          "bits_text": "ternary (2-bit)", "sets": {}}]
    noise = {sw["key"]: sw for sw in s["robustness"]["sweeps"]}
    for key in ("write_noise", "write_noise_linear"):
        assert sorted(p["value"] for p in noise[key]["published"]) == [5.0, 15.0]
        assert all(p["kind"] == "published" and p["source"] == "[IMSSA]" for p in noise[key]["published"])
    assert not noise["stuck"]["published"]
    # the float / PTQ / QAFT section shows the published sCIFAR row beside the computed ones
    pub = s["quantization"]["published"]
    assert [(r["what"], round(r["accuracy"], 6)) for r in pub] == [("float", 0.865), ("PTQ", 0.717), ("QAFT", 0.841)]
    assert all(r["kind"] == "published" and r["source"] == "[M24]" for r in pub)
    study = s["study"]["rows"]
    assert {r["engine"] for r in study if r.get("measured")} >= {"cpu-fast", "torch-step", "torch-conv"}
    assert any(not r.get("measured") for r in study)
    assert all(r["p50_s"] > 0 and r["p99_s"] >= r["p50_s"] for r in study if r.get("measured"))
    assert {r["engine"] for r in s["latency"]["rows"]} == {"cpu-fast (C engine)", "torch net.step"}
    assert 0 <= s["trace"]["final_prediction"] < 10


def test_report_survives_a_missing_model(tmp_path):
    """A model that cannot be loaded: every section is an error entry, the report is still written."""
    from edgessm.report import build_report
    path = build_report(tmp_path, "no-such-model", "smnist", 4, crossbar_model=None)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert path.is_file() and tuple(doc["sections"]) == SECTIONS
    for key in SECTIONS:
        assert doc["sections"][key]["errors"], key
    assert "no-such-model" in path.read_text()


@needs_mnist
@needs_fsdd
def test_report_quantization_table(small_report):
    out, path, doc = small_report
    rows = doc["sections"]["quantization"]["rows"]
    assert [r["what"] for r in rows] == ["float", "PTQ", "QAFT"]
    for r in rows:
        assert r["status"] == "ok" and r["n"] == 8 and 0 <= r["accuracy"] <= 1, r
        lo, hi = r["accuracy_ci95"]
        assert lo <= r["accuracy"] <= hi
    assert rows[0]["recorded_n"] == 10000 and rows[2]["recorded"] is not None and rows[1]["recorded"] is None
    assert "95% interval" in path.read_text()
