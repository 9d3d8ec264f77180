"""The loihi2 target: calibration point, mapping limits, unmappable layers, cost model."""
from __future__ import annotations

import pytest
import torch

import edgessm as es
from edgessm.targets.loihi2 import CALIBRATION_POINT, CONSTANTS, table_markdown

torch.set_num_threads(1)


def model(H=16, N=8, layers=2, d_in=1, preset="neuromorphic", seed=0, **kw):
    torch.manual_seed(seed)
    return es.SequenceModel.from_preset(preset, d_input=d_in, d_output=10, d_model=H, d_state=N,
                                        n_layers=layers, **kw)


def compile_l2(m, spec="loihi2", X=None, **opts):
    X = torch.randn(4, 16, m.config.d_input) if X is None else X
    return es.targets.get("loihi2").compile(m, spec, calibration=X, **opts)


def test_calibration_point_within_2x():
    """[M24]: 1-layer S4D, d_model 128, 4 states, 3 inputs: ~31 us per step, ~0.12 W, 6 cores."""
    c = CALIBRATION_POINT
    m = model(H=c["d_model"], N=c["d_state"], layers=c["n_layers"], d_in=c["d_input"])
    p = compile_l2(m)
    r = p.resources()
    assert r["cores"] == c["cores"] and r["chips"] == 1
    cost = p.cost(mode="pipelined")          # one token per time step
    t_step = cost.assumptions["time_per_step_s"]
    assert c["time_per_step_s"] / 2 <= t_step <= 2 * c["time_per_step_s"], t_step
    assert c["power_w"] / 2 <= cost.power_w <= 2 * c["power_w"], cost.power_w
    tok = p.cost(mode="token")
    assert c["power_w"] / 2 <= tok.power_w <= 2 * c["power_w"]


def test_token_vs_pipelined_and_breakdown():
    p = compile_l2(model())
    tok, pipe = p.cost(mode="token"), p.cost(mode="pipelined")
    depth = p.resources()["depth_steps"]
    assert depth == 2 + 3 * 2
    assert pipe.throughput_tokens_per_s == pytest.approx(depth * tok.throughput_tokens_per_s)
    assert tok.latency_per_token_s == pytest.approx(pipe.latency_per_token_s)
    for c in (tok, pipe):
        assert sum(c.breakdown.values()) == pytest.approx(c.energy_per_token_j)
        assert c.power_w == pytest.approx(c.energy_per_token_j * c.throughput_tokens_per_s)
        for k, v in c.assumptions.items():
            if k in CONSTANTS:
                assert isinstance(v, tuple) and v[2], k          # value, unit, source
    with pytest.raises(es.ConfigError):
        p.cost(mode="batched")


def test_counted_work_lowers_cost_with_sparsity():
    p = compile_l2(model())
    dense = p.cost()
    p.run(torch.randn(4, 30, 1))
    counted = p.cost()
    assert "counted" in counted.assumptions["work"]
    assert counted.breakdown["synaptic"] <= dense.breakdown["synaptic"]


def test_every_constant_has_a_source():
    for k, (v, unit, src, note) in CONSTANTS.items():
        assert src and unit, k
    assert CONSTANTS["neuro_cores_per_chip"][0] == 128 and CONSTANTS["embedded_cores_per_chip"][0] == 6
    assert "| energy_synop_j |" in table_markdown()


@pytest.mark.parametrize("kw,words", [
    (dict(preset="standard"), "blocks.0.norm (LayerNorm)"),
    (dict(norm="batch"), "blocks.0.norm (BatchNorm1d)"),
    (dict(activation="gelu"), "blocks.0.act (GELU)"),
    (dict(mixing="glu"), "blocks.0.mix (GLU mixing)"),
])
def test_unmappable_layers_name_the_layer_and_why(kw, words):
    preset = kw.pop("preset", "neuromorphic")
    m = model(layers=1, preset=preset, **kw)
    with pytest.raises(es.ConfigError) as e:
        compile_l2(m)
    assert words in str(e.value) and "loihi2 cannot map" in str(e.value)


def test_network_that_does_not_fit_says_why():
    m = model(H=1024, N=4, layers=2)
    with pytest.raises(es.ConfigError, match=r"needs \d+ neuro cores .* max_chips = 1"):
        compile_l2(m, X=torch.randn(1, 2, 1))
    p = compile_l2(m, X=torch.randn(1, 2, 1), max_chips="8")
    assert p.resources()["chips"] > 1
    with pytest.raises(es.ConfigError, match="more than a core's memory"):
        compile_l2(model(H=64, N=4, layers=1), core_memory_bytes="40")


