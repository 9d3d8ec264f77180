"""The crossbar simulator's layer-by-layer run (sim.c and torch) against token-by-token step()."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgessm as es
from conftest import needs_fsdd
from edgessm.targets.crossbar import simlib

torch.set_num_threads(1)
needs_c = pytest.mark.skipif(not simlib.available()[0], reason=f"crossbar simulator kernel: {simlib.available()[1]}")


def _model(mixing_preset="neuromorphic", H=6, N=8, seed=0):
    torch.manual_seed(seed)
    return es.SequenceModel.from_preset(mixing_preset, d_input=3, d_output=4, d_model=H, d_state=N, n_layers=2,
                                        dt_min=0.1, dt_max=1.0)


@pytest.fixture(scope="module")
def X():
    return torch.randn(9, 25, 3, generator=torch.Generator().manual_seed(2))


def _compile(m, X, **sets):
    return es.targets.get("crossbar").compile(m, calibration=X, **{"seed": "3", "adc_bits": "6", **sets})


@pytest.mark.parametrize("engine", ["c", "torch"])
@pytest.mark.parametrize("sets", [dict(), dict(state_mode="analog"), dict(state_dither="1"),
                                  dict(array_rows="32", array_cols="24"),
                                  dict(recurrence="digital", ssm_bits="12", state_dither="1")])
def test_run_equals_step_without_read_noise(X, engine, sets):
    """Write noise, stuck devices and drift are programmed the same; without read noise the
    layer-by-layer run is the token-by-token network exactly, with the same statistics."""
    if engine == "c" and not simlib.available()[0]:
        pytest.skip(simlib.available()[1])
    m = _model()
    a = _compile(m, X, read_noise_rel="0", stuck_on_frac="0.02", **sets)
    b = _compile(m, X, read_noise_rel="0", stuck_on_frac="0.02", **sets)
    b.engine = engine
    ya, yb = a.run_tokens(X), b.run(X)
    assert torch.equal(ya, yb)
    sa, sb = a.stats(), b.stats()
    assert sa["adc_saturations"] == sb["adc_saturations"] > 0
    assert sa["stream_tokens"] == sb["stream_tokens"] == X.shape[0] * X.shape[1]
    assert sb["crossbar_energy_j"] == pytest.approx(sa["crossbar_energy_j"], rel=1e-5)


@needs_c
def test_read_noise_has_the_size_of_the_token_loop(X):
    """With read noise, both paths scatter the outputs around the noise-free ones alike."""
    m = _model()
    clean = _compile(m, X, read_noise_rel="0").run(X)
    dev = {}
    for k, runner in (("tokens", "run_tokens"), ("c", "run"), ("torch", "run")):
        p = _compile(m, X, read_noise_rel="0.02")
        p.engine = "torch" if k == "torch" else "c"
        d = getattr(p, runner)(X) - clean
        dev[k] = float(d.std())
    assert dev["tokens"] > 0
    for k in ("c", "torch"):
        assert 0.7 < dev[k] / dev["tokens"] < 1.4, dev


@needs_c
def test_run_is_reproducible_per_device_instance(X):
    m = _model()
    p1, p2 = _compile(m, X), _compile(m, X)
    y1 = p1.run(X)
    y2 = p2.run(X)
    assert torch.equal(y1, y2)                       # same device instance, same reads
    p3 = _compile(m, X, seed="4")
    assert not torch.equal(y1, p3.run(X))           # another instance


@needs_c
@pytest.mark.parametrize("sets", [dict(), dict(state_mode="analog")])
def test_run_does_not_depend_on_batch_split_or_threads(X, sets):
    """With read noise, every sample (S4D) and every token row (linear stages) draws from its
    own stream: the outputs and saturation counts are the same whether the samples run in one
    call or several, on one thread or two."""
    m = _model()
    p1 = _compile(m, X, **sets)
    y1 = p1.run(X)
    p2 = _compile(m, X, **sets)
    torch.set_num_threads(2)
    try:
        y2 = torch.cat([p2.run(X[:4]), p2.run(X[4:7]), p2.run(X[7:])])
    finally:
        torch.set_num_threads(1)
    assert torch.equal(y1, y2)
    s1, s2 = p1.stats(), p2.stats()
    assert s1["adc_saturations"] == s2["adc_saturations"]
    assert s1["crossbar_energy_j"] == pytest.approx(s2["crossbar_energy_j"], rel=1e-9)
    assert not torch.equal(_compile(m, X, **sets).run(X[4:]), y1[4:])     # other samples' streams


@needs_c
def test_s4d_kernel_rejects_an_output_on_two_columns(X):
    """The S4D kernel reads each block output from one array column; a stage whose outputs are
    computed by two columns is refused (clear error, nothing written)."""
    p = _compile(_model(), X)
    p._compact()
    st = p.stages["s4d0"]
    st.c_out = st.c_out.clone()
    st.c_out[0, 1] = st.c_out[0, 0]
    st._cargs = None
    vu = torch.zeros(2, 3, 6)
    with pytest.raises(ValueError, match="several array columns"):
        simlib.run_s4d(st, p.config, vu, p.scales["s4d0"], 9, 1, 0)


@needs_c
def test_simulator_normals_are_standard_normal():
    x = simlib.normals(400_000, seed=5, stream=1)
    assert abs(x.mean()) < 0.01 and abs(x.var() - 1) < 0.01
    assert abs(((x - x.mean()) ** 4).mean() / x.var() ** 2 - 3) < 0.05
    assert abs((np.abs(x) > 2).mean() - 0.0455) < 0.002
    assert abs((np.abs(x) > 3).mean() - 0.0027) < 0.0004
    # Box-Muller pairs (cos and sin of one angle: 8 lanes apart) and neighbours are independent
    pairs = x[:399_360].reshape(-1, 2, 8)
    for a, b in ((pairs[:, 0], pairs[:, 1]), (x[:-1], x[1:])):
        a, b = a.ravel(), b.ravel()
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.01 and abs(np.corrcoef(a * a, b * b)[0, 1]) < 0.01
    y = simlib.normals(1000, seed=5, stream=2)
    assert not np.allclose(x[:1000], y)


def test_taox_preset_loads_with_its_constants(X):
    from edgessm.targets.crossbar import load_device
    d = load_device("taox")
    assert (d.array_rows, d.array_cols, d.write_noise_slope) == (64, 64, 0.0)
    assert (d.g_min_us, d.g_max_us, d.write_noise_sigma_us) == (10.0, 160.0, 5.0)
    p = es.targets.get("crossbar").compile(_model(), "taox", calibration=X, seed="1")
    assert p.config.g_max_us == 160.0 and p.config.write_noise_slope == 0.0
    q = es.targets.get("crossbar").compile(_model(), calibration=X, seed="1")
    assert not torch.equal(p.run(X), q.run(X))          # another device, other conductances


@needs_fsdd
def test_deploy_cli_spec_taox(tmp_path, capsys):
    import json
    from edgessm.cli import main
    from edgessm.data import load_task
    from edgessm.targets.crossbar import HwSequenceModel, save_hw
    Xf = load_task("fsdd-01", "train", limit=8).x
    torch.manual_seed(0)
    m = HwSequenceModel.from_float(es.SequenceModel.from_preset("neuromorphic", d_input=32, d_output=2, d_model=4,
                                                                d_state=4, n_layers=1), None)
    m.calibrate(Xf)
    save_hw(m, tmp_path / "m", extra={"run": {"data": {"task": "fsdd-01"}}})
    rc = main(["deploy", str(tmp_path / "m"), "--target", "crossbar", "--spec", "taox", "--limit", "4",
               "--trials", "2", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["resources"]["array"] == "64x64" and len(out["accuracy"]["trials"]) == 2
    rc = main(["deploy", str(tmp_path / "m"), "--target", "crossbar", "--spec", "taox-nope", "--limit", "2"])
    assert rc == 2 and "unknown crossbar device" in capsys.readouterr().err
