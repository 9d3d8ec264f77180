"""Every Loihi 2 constant the resource and cost model uses, with its source.

Per-operation energies and times are Loihi (1)'s measured figures (Davies et al. 2018):
Intel has not published per-operation figures for Loihi 2 (Intel 4 process), so these are
an upper bound on Loihi 2's dynamic energy and time per operation (a second published
measurement, SECOND_POINT, measured 5x more dynamic energy per inference at the board than
these figures give for its counted work, and a 2.5x shorter time than they give; its boundary
includes the embedded cores and I/O: benchmarks/loihi2_second_point.py). Limits marked
"assumption" are choices of this model, named so they can be changed with
``deploy --set KEY=VALUE``.

Sources: :data:`REFERENCES` (key: citation), the keys in brackets below.
"""
from __future__ import annotations

# key: citation. Every constant below names one of these, or says "assumption".
REFERENCES = {
    "[D18]": 'M. Davies et al., "Loihi: A Neuromorphic Manycore Processor with On-Chip Learning", '
             'IEEE Micro 38(1):82-99, 2018. Table 1 ("Loihi energy and performance measurements", '
             '14 nm, nominal voltage)',
    "[ITB]": 'Intel Labs, "Taking Neuromorphic Computing to the Next Level with Loihi 2", Technology '
             'Brief, 2021 (128 neuro cores, 6 embedded x86 Lakemont cores, up to 1M neurons and 120M '
             'synapses per chip, graded spikes up to 32 bit); the same figures on open-neuromorphic.org, '
             '"Loihi 2 - Intel"',
    "[FBH]": '"Intel\'s new Loihi-2 chip uses 1 million neurons", fbhtechinfo.com, 2021, reporting Intel\'s '
             'announcement: 128 neuro cores in an 8 x 16 mesh, 128 KB of local SRAM per core (flexibly '
             'partitioned). (Intel\'s brief quotes a larger per-core memory; we keep the smaller figure, '
             'which is conservative for fitting.)',
    "[M24]": 'S. M. Meyer et al., "A Diagonal Structured State Space Model on Loihi 2 for Efficient '
             'Streaming Sequence Processing", arXiv:2409.15022, 2024: 8-bit weights, 24-bit neuron states '
             'and graded spikes, 16-bit descale factors; CALIBRATION_POINT below',
    "[B2L]": 'brian2-loihi (PyPI) documentation: Loihi neuron decay constants are 12-bit (decay_v, decay_I '
             'in 0..4096), i.e. neuron parameters of limited width',
    "[A26]": '"Low-Power, Neuromorphic, Acoustic Anomaly Detection for Persistent Machine Monitoring" '
             '(Los Alamos National Laboratory, AeroVironment, University of New Mexico, AFRL), arXiv:2608.18341, '
             'LA-UR-26-26527, 2026: Table 2 (per-inference latency, power and energy, batch 1, 1M measured '
             'inferences, Keysight N6705C analyzer and on-board probes) and the activity/memory profile. '
             'Read from the summary of the paper in the public wiki Krebbet/wiki-kit, '
             'wiki/chips/loihi2-persistent-monitoring.md (commit 6be4a1b); the paper itself was not in the '
             'sources searched. SECOND_POINT below',
    "[N26]": 'Nesbit et al., "All On-Board: Fully On-Chip Neuromorphic Q-Learning with Embedded CartPole '
             'Simulation", arXiv:2609.32317, 2026, Table II (Loihi 2 Oheo Gulch board, N3B3): board power 1.80 W '
             'of which 1.78 W static; neuro cores alone 0.25 W; the x86 cores 1.56 W. Read from the summary in '
             'Krebbet/wiki-kit, wiki/chips/loihi2-onchip-q-learning.md (commit b0b1321)',
}