def test_spec_bit_widths_out_of_range_for_loihi2():
    spec = es.quant.QuantSpec.from_dict({"mixing": {"bits": 12}})
    with pytest.raises(es.ConfigError, match="at most 8 bits"):
        compile_l2(model(), spec)
    spec = es.quant.QuantSpec.from_dict({"state": {"bits": 32}, "activations": {"bits": 24}})
    with pytest.raises(es.ConfigError, match="max_state_bits"):
        compile_l2(model(), spec)
    assert compile_l2(model(), spec, max_state_bits="32").resources()["cores"] > 0


def test_set_overrides_and_unknown_field():
    p = compile_l2(model(), energy_synop_j="1e-12", sigma_delta_threshold="0")
    assert p.config.energy_synop_j == 1e-12 and p.config.sigma_delta_threshold == 0
    with pytest.raises(es.ConfigError, match="unknown option 'warp_drive'"):
        compile_l2(model(), warp_drive="1")
    for k in ("mesh_rows", "embedded_cores_per_chip"):       # reference-only constants: not options
        assert k in CONSTANTS
        with pytest.raises(es.ConfigError, match=f"unknown option '{k}'"):
            compile_l2(model(), **{k: "4"})


def test_loihi2_is_bit_exact_and_counts():
    m = model(seed=3)
    X = torch.randn(6, 40, 1)
    p = compile_l2(m, X=X)
    assert p.check(X)["mismatches"] == 0
    st = p.stats()
    assert st["stream_tokens"] == 6 * 40 and 0 < st["spike_sparsity"] < 1


def test_residual_synapses_and_messages_are_charged_where_they_land():
    """A residual connection: the block input's spikes also go to the mixing population (one
    message and one synapse each); the work moves there from the S4D state population, and the
    totals equal the engine's counts."""
    torch.manual_seed(1)
    X = torch.randn(4, 30, 1)
    res = compile_l2(model(seed=2, residual=True, mix_norm=True), X=X)
    plain = compile_l2(model(seed=2), X=X)
    pops = {q["name"]: q for q in res.resources()["populations"]}
    assert pops["mixing0"]["synapses"] == plain.resources()["populations"][3]["synapses"] + 16
    assert res.mapping["populations"][3]["res_from"] == "encoder"
    res.reset_stats()
    res.run(X)
    st, w = res.stats(), res.work()["populations"]
    enc_msgs = st["messages_per_token"]["encoder"]
    assert w["mixing0"]["res_messages_in"] == pytest.approx(enc_msgs) and enc_msgs > 0
    assert w["mixing0"]["synops"] == pytest.approx(st["synops_per_token"]["s4d0"] + enc_msgs)
    assert w["s4d0.state"]["synops"] == pytest.approx(st["synops_per_token"]["encoder"] - enc_msgs)
    assert sum(v["synops"] for v in w.values()) == pytest.approx(sum(st["synops_per_token"].values()))
    e_res = res.cost(mode="pipelined").breakdown
    assert e_res["messages"] > 0 and "res_messages_in" not in plain.work()["populations"]["mixing0"]


def test_timing_terms_add_up_and_match_cost():
    p = compile_l2(model())
    tm = p.timing()
    parts = tm["busy_max_s"] + tm["barrier_sync_s"] + tm["hops_s"] + tm["spike_s"]
    assert tm["time_per_step_s"] == pytest.approx(parts)
    assert tm["busy_max_s"] == max(tm["busy_s"].values())
    assert set(tm["busy_s"]) == {q["name"] for q in p.resources()["populations"]}
    assert tm["fall_through_s"] == pytest.approx(tm["depth_steps"] * tm["time_per_step_s"])
    tok, pipe = p.cost(mode="token"), p.cost(mode="pipelined")
    assert pipe.throughput_tokens_per_s == pytest.approx(1 / tm["time_per_step_s"])
    assert tok.latency_per_token_s == pytest.approx(tm["fall_through_s"])
    # streaming charges one step of static power per token, one token at a time D steps
    assert tok.breakdown["static"] == pytest.approx(tm["depth_steps"] * pipe.breakdown["static"])


def test_every_constant_names_a_listed_source():
    import re
    from edgessm.targets.loihi2.constants import REFERENCES
    for k, (_, _, src, _) in CONSTANTS.items():
        keys = re.findall(r"\[\w+\]", src)
        assert keys or src == "assumption", k
        assert all(key in REFERENCES for key in keys), (k, src)
