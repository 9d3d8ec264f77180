"""A described network on Loihi 2 (targets/loihi2/network.py): its work equals a hand count, its
mapping and cost follow the same rules as the compiled programs, and bad descriptions are refused."""
from __future__ import annotations

import pytest

from edgessm.errors import ConfigError
from edgessm.targets.loihi2 import CONSTANTS, SECOND_POINT, Loihi2Config
from edgessm.targets.loihi2.constants import REFERENCES
from edgessm.targets.loihi2.network import (DenseLayer, DescribedNetwork, compare_second_point,
                                            cost_network, dense_chain, from_counts)

AE = [256, 128, 64, 32, 64, 128, 256]


def test_dense_chain_work_equals_hand_count():
    net = dense_chain(AE, activity=0.25)
    w = net.work()
    # synapses: 256*128 + 128*64 + 64*32 + 32*64 + 64*128 + 128*256
    assert net.synapses == 32768 + 8192 + 2048 + 2048 + 8192 + 32768 == 86016
    assert w["synops"] == 0.25 * 86016 == 21504
    assert w["neuron_updates"] == net.neurons == 128 + 64 + 32 + 64 + 128 + 256 == 672
    # graded spikes received by the six layers (a quarter of their inputs) + a quarter of the 256 outputs
    assert w["messages"] == 0.25 * (256 + 128 + 64 + 32 + 64 + 128) + 0.25 * 256 == 232
    assert w["layers"]["dense0"] == {"synops": 0.25 * 256 * 128, "neurons": 128, "messages_in": 64}
    assert [p["from"] for p in net.populations()] == ["input", "dense0", "dense1", "dense2", "dense3", "dense4"]


def test_per_layer_activity_and_output_activity():
    net = dense_chain([4, 3, 2], activity=[1.0, 0.5], output_activity=0.0)
    w = net.work()
    assert w["synops"] == 4 * 3 + 0.5 * 3 * 2
    assert w["messages"] == 4 + 1.5 + 0.0
    assert dense_chain([4, 3, 2], activity=[1.0, 0.5]).work()["messages_out"] == 1.0


def test_mapping_and_cost_follow_the_model_rules():
    net = dense_chain(AE, activity=0.25)
    c = cost_network(net, steps=10)
    # 8192 synapses per core at most: the 32768-synapse layers take 4 cores, the others 1
    assert c["layer_cores"] == {"dense0": 4, "dense1": 1, "dense2": 1, "dense3": 1, "dense4": 1, "dense5": 4}
    assert c["cores"] == 12 and c["chips"] == 1 and c["depth_steps"] == 6
    e = c["dynamic_per_step_j"]
    assert e["synaptic"] == pytest.approx(21504 * CONSTANTS["energy_synop_j"][0])
    assert e["neurons"] == pytest.approx(672 * CONSTANTS["energy_neuron_update_j"][0])
    assert e["messages"] == pytest.approx(232 * CONSTANTS["energy_spike_in_tile_j"][0])
    inf = c["per_inference"]
    assert inf["time_s"] == pytest.approx(10 * c["time_per_step_s"])
    assert inf["total_energy_j"] == pytest.approx(10 * sum(e.values()) + 0.10 * inf["time_s"])
    assert c["fall_through_s"] == pytest.approx(6 * c["time_per_step_s"])
    # a layer on one core is busy for its synaptic ops and neuron updates: 64 -> 128 on 1 core
    busy = c["timing"]["busy_s"]
    assert busy["dense4"] == pytest.approx(0.25 * 64 * 128 * 3.5e-9 + 128 * 8.4e-9)
    # a changed constant changes the cost (nothing is fixed inside the function)
    slow = cost_network(net, Loihi2Config().replace(time_synop_s=7e-9), steps=10)
    assert slow["time_per_step_s"] > c["time_per_step_s"]


def test_from_counts_round_trip():
    net, steps = from_counts(AE, 3.0e5, 1.0e4)
    assert steps == pytest.approx(1.0e4 / 672)
    w = net.work()
    assert steps * w["synops"] == pytest.approx(3.0e5)
    assert steps * w["neuron_updates"] == pytest.approx(1.0e4)
    with pytest.raises(ConfigError, match="more than every input"):
        from_counts([2, 2], 100.0, 2.0)


@pytest.mark.parametrize("call,words", [
    (lambda: dense_chain([256]), "at least two sizes"),
    (lambda: dense_chain([256, 0]), "sizes\\[1\\] must be a positive integer"),
    (lambda: dense_chain([4, 2.5]), "positive integer"),
    (lambda: dense_chain([4, 3], activity=1.5), "activity must be in \\[0, 1\\]"),
    (lambda: dense_chain([4, 3], activity="high"), "must be a number"),
    (lambda: dense_chain([4, 3, 2], activity=[0.5]), "1 entries for 2 layers"),
    (lambda: DescribedNetwork((DenseLayer("a", 4, 3), DenseLayer("b", 2, 1))), "takes 2 inputs"),
    (lambda: DescribedNetwork((DenseLayer("a", 4, 4), DenseLayer("a", 4, 4))), "unique"),
    (lambda: DescribedNetwork(()), "at least one DenseLayer"),
    (lambda: DenseLayer("input", 4, 3), "other than 'input'"),
    (lambda: cost_network(dense_chain([4, 3]), steps=0), "positive number"),
    (lambda: cost_network([4, 3]), "takes a DescribedNetwork"),
    (lambda: from_counts(AE, -1, 1e4), "positive number"),
])
def test_bad_descriptions_are_refused(call, words):
    with pytest.raises(ConfigError, match=words):
        call()


def test_too_big_for_the_chips_is_refused():
    with pytest.raises(ConfigError, match="max_chips"):
        cost_network(dense_chain([8192, 8192, 8192]))


def test_second_point_is_cited_and_compared():
    assert SECOND_POINT["source"] in REFERENCES
    r = compare_second_point()
    rows = {x["what"]: x for x in r["rows"]}
    assert rows["neuro cores"]["published"] == SECOND_POINT["cores"]
    assert rows["latency per inference"]["published"] == SECOND_POINT["latency_s"]
    assert rows["synaptic ops per inference"]["ratio"] == pytest.approx(1.0)   # by construction
    assert all(x["note"] for x in r["rows"])


def test_numpy_sizes_are_accepted():
    np = pytest.importorskip("numpy")
    net = dense_chain(np.array(AE))
    assert net.synapses == 86016 and isinstance(net.layers[0].n_in, int)
