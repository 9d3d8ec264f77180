"""The crossbar target: device config, hardware-aware model, simulator, cost, CLI."""
from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

import edgessm as es
from conftest import needs_fsdd, needs_mnist
from edgessm.errors import ConfigError, InputError, UnknownNameError
from edgessm.targets.crossbar import (CrossbarConfig, HwSequenceModel, hw_wrap, load_device,
                                      parse_options, project, save_hw, table_markdown)
from edgessm.targets.crossbar.hw import block_matrix, dither_offsets, fake_converter, projected_ranges

torch.set_num_threads(1)


def tiny(d_input=3, d_output=4, H=6, N=8, layers=2, seed=0):
    torch.manual_seed(seed)
    return es.SequenceModel.from_preset("neuromorphic", d_input=d_input, d_output=d_output,
                                        d_model=H, d_state=N, n_layers=layers)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(12, 30, 3, generator=g)


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,msg", [
    (dict(g_min_us=100.0, g_max_us=50.0), "inverted"),
    (dict(g_min_us=50.0, g_max_us=50.0), "inverted"),
    (dict(g_min_us=-5.0), "positive"),
    (dict(g_max_us=0.0, g_min_us=0.0), "positive"),
    (dict(levels=1), "at least 2"),
    (dict(write_noise_sigma_us=-1.0), "write_noise_sigma_us"),
    (dict(adc_bits=0), "adc_bits"),
    (dict(dac_bits=0), "dac_bits"),
    (dict(stuck_on_frac=1.5), "stuck_on_frac"),
    (dict(weight_bits=8, levels=16), "levels"),
    (dict(state_mode="floating"), "state_mode"),
    (dict(write_noise_arrays="some"), "write_noise_arrays"),
    (dict(state_dither=2), "state_dither = 2"),
    (dict(state_dither=1, state_mode="analog"), "needs state_mode = 'digital'"),
    (dict(recurrence="fpga"), "recurrence 'fpga'"),
    (dict(recurrence="digital", state_mode="analog"), "digital words"),
    (dict(recurrence="digital", write_noise_arrays="s4d"), "needs recurrence = 'array'"),
    (dict(digital_state_bits=30), "digital_state_bits = 30"),
    (dict(recurrence="digital", digital_train="svd"), "digital_train 'svd'"),
    (dict(digital_train="fft"), "needs recurrence = 'digital'"),
    (dict(ssm_bits=12), "levels = 64"),
])
def test_bad_config_is_rejected(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_options(kw)


def test_unknown_and_malformed_set_fields():
    with pytest.raises(UnknownNameError, match="unknown crossbar config field 'write_noise'"):
        parse_options({"write_noise": "3"})
    with pytest.raises(ConfigError, match="write_noise_sigma_us must be of type float"):
        parse_options({"write_noise_sigma_us": "lots"})
    with pytest.raises(UnknownNameError):
        load_device("no-such-device")


def test_set_strings_are_converted_and_presets_load():
    c = parse_options({"write_noise_sigma_us": "15", "adc_bits": "6", "state_mode": "analog",
                       "drift_compensation": "false"})
    assert c.write_noise_sigma_us == 15.0 and c.adc_bits == 6 and c.state_mode == "analog"
    assert c.drift_compensation == 0
    assert load_device("ternary").weight_bits == 2          # configs/crossbar/ternary.toml
    assert load_device("ideal").noise == 0
    d = CrossbarConfig()
    assert d.stuck_on_frac > 0 and d.stuck_off_frac > 0 and d.g_max_us > d.g_min_us
    assert "[Milo21]" in table_markdown()


def test_array_too_small_for_a_block(data):
    net = tiny(N=8)                                         # block 9 x 9
    with pytest.raises(ConfigError, match="one channel's S4D block is 9 x 9"):
        es.targets.get("crossbar").compile(net, calibration=data, array_rows=8, array_cols=64)
    with pytest.raises(ConfigError, match="calibration"):
        es.targets.get("crossbar").compile(net)


def test_digital_recurrence_runs_the_blocks_in_the_periphery(data):
    """recurrence = 'digital': the blocks need no array (one larger than an array compiles), take
    no write noise, and cost digital work only; the ideal simulator is the hw model's network;
    ssm_bits are coefficient words, not device levels."""
    net = tiny(N=8)                                         # block 9 x 9 on 8-row arrays
    T = es.targets.get("crossbar")
    sets = dict(recurrence="digital", ssm_bits=12, array_rows=8, array_cols=64)
    prog = T.compile(net, calibration=data, **sets)
    res = prog.resources()
    assert res["recurrence"] == "digital" and res["stages"]["s4d0"]["arrays"] == 0
    assert res["arrays"] == sum(res["stages"][n]["arrays"] for n in ("encoder", "mixing0", "mixing1", "decoder"))
    w = prog._digital_work("s4d0")
    assert (w["mults"], w["adds"], w["adc"], w["dac"]) == (6 * (8 * 4 + 3), 6 * (6 * 4 + 1), 0, 0)
    arr = T.compile(net, calibration=data, ssm_bits=6)
    assert prog.cost().breakdown["adc"] < arr.cost().breakdown["adc"]
    from edgessm.report.sections.crossbar import programming, tiling
    kinds = {r["layer"]: (r["kind"], r["arrays"]) for r in tiling(prog)}
    assert kinds["s4d1"] == ("digital", 0) and kinds["mixing1"][0] == "linear"
    assert "s4d0" not in programming(prog)["maps"]
    ideal = T.compile(net, calibration=data, noise=0, **sets)
    with torch.no_grad():
        ref = ideal.model.forward_tokens(data)
    assert (ideal.run(data) - ref).abs().max() < 1e-5 * (1 + ref.abs().max())
    # training: the linear arrays draw write noise, the digital blocks do not
    m = HwSequenceModel.from_float(net, load_device("default", **sets))
    m.calibrate(data)
    m.train()
    q, s = m.qblock(0)
    assert torch.equal(m._noisy(q, "s4d"), q) and not torch.equal(m._noisy(q, "linear"), q)


# ---- numerics ------------------------------------------------------------------------------------
def test_block_matrix_runs_the_s4d_recurrence():
    torch.manual_seed(0)
    s4d = es.S4D(4, 6).double()
    u = torch.randn(2, 20, 4, dtype=torch.float64)
    y_ref = s4d(u, mode="recurrent")
    M = block_matrix(s4d).double()
    r = 1.0
    w = torch.zeros(2, 4, 6, dtype=torch.float64)
    ys = []
    for t in range(20):
        n = torch.einsum("bhi,hoi->bho", torch.cat([w, u[:, t, :, None] / r], -1), M)
        w, y = n[..., :6], n[..., 6] * r
        ys.append(y)
    assert torch.allclose(torch.stack(ys, 1), y_ref, atol=1e-9)


def test_dither_offsets_are_uniform_reproducible_and_indexed_by_token():
    U = dither_offsets(1, 8, 6, 0, 500)
    assert U.shape == (500, 8, 6) and U.dtype == torch.float32
    assert float(U.min()) > 0 and float(U.max()) < 1
    assert abs(float(U.mean()) - 0.5) < 0.01 and abs(float(U.var()) - 1 / 12) < 0.005
    hist = torch.histc(U, bins=10, min=0, max=1) / U.numel()
    assert float((hist - 0.1).abs().max()) < 0.01
    assert torch.equal(dither_offsets(1, 8, 6, 37, 5), U[37:42])            # a stream picks up at t
    assert not torch.equal(dither_offsets(2, 8, 6, 0, 500), U)              # every layer its own
    assert torch.equal(dither_offsets(1, 8, 6, 0, 500, torch.float64).float(), U)


def test_dithered_state_rounding_leaves_no_dead_band():
    """A slow mode w <- Q(a w) without input: rounding half up holds |w| at the dead band
    (a few steps, never 0 again); the dithered rounding lets it decay like the exact recursion."""
    a, bits, steps = 0.95, 8, 400
    q = (1 << (bits - 1)) - 1
    w0 = torch.full((64, 16), 0.3)
    w, wd = w0.clone(), w0.clone()
    U = dither_offsets(0, 64, 16, 0, steps)
    for t in range(steps):
        w = fake_converter(a * w, 1.0, bits)
        wd = fake_converter(a * wd, 1.0, bits, U[t])
    assert float(w.abs().min()) * q >= 5                   # stuck: 0.5 / (1 - a) = 10 steps wide
    assert float(wd.abs().mean()) * q < 1.0                # decayed: a**400 * 0.3 is 0


def test_state_gains_are_per_state_and_old_per_layer_ranges_load(data):
    m = HwSequenceModel.from_float(tiny(), load_device("default", adc_bits=16, dac_bits=16))
    m.calibrate(data)
    assert m.rho.shape == (2, 6, 4)
    assert float(m.rho[0].max() / m.rho[0].min()) > 1.5    # states of one layer get their own gain
    rg = m.ranges()
    old = dict(rg, rho=[2.0, 3.0])                          # ranges saved with one gain per layer
    m2 = HwSequenceModel.from_float(tiny(), load_device("default"))
    m2.load_ranges(old)
    assert torch.equal(m2.rho[1], torch.full((6, 4), 3.0))
    with pytest.raises(ConfigError, match="rho"):
        m2.load_ranges(dict(rg, rho=[1.0, 2.0, 3.0]))


def test_state_gains_keep_the_quantized_recurrence_stable(data):
    """However small a state's calibrated gain, its input coupling b stays below the recurrence's
    entries, so the shared row scale keeps dA fine (a quantized |dA| above 1 would make the
    recurrence and its gradient explode over long sequences); gains are floored per layer."""
    m = HwSequenceModel.from_float(tiny(), load_device("default", ssm_bits=5))
    m.calibrate(data)
    for i in range(2):
        assert float(m.rho[i].min()) >= 0.01 * float(m.rho[i].max()) * (1 - 1e-6)
        m.rho[i].fill_(1e-6)                                   # as if every state were quiet
        M = block_matrix(m.blocks[i].s4d, m.rho[i]).detach()
        n = 4
        dA = torch.complex(M[:, :n, :n].diagonal(dim1=1, dim2=2), M[:, n:2 * n, :n].diagonal(dim1=1, dim2=2))
        b = torch.complex(M[:, :n, 2 * n], M[:, n:2 * n, 2 * n])
        assert bool((b.abs() <= dA.abs() / 2 ** 0.5 * (1 + 1e-5)).all())
        q, sc = m.qblock(i)
        Mq = (q * sc.unsqueeze(-1)).detach()
        dAq = torch.complex(Mq[:, :n, :n].diagonal(dim1=1, dim2=2), Mq[:, n:2 * n, :n].diagonal(dim1=1, dim2=2))
        assert float(dAq.abs().max()) < 1
    m.train()
    x = torch.randn(4, 200, 3, generator=torch.Generator().manual_seed(3))
    torch.nn.functional.cross_entropy(m(x), torch.tensor([0, 1, 2, 3])).backward()
    assert all(bool(p.grad.isfinite().all()) for p in m.parameters() if p.grad is not None)


def test_projection_is_the_quantized_network(data):
    net = tiny()
    hi = load_device("default", adc_bits=16, dac_bits=16, weight_bits=5, ssm_bits=6)
    m = HwSequenceModel.from_float(net, hi)
    m.calibrate(data)
    m.eval()
    p = project(m)
    with torch.no_grad():
        assert (m(data) - p(data)).abs().max() < 2e-3 * (1 + m(data).abs().max())
        # the projected checkpoint re-quantizes to exactly the same matrices
        back = HwSequenceModel.from_float(p, hi)
        back.load_ranges(projected_ranges(m))
        for i in range(2):
            (q1, _), (q2, _) = m.qblock(i), back.qblock(i)
            assert torch.equal(q1, q2)
        q1, _ = m.qlinear(m.encoder)
        q2, _ = back.qlinear(back.encoder)
        assert torch.equal(q1, q2)
        assert torch.allclose(m(data), back(data), atol=1e-5)


def test_ternary_weights_use_three_levels(data):
    m = HwSequenceModel.from_float(tiny(), load_device("default", weight_bits=2))
    m.calibrate(data)
    q, _ = m.qlinear(m.blocks[0].mix)
    assert set(torch.unique(q).tolist()) <= {-1.0, 0.0, 1.0}


# ---- the simulator -------------------------------------------------------------------------------
def test_ideal_program_matches_hw_model_and_is_streaming(data):
    m = HwSequenceModel.from_float(tiny(), None)
    m.calibrate(data)
    m.eval()
    prog = es.targets.get("crossbar").compile(m, noise=0)
    Y = prog.run(data)
    with torch.no_grad():
        ref = m.forward_tokens(data)
    assert (Y - ref).abs().max() < 0.02 * (1 + ref.abs().max())
    assert (Y.argmax(-1) == ref.argmax(-1)).float().mean() > 0.95
    # step is a pure function of its state; a bad token raises before anything changes
    s = prog.init_state(12)
    y1, s1 = prog.step(data[:, 0], s)
    with pytest.raises(InputError):
        prog.step(torch.full((12, 3), float("nan")), s1)
    with pytest.raises(InputError):
        prog.step(data[:, 0, :2], s1)
    y2, _ = prog.step(data[:, 1], s1)
    assert torch.allclose(y2, Y[:, 1], atol=1e-6)


def test_mixing_batch_norm_is_folded_onto_the_arrays(data):
    net = tiny()
    net = es.SequenceModel(dataclasses.replace(net.config, mix_norm=True))
    net.train()
    with torch.no_grad():
        net(data)                                   # running statistics away from (0, 1)
    net.eval()
    m = HwSequenceModel.from_float(net, None)
    assert not m.config.mix_norm and all(b.mix_norm is None for b in m.blocks) and not m.training
    with pytest.raises(es.ConfigError, match="from_float"):
        HwSequenceModel(net.config, None)
    m.calibrate(data)
    m.eval()
    Y = es.targets.get("crossbar").compile(net, calibration=data, noise=0).run(data)
    with torch.no_grad():
        ref = net.forward_tokens(data)
    assert (Y.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_device_instances_are_seeded_and_faults_hurt(data):
    m = HwSequenceModel.from_float(tiny(), None)
    m.calibrate(data)
    T = es.targets.get("crossbar")
    a = T.compile(m, seed="1").run(data)
    b = T.compile(m, seed="1").run(data)
    c = T.compile(m, seed="2").run(data)
    ideal = T.compile(m, noise=0).run(data)
    assert torch.equal(a, b) and not torch.equal(a, c)
    broken = T.compile(m, seed="1", stuck_on_frac=0.3).run(data)
    assert (broken - ideal).abs().mean() > (a - ideal).abs().mean()
    drift = T.compile(m, seed="1", drift_time_s=1e6, drift_compensation=0).run(data)
    assert not torch.equal(drift, a)
    analog = T.compile(m, noise=0, state_mode="analog").run(data)
    assert (analog - ideal).abs().max() < 0.1 * (1 + ideal.abs().max())


def test_resources_and_cost(data):
    m = HwSequenceModel.from_float(tiny(H=6, N=8), None)
    m.calibrate(data)
    prog = es.targets.get("crossbar").compile(m, seed="0")
    r = prog.resources()
    # 6 channels of 9x9 blocks: 3 per 64x32 array -> 2 arrays per S4D layer; 4 linear arrays
    assert r["stages"]["s4d0"]["arrays"] == 2 and r["arrays"] == 2 * 2 + 4
    assert 0 < r["utilization"] <= 1
    c0 = prog.cost(tokens=30)
    prog.run(data)
    c = prog.cost(tokens=30)
    for cost in (c0, c):
        assert cost.energy_per_token_j > 0 and cost.latency_per_token_s > 0
        assert set(cost.breakdown) == {"crossbar", "adc", "dac", "digital"}
        assert cost.power_w == pytest.approx(cost.energy_per_token_j / cost.latency_per_token_s)
    assert c.breakdown["crossbar"] < c0.breakdown["crossbar"]   # measured voltages < worst case
    assert prog.cost(mode="pipelined").throughput_tokens_per_s > c.throughput_tokens_per_s
    with pytest.raises(ConfigError):
        prog.cost(mode="warp")
    with pytest.raises(ConfigError, match="array_rows"):
        es.targets.get("crossbar").compile(m, array_rows=0)
    # each constant names its source: the default device's, or the preset's that changed it
    assert c.assumptions["g_max_us"] == (225.0, "uS", "[Milo21]")
    other = es.targets.get("crossbar").compile(m, seed=0, g_max_us=300.0).cost(tokens=30)
    value, unit, source = other.assumptions["g_max_us"]
    assert value == 300.0 and source.startswith("set by the device preset or an override") and "[Milo21]" in source


# ---- training and checkpoints ------------------------------------------------------------------------
def test_hw_training_step_reaches_the_s4d_parameters(data):
    m = hw_wrap("default", weight_bits=2)(tiny())
    assert isinstance(m, HwSequenceModel) and m.training
    y = torch.randint(0, 4, (12,))
    loss = torch.nn.functional.cross_entropy(m(data), y)
    loss.backward()
    for p in (m.blocks[0].s4d.log_dt, m.blocks[0].s4d.A_imag, m.blocks[0].s4d.C, m.encoder.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # noise is injected in training: two forward passes differ
    with torch.no_grad():
        assert not torch.equal(m(data), m(data))
    assert set(m.state_dict()) == set(tiny().state_dict())


@pytest.mark.parametrize("dev", [dict(), dict(recurrence="digital", ssm_bits=12, state_dither=1)])
def test_save_load_and_compile_without_data(tmp_path, data, dev):
    m = HwSequenceModel.from_float(tiny(), load_device("default", weight_bits=2, **dev))
    m.calibrate(data)
    m.eval()
    save_hw(m, tmp_path / "m")
    loaded = es.load(tmp_path / "m")
    assert loaded.checkpoint_meta["hw"]["weight_bits"] == 2
    T = es.targets.get("crossbar")
    p1 = T.compile(m, seed="4")
    p2 = T.compile(loaded, seed="4")                  # ranges and precisions from the checkpoint
    assert p2.config.weight_bits == 2
    assert {k: getattr(p2.config, k) for k in dev} == dev
    a, b = p1.run(data), p2.run(data)
    # the same device instance; float32 round-off of the projection may flip a converter step
    assert (a - b).abs().mean() < 0.01 * a.abs().mean()


@needs_fsdd
def test_deploy_cli_trials_json(tmp_path, capsys):
    from edgessm.cli import main
    from edgessm.data import load_task
    X = load_task("fsdd-01", "train", limit=8).x
    m = HwSequenceModel.from_float(tiny(d_input=32, d_output=2, H=4, N=4, layers=1), None)
    m.calibrate(X)
    save_hw(m, tmp_path / "m", extra={"run": {"data": {"task": "fsdd-01"}}})
    rc = main([ "deploy", str(tmp_path / "m"), "--target", "crossbar", "--limit", "4", "--trials", "2",
               "--set", "write_noise_sigma_us=15", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target"] == "crossbar" and out["n"] == 4 and out["trials"] == 2
    assert set(out["accuracy"]) >= {"mean", "std"} and 0 <= out["accuracy"]["mean"] <= 1
    assert out["resources"]["arrays"] >= 1 and out["energy_per_token_j"] > 0
    rc = main(["deploy", str(tmp_path / "m"), "--target", "crossbar", "--limit", "2",
               "--set", "g_min_us=300"])
    assert rc == 2
    assert "inverted" in capsys.readouterr().err


@needs_fsdd
def test_cli_train_hw_reads_hw_table_and_saves_deployable(tmp_path, capsys):
    """`edgessm train CONFIG --hw crossbar`: the [hw] table sets the device fields, --hw-set
    overrides them, and the best checkpoint is the deployable (projected) form with "hw" metadata."""
    from edgessm.cli import main
    from edgessm.io import read_meta
    cfg = tmp_path / "hw.toml"
    cfg.write_text("""
[model]
preset = "neuromorphic"
d_model = 4
d_state = 4
n_layers = 1
[data]
task = "fsdd-01"
limit_train = 16
limit_val = 8
limit_test = 8
[train]
epochs = 1
batch_size = 8
threads = 1
[hw]
device = "default"
weight_bits = 2
ssm_bits = 6
""")
    rc = main(["train", str(cfg), "--hw", "crossbar", "--hw-set", "ssm_bits=5", "--out", str(tmp_path / "run"),
               "--no-progress", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= out["test_accuracy"] <= 1
    meta = read_meta(tmp_path / "run" / "best")
    assert meta["hw"]["weight_bits"] == 2 and meta["hw"]["ssm_bits"] == 5 and meta["hw"]["projected"]
    # a config with an [hw] table is not silently trained as a float model
    assert main(["train", str(cfg), "--out", str(tmp_path / "run2"), "--no-progress"]) == 2
    assert "--hw crossbar" in capsys.readouterr().err


def test_digital_recurrence_trains_by_fft_as_by_its_scan():
    """digital_train = 'fft': the training forward convolves with the quantized block's impulse
    response; where no state word saturates it is the scan without the word's rounding (24-bit
    words here: equal to 1e-9, gradients to 1e-4); evaluation still runs the scan."""
    torch.manual_seed(0)
    base = es.SequenceModel.from_preset("neuromorphic", d_input=3, d_output=4, d_model=6, d_state=8,
                                        n_layers=2, dt_min=0.01, dt_max=0.1).double()
    x = torch.randn(5, 60, 3, dtype=torch.float64)
    y = torch.randint(0, 4, (5,))
    dev = load_device("default", recurrence="digital", ssm_bits=12, noise=0, digital_state_bits=24)
    out, grads, ev = {}, {}, {}
    for mode in ("scan", "fft"):
        m = HwSequenceModel.from_float(base, dev.replace(digital_train=mode)).double()
        m.calibrate(3 * x)                           # state gains with room: no word saturates
        m.eval()
        with torch.no_grad():
            ev[mode] = m(x)
        m.train()
        o = m(x)
        torch.nn.functional.cross_entropy(o, y).backward()
        out[mode], grads[mode] = o.detach(), {n: p.grad for n, p in m.named_parameters()}
    assert (out["scan"] - out["fft"]).abs().max() < 1e-9
    for n, g in grads["scan"].items():
        assert (g - grads["fft"][n]).norm() <= 1e-4 * g.norm() + 1e-12, n
    assert torch.equal(ev["scan"], ev["fft"])        # evaluation: the scan in both


@needs_mnist
def test_shipped_smnist_crossbar_deploys_with_its_digital_recurrence(capsys):
    """smnist-crossbar carries its mapping: the S4D layers in the periphery, the linear layers on
    arrays of the default device (its figure over the full test set is in benchmarks/RESULTS.md)."""
    from edgessm.cli import main
    rc = main(["deploy", "smnist-crossbar", "--target", "crossbar", "--task", "smnist", "--limit", "24",
               "--threads", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    res = out["resources"]
    assert res["recurrence"] == "digital" and res["ssm_bits"] == 16 and res["weight_bits"] == 5
    assert res["stages"]["s4d0"]["arrays"] == 0 and res["arrays"] == 11
    assert out["accuracy"]["mean"] >= 0.9


@pytest.mark.parametrize("scan", ["native", "loop"])
def test_last_token_forward_is_the_last_position_of_the_whole_forward(data, scan):
    """With a last-token readout the last block runs its output column, activation and mixing on
    the last token only: in evaluation the bits of the whole forward's last position; in training
    that block's ranges track the last token, the other blocks' as in the whole forward."""
    m = HwSequenceModel.from_float(tiny(), load_device("default", weight_bits=2, noise=0))
    m.scan = scan
    m.calibrate(data)
    m.eval()
    with torch.no_grad():
        whole = m._mvm(m.features(data)[:, -1], m.decoder, "r_dec", "fs_dec")
        assert m.features(data, last=True).shape == (12, 1, 6)
        assert torch.equal(m(data), whole)
    a, b = copy.deepcopy(m).train(), copy.deepcopy(m).train()
    with torch.no_grad():
        a.features(data, last=True)
        b.features(data)
    for k in ("r_enc", "r_s4d"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert torch.equal(a.fs_s4d[0], b.fs_s4d[0]) and torch.equal(a.r_mix[0], b.r_mix[0])
    assert torch.equal(a.fs_mix[0], b.fs_mix[0])
    assert a.r_mix[1] < b.r_mix[1]                 # the peak of one token, not of all 30
    assert (a.fs_s4d[1, :, -1] <= b.fs_s4d[1, :, -1]).all()


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_array_quantizers_give_the_levels_and_scales_of_the_torch_quantizers(bits):
    """quant_linear (numpy, float64 statistics) gives the levels and column scales of the weight
    quantizer of quantize_weight (TWN ternary for 2 bits, uniform with a 16-bit descale else);
    quant_block (numpy) the bits of the torch ops of its definition."""
    from edgessm.quant.quantizers import quantize_weight
    from edgessm.targets.crossbar.hw import quant_block, quant_linear, weight_spec
    g = torch.Generator().manual_seed(bits)
    W = torch.randn(24, 20, generator=g) * torch.logspace(-3, 1, 24).unsqueeze(-1)
    W[3] = 0                                              # an all-zero row
    q, scale, mask = quant_linear(W, bits, with_mask=True)
    ref = quantize_weight(W, weight_spec(bits))
    qmax = weight_spec(bits).qmax
    assert torch.equal(q * qmax, ref.m.float())
    assert torch.equal(scale, (ref.g.double() * torch.exp2(ref.f.double()) * qmax).float())
    assert (mask is None) == (bits == 2)
    M = torch.randn(5, 9, 9, generator=g) * 0.4
    M[1, 2] = 0
    qb, s = quant_block(M, bits + 4)
    n, qm = 4, (1 << (bits + 3)) - 1
    s0 = M.abs().amax(-1).clamp(min=1e-12)
    pair = torch.maximum(s0[:, :n], s0[:, n:2 * n])
    s0 = torch.cat([pair, pair, s0[:, 2 * n:]], -1)
    assert torch.equal(s, s0)
    assert torch.equal(qb, torch.floor(torch.clamp(M / s0.unsqueeze(-1), -1, 1) * qm + 0.5) / qm)


@pytest.mark.parametrize("learn_B,fixed", [(False, 0.0), (True, 0.0), (False, 0.7)])
def test_zoh_block_matrix_node_gives_the_torch_formula_and_its_gradients(learn_B, fixed):
    """block_matrix for zoh (one numpy node, its backward written out) against the same formula
    by torch ops under autograd, in float64: the matrix and every parameter's gradient, with a
    state gain held at its floor (rho below the cap) and one above it."""
    from edgessm.targets.crossbar.hw import _block_matrix_torch, block_matrix
    torch.manual_seed(3)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=3, d_output=4, d_model=6, d_state=8, n_layers=1,
                                     learn_B=learn_B).double()
    s4d = m.blocks[0].s4d
    rho = torch.rand(6, 4, dtype=torch.float64) + 0.5
    rho[0, 0] = 1e-9
    a, b = _block_matrix_torch(s4d, rho, fixed), block_matrix(s4d, rho, fixed)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-13)
    gM = torch.randn_like(a)
    ps = [p for p in s4d.parameters() if p.requires_grad]
    ga = torch.autograd.grad((a * gM).sum(), ps)
    gb = torch.autograd.grad((b * gM).sum(), ps)
    for p, x, y in zip(ps, ga, gb):
        assert torch.allclose(x, y, rtol=1e-10, atol=1e-12 * float(x.abs().max())), p.shape
