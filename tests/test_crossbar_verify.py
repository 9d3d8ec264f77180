"""Crossbar write-verify programming (verify_tolerance_us) and redundancy (devices_per_weight):
validation, the error bound in the simulator, the cost counted, the training noise."""
from __future__ import annotations

import math

import pytest
import torch

import edgessm as es
from edgessm.errors import ConfigError
from edgessm.targets.crossbar import HwSequenceModel, parse_options
from edgessm.targets.crossbar.device import program_devices
from edgessm.targets.crossbar.hw import write_noise

torch.set_num_threads(1)


def tiny(H=6, N=8, seed=0):
    torch.manual_seed(seed)
    return es.SequenceModel.from_preset("neuromorphic", d_input=3, d_output=4, d_model=H, d_state=N,
                                        n_layers=2)


@pytest.fixture(scope="module")
def hwm():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 30, 3, generator=g)
    m = HwSequenceModel.from_float(tiny(), None)
    m.calibrate(x)
    m.eval()
    return m, x


@pytest.mark.parametrize("kw,msg", [
    (dict(verify_max_attempts=0), "verify_max_attempts"),
    (dict(verify_max_attempts=-3), "verify_max_attempts"),
    (dict(verify_tolerance_us=-0.5), "verify_tolerance_us"),
    (dict(verify_tolerance_us=float("inf")), "verify_tolerance_us"),
    (dict(verify_tolerance_us=float("nan")), "verify_tolerance_us"),
    (dict(devices_per_weight=0), "devices_per_weight"),
    (dict(devices_per_weight=40), "devices_per_weight = 40 needs 80 columns"),
])
def test_bad_values_are_rejected(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_options(kw)


def test_bad_values_change_nothing(hwm):
    m, _ = hwm
    before = m.hw
    with pytest.raises(ConfigError):
        es.targets.get("crossbar").compile(m, verify_max_attempts="0")
    assert m.hw is before and m.hw.verify_max_attempts == 20


def test_program_devices_bound_holds_and_counts_attempts():
    cfg = parse_options({"verify_tolerance_us": 1.0, "read_noise_rel": 0.0, "write_noise_slope": 0.0,
                         "write_noise_sigma_us": 5.0, "verify_max_attempts": 200})
    g0 = torch.full((20000,), 100.0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(g0.shape, generator=gen, dtype=g0.dtype)
    g, att, ok = program_devices(g0, cfg, e, gen)
    # P(|N(0, 5)| <= 1) = 0.159: about 6.3 programmings per device, every device converged in 200 (0.84^200 ~ 1e-15)
    assert bool(ok.all())
    assert (g[ok] - g0[ok]).abs().max() <= 1.0
    assert att.min() == 1 and att.max() <= 200
    assert att.double().mean() == pytest.approx(1 / math.erf(1 / (5 * math.sqrt(2))), rel=0.05)
    # devices that never converge keep their last value and are reported
    cfg2 = cfg.replace(verify_max_attempts=2, verify_tolerance_us=0.01)
    g2, att2, ok2 = program_devices(g0, cfg2, e, gen)
    assert att2.max() == 2 and (~ok2).sum() > 0.9 * len(g0)
    # no band: one programming, the base error exactly
    g3, att3, ok3 = program_devices(g0, cfg.replace(verify_tolerance_us=0.0), e, gen)
    assert torch.equal(g3, g0 + 5.0 * e) and bool((att3 == 1).all()) and bool(ok3.all())


def test_program_devices_draws_as_the_whole_tensor_loop():
    """The retries are computed on the devices still outside the band only; the numbers are
    those of the loop over the whole tensor (every draw made for every device)."""
    cfg = parse_options({"verify_tolerance_us": 0.5, "verify_max_attempts": 4})
    g0 = 50 + 175 * torch.rand(4, 9, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    e = torch.randn(g0.shape, generator=torch.Generator().manual_seed(2), dtype=g0.dtype)
    gen = torch.Generator().manual_seed(3)

    def outside(g):
        rd = g + cfg.read_noise_rel * g.abs() * torch.randn(g.shape, generator=gen, dtype=g.dtype)
        return (rd - g0).abs() > cfg.verify_tolerance_us
    g = g0 + cfg.write_sigma_us(g0) * e
    att = torch.ones_like(g0, dtype=torch.int32)
    bad = outside(g)
    for _ in range(cfg.verify_max_attempts - 1):
        if not bool(bad.any()):
            break
        fresh = g0 + cfg.write_sigma_us(g0) * torch.randn(g.shape, generator=gen, dtype=g.dtype)
        g = torch.where(bad, fresh, g)
        att = att + bad.to(att.dtype)
        bad = bad & outside(g)
    gen2 = torch.Generator().manual_seed(3)
    g2, att2, ok2 = program_devices(g0, cfg, e, gen2)
    assert att.max() > 2 and bool(bad.any())
    assert torch.equal(g2, g) and torch.equal(att2, att) and torch.equal(ok2, ~bad)
    assert torch.equal(torch.randn(5, generator=gen2), torch.randn(5, generator=gen))   # as many draws


def _errors(prog):
    cfg = prog.config
    win = cfg.g_max_us - cfg.g_min_us
    out = []
    for st in prog.stages.values():
        q = st.q_target.double()
        gp0 = cfg.g_min_us + q.clamp(min=0) * win
        gm0 = cfg.g_min_us - q.clamp(max=0) * win
        out.append((st.g_plus_s * 1e6 - gp0).flatten())
        out.append((st.g_minus_s * 1e6 - gm0).flatten())
    return torch.cat(out)


def test_simulator_bound_holds_and_costs_are_counted(hwm):
    m, x = hwm
    T = es.targets.get("crossbar")
    common = dict(seed="3", read_noise_rel=0, stuck_on_frac=0, stuck_off_frac=0, write_noise_sigma_us=8.0)
    plain = T.compile(m, **common)
    tight = T.compile(m, verify_tolerance_us=2.0, verify_max_attempts=200, **common)
    ep, et = _errors(plain), _errors(tight)
    assert ep.abs().max() > 5.0                              # the unbounded error is large
    r = tight.resources()
    assert r["verify_unconverged"] == 0
    assert et.abs().max() <= 2.0 + 1e-9                     # the band holds on every device
    # cost: programmings counted per device, energy = pulses x pulse energy
    r0 = plain.resources()
    assert r0["programming_pulses"] == r0["devices"] * 100
    assert r0["programming_energy_j"] == pytest.approx(r0["devices"] * 100 * 1e-11)
    assert r["programming_pulses"] > 4 * r0["programming_pulses"]      # P(|N(0,8)| < 2) = 0.2
    assert r["programming_energy_j"] == pytest.approx(r["programming_pulses"] * 1e-11)
    # closer to the ideal network than without verify
    ideal = T.compile(m, noise=0).run(x)
    assert (tight.run(x) - ideal).abs().mean() < 0.5 * (plain.run(x) - ideal).abs().mean()
    # the band does not change the rest of the instance: a band wider than any error is the plain instance
    wide = T.compile(m, verify_tolerance_us=1e6, **common)
    assert torch.equal(_errors(wide), ep)


def test_stuck_devices_fail_the_verify(hwm):
    m, _ = hwm
    T = es.targets.get("crossbar")
    p = T.compile(m, seed="1", verify_tolerance_us=2.0, stuck_on_frac=0.05, stuck_off_frac=0.0,
                  verify_max_attempts=40, read_noise_rel=0)
    r = p.resources()
    devices = r["devices"]
    # ~5% stuck at G_max: those with a target below G_max - 2 uS never converge and use all 40
    # attempts; a working device converges in 40 (P(|N(0, 4.33)| < 2) = 0.36, 0.64^40 ~ 2e-8)
    assert 0.04 * devices < r["verify_unconverged"] < 0.06 * devices
    assert r["programming_pulses"] >= 100 * (devices + 39 * r["verify_unconverged"])


def test_redundancy_averages_pairs_and_costs_area(hwm):
    m, x = hwm
    T = es.targets.get("crossbar")
    common = dict(read_noise_rel=0, stuck_on_frac=0, stuck_off_frac=0, write_noise_sigma_us=8.0,
                  write_noise_slope=0.0, array_cols=128)
    ideal = T.compile(m, noise=0)
    one = [T.compile(m, seed=str(s), **common) for s in range(3)]
    four = [T.compile(m, seed=str(s), devices_per_weight=4, **common) for s in range(3)]
    r1, r4 = one[0].resources(), four[0].resources()
    assert r4["arrays"] > r1["arrays"] and r4["devices_per_weight"] == 4
    assert r4["programming_pulses"] == r4["devices"] * 100
    # the weight error of the average of 4 pairs: sigma * sqrt(2) / sqrt(4) / window
    win = 175.0
    for progs, k in ((one, 1), (four, 4)):
        d = torch.cat([(st.q_eff.double() - st.q_target.double()).flatten()
                       for p in progs for st in p.stages.values()])
        assert d.std().item() == pytest.approx(8.0 * math.sqrt(2 / k) / win, rel=0.05)
    ref = ideal.run(x)
    e1 = sum((p.run(x) - ref).abs().mean() for p in one)
    e4 = sum((p.run(x) - ref).abs().mean() for p in four)
    assert e4 < 0.75 * e1
    # worst-case read energy (every used row driven, before any run) counts every device of a driven
    # row: the S4D blocks spread over 6 arrays instead of 1, the same rows driven, 6x the conductance
    f1, f4 = T.compile(m, seed="0", **common), T.compile(m, seed="0", devices_per_weight=4, **common)
    assert r4["devices"] > 2 * r1["devices"]
    assert f4.cost().breakdown["crossbar"] >= 0.98 * f1.cost().breakdown["crossbar"]
    # k = 1 is the unchanged instance
    same = T.compile(m, seed="0", devices_per_weight=1, **common)
    assert torch.equal(same.run(x), one[0].run(x))


def test_training_noise_follows_the_device():
    q = torch.zeros(200000)
    base = parse_options({"write_noise_slope": 0.0, "write_noise_sigma_us": 7.0, "read_noise_rel": 0.0})
    g = torch.Generator().manual_seed(0)
    e1 = write_noise(q, base, g) - q
    e4 = write_noise(q, base.replace(devices_per_weight=4), g) - q
    ev = write_noise(q, base.replace(verify_tolerance_us=1.0, verify_max_attempts=400), g) - q
    win = 175.0
    assert e1.std().item() == pytest.approx(7.0 * math.sqrt(2) / win, rel=0.02)
    assert e4.std().item() == pytest.approx(7.0 * math.sqrt(2) / 2 / win, rel=0.02)
    assert ev.abs().max().item() <= 2 * 1.0 / win + 1e-6     # two devices, each within the band


def test_stuck_compensation_needs_verify_and_repairs_pairs(hwm):
    m, x = hwm
    with pytest.raises(ConfigError, match="needs write-verify"):
        parse_options({"stuck_compensation": 1})
    with pytest.raises(ConfigError, match="stuck_compensation = 2"):
        parse_options({"stuck_compensation": 2, "verify_tolerance_us": 1.0})
    T = es.targets.get("crossbar")
    common = dict(seed="4", verify_tolerance_us=1.0, verify_max_attempts=100, read_noise_rel=0,
                  stuck_on_frac=0.05, stuck_off_frac=0.05)
    plain = T.compile(m, **common)
    fixed = T.compile(m, stuck_compensation=1, **common)
    rp, rf = plain.resources(), fixed.resources()
    assert rp["stuck_compensated"] == 0 and rf["stuck_compensated"] > 0
    assert rf["programming_pulses"] > rp["programming_pulses"]           # the partners' re-programming
    cfg = fixed.config
    for name in plain.stages:
        a, b = plain.stages[name], fixed.stages[name]
        q = a.q_target.double()
        ea = (a.q_eff.double() - q).abs()
        eb = (b.q_eff.double() - q).abs()
        # the same stuck devices (same instance draws); no pair gets worse, and a pair with one stuck
        # device whose weight the window can still make is within two bands of its weight
        assert torch.equal(a.g_plus_s == cfg.g_max_us * 1e-6, b.g_plus_s == cfg.g_max_us * 1e-6)
        assert (eb <= ea + 2 * 1.0 / 175 + 1e-6).all()
        assert eb.max() < ea.max() or ea.max() < 0.05
    ideal = T.compile(m, noise=0).run(x)
    assert (fixed.run(x) - ideal).abs().mean() < (plain.run(x) - ideal).abs().mean()