# name: (value, unit, source, note)
CONSTANTS: dict[str, tuple[float, str, str, str]] = {
    # ---- chip organisation ----------------------------------------------------------------
    "neuro_cores_per_chip": (128, "cores", "[ITB], [FBH]", "asynchronous neuro cores per Loihi 2 chip"),
    "embedded_cores_per_chip": (6, "cores", "[ITB]", "x86 Lakemont cores (I/O, management); not used for neurons"),
    "mesh_cols": (16, "cores", "[FBH]", "neuro cores form an 8 x 16 mesh"),
    "mesh_rows": (8, "cores", "[FBH]", ""),
    "max_neurons_per_core": (8192, "neurons", "[ITB]", "1M neurons per chip / 128 cores"),
    "core_memory_bytes": (131072, "B", "[FBH]", "local SRAM per neuro core, shared by synapses and neuron state"),
    "max_synapses_per_chip": (120_000_000, "synapses", "[ITB]", ""),
    "max_graded_spike_bits": (24, "bit", "[M24]; [ITB] allows up to 32",
                              "graded-spike payload of the published S4D system"),
    "max_state_bits": (24, "bit", "[M24]", "neuron state width of the published S4D neuron model"),
    "max_weight_bits": (8, "bit", "[M24]", "synaptic weight width of the published system"),
    "neuron_state_bytes": (8, "B/neuron", "assumption",
                           "per-neuron state + parameters in core memory (24-bit state, 16-bit parameters)"),
    "max_synops_per_core": (8192, "synops/step", "assumption",
                            "compiler load-balancing cap: a population is split over more cores when one "
                            "core would receive more synaptic ops per step (not a hardware limit); chosen "
                            "so the calibration network maps to the 6 cores reported in [M24]"),
    # ---- per-operation energy and time ----------------------------------------------------
    "energy_synop_j": (23.6e-12, "J", "[D18] Table 1", "energy per synaptic spike op (min)"),
    "time_synop_s": (3.5e-9, "s", "[D18] Table 1", "time per synaptic spike op (max)"),
    "energy_neuron_update_j": (81e-12, "J", "[D18] Table 1", "energy per neuron update, active"),
    "time_neuron_update_s": (8.4e-9, "s", "[D18] Table 1", "time per neuron update, active"),
    "energy_spike_in_tile_j": (1.7e-12, "J", "[D18] Table 1", "within-tile spike energy (per message)"),
    "latency_spike_in_tile_s": (2.1e-9, "s", "[D18] Table 1", "within-tile spike latency"),
    "energy_hop_j": (3.5e-12, "J", "[D18] Table 1", "energy per tile hop (mean of E-W 3.0 pJ and N-S 4.0 pJ)"),
    "latency_hop_s": (5.3e-9, "s", "[D18] Table 1", "latency per tile hop (mean of E-W 4.1 ns and N-S 6.5 ns)"),
    "barrier_sync_min_s": (113e-9, "s", "[D18] Table 1", "mesh-wide barrier synchronisation, 1 tile"),
    "barrier_sync_max_s": (465e-9, "s", "[D18] Table 1", "mesh-wide barrier synchronisation, 32 tiles"),
    # ---- static power ---------------------------------------------------------------------
    "static_power_chip_w": (0.10, "W", "derived from [M24]",
                            "no chip-level Loihi 2 static power figure was found in the sources searched; set "
                            "to the [M24] calibration measurement (0.12 W for the 1-layer S4D on 6 cores) minus "
                            "this model's dynamic power for that network (about 0.02 W). The power check at the "
                            "calibration point is therefore not independent; latency and cores are. Board and "
                            "system static powers were found ([N26]: 1.78 W for a one-chip board, of which the "
                            "neuro cores draw 0.25 W in total; [A26]: 16.05 W for a 16-chip VPX system): they "
                            "include the x86 cores, I/O and regulators, a wider boundary than this constant"),
}

#: Chip facts listed for reference that the mapping and cost model do not use (the mesh's rows
#: follow from neuro_cores_per_chip / mesh_cols): not options of the target.
REFERENCE_ONLY = ("embedded_cores_per_chip", "mesh_rows")

#: The published measurement this model is checked against ([M24]): a 1-layer S4D,
#: d_model 128, 4 states (2 complex), 3 inputs (sCIFAR), on one Loihi 2 chip.
CALIBRATION_POINT = {"d_input": 3, "d_output": 10, "d_model": 128, "d_state": 4, "n_layers": 1,
                     "time_per_step_s": 31e-6, "power_w": 0.12, "cores": 6,
                     "source": "[M24]"}


#: A second published Loihi 2 measurement, of a network the model can describe ([A26]): a dense
#: autoencoder (256-128-64-32-64-128-256, leaky ReLU, 8-bit weights, 24-bit accumulators and
#: activations, trained off-chip and run as an integer dataflow graph) on a 16-chip Loihi 2 VPX
#: embedded system, batch 1, input preloaded on the board (the Ethernet-I/O run in "ethernet").
#: Per inference. Used by benchmarks/loihi2_second_point.py through network.cost_network; no
#: constant above was fitted to it.
SECOND_POINT = {"sizes": (256, 128, 64, 32, 64, 128, 256), "w_bits": 8,
                "cores": 74, "chips_in_system": 16,
                "synops_per_inference": 3.0e5, "neuron_updates_per_inference": 1.0e4,
                "spike_events_per_inference": 2.0e4,
                "latency_s": 48.3e-6, "total_power_w": 16.89, "total_energy_j": 0.816e-3,
                "dynamic_energy_j": 0.0406e-3, "static_power_w": 16.05,
                "ethernet": {"latency_s": 281.0e-6, "total_power_w": 16.20, "total_energy_j": 4.554e-3,
                             "dynamic_energy_j": 0.0426e-3},
                "network": "dense autoencoder 256-128-64-32-64-128-256 (clean-data bottleneck 32), leaky ReLU, "
                           "8-bit weights, 24-bit activations",
                "system": "16-chip Loihi 2 VPX embedded system (74 neuro cores used), input preloaded",
                "source": "[A26]"}


def table_markdown() -> str:
    rows = ["| constant | value | unit | source | note |", "|---|---|---|---|---|"]
    for k, (v, u, s, n) in CONSTANTS.items():
        rows.append(f"| {k} | {v:g} | {u} | {s} | {n} |")
    return "\n".join(rows)
