"""The crossbar's device model against IBM aihwkit (optional: skipped when aihwkit is not installed),
and the `reram_wan2022` device preset derived from aihwkit's ReRamWan2022NoiseModel."""
import math

import pytest
import torch

import edgessm as es
from conftest import needs_fsdd
from edgessm.bench import analog_xcheck as xc

torch.set_num_threads(1)
OK, WHY = xc.available()
needs_aihwkit = pytest.mark.skipif(not OK, reason=WHY)


def test_reram_wan2022_preset_constants():
    from edgessm.targets.crossbar import load_device
    d = load_device("reram_wan2022")
    assert (d.g_min_us, d.g_max_us, d.array_rows, d.array_cols) == (0.0, 40.0, 256, 256)
    # the line through aihwkit's 1-s polynomial at G = 0 and G = g_max
    c = [0.348, 16.030, -43.853, 45.393, -16.815]
    assert math.isclose(float(d.write_sigma_us(0.0)), c[0], rel_tol=1e-12)
    assert math.isclose(float(d.write_sigma_us(40.0)), sum(c), rel_tol=1e-9)
    assert (d.drift_nu, d.drift_nu_std) == (0.0, 0.0)


@needs_fsdd
def test_reram_wan2022_preset_deploys(capsys):
    import json
    from edgessm.cli import main
    rc = main(["deploy", "fsdd01-ternary", "--target", "crossbar", "--spec", "reram_wan2022", "--limit", "6",
               "--trials", "2", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["resources"]["array"] == "256x256" and len(out["accuracy"]["trials"]) == 2
    assert 0.0 <= out["accuracy"]["mean"] <= 1.0


@needs_aihwkit
def test_aihwkit_source_still_has_the_preset_coefficients():
    """The preset cites aihwkit's fit; if aihwkit changes it, the preset must be re-derived."""
    from aihwkit.inference import ReRamWan2022NoiseModel
    nm = ReRamWan2022NoiseModel(g_max=40.0)
    assert nm.coeff_dic[1.0] == [-16.815, 45.393, -43.853, 16.030, 0.348][::-1]


def _levels(model, side, n, cfg=None):
    acc = {}
    for k in range(n):
        W = xc.edgessm_weights(model, cfg, k) if side == "edgessm" else \
            xc.aihwkit_weights(model, xc._noise_model("reram_wan2022"), None, k, False)
        xc._merge(acc, xc.level_errors(model, W))
    return xc._stats(acc)


@needs_aihwkit
def test_programmed_weights_match_aihwkit_reram():
    """Same trained ternary weights, both simulators' programming: per level the weight error has
    the same mean and spread (within Monte-Carlo error); a device with another sigma is told apart."""
    from edgessm.targets.crossbar import load_device
    model = es.load("fsdd01-ternary")
    _, _, _, preset, overrides, _ = xc.DEVICES["reram_wan2022_prog"]
    cfg = load_device(preset, weight_bits=2, **overrides)
    e, a = _levels(model, "edgessm", 3, cfg), _levels(model, "aihwkit", 3)
    assert set(e) == set(a) == {-1.0, 0.0, 1.0}
    for lv in e:
        se = math.hypot(e[lv]["mean_se"], a[lv]["mean_se"])
        assert abs(e[lv]["mean"] - a[lv]["mean"]) < 4 * se + 1e-4, (lv, e[lv], a[lv])
        assert abs(e[lv]["std"] / a[lv]["std"] - 1) < 0.06, (lv, e[lv], a[lv])
    assert 0.025 < e[1.0]["std"] < 0.031          # sigma(40 uS) / 40 uS x sqrt(1 + small) ~ 0.028
    worse = _levels(model, "edgessm", 3, cfg.replace(write_noise_sigma_us=0.348 * 1.2,
                                                     write_noise_slope=0.018875 * 1.2))
    assert abs(worse[1.0]["std"] / a[1.0]["std"] - 1) > 0.12


@needs_aihwkit
@needs_fsdd
def test_compare_runs_and_reports_float_accuracy():
    from edgessm.data import load_task
    from edgessm.train.loop import evaluate
    model = es.load("fsdd01-ternary")
    te = load_task("fsdd-01", "test", limit=30)
    r = xc.compare(model, te.x, te.y, "pcm_1h", instances=2)
    assert r["float"] == evaluate(model, te)["accuracy"]
    for side in ("edgessm", "aihwkit"):
        assert len(r[side]["trials"]) == 2 and all(0 <= x <= 1 for x in r[side]["trials"])
    assert math.isclose(r["difference"], r["edgessm"]["mean"] - r["aihwkit"]["mean"])
