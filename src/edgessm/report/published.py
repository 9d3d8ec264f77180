"""Published figures the report shows beside edgessm's own, each with its citation.

One table of labelled entries: a value, its unit, what it is, the source (a key of
:data:`REFERENCES`) and the report section (``topic``) that shows it. The report renders
them as "published" rows, never as measured or modelled ones. Citations are not copied
here: they come from the targets' own source lists (``targets/loihi2/constants.py``,
``targets/crossbar/device.py``), and the Loihi 2 calibration point from
``targets.loihi2.CALIBRATION_POINT``.

To add a figure, append a :class:`Published` to :data:`FIGURES` (a new source: add its key
and citation to the target's reference list, or to ``_OTHER_REFERENCES`` below).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import UnknownNameError
from ..targets.crossbar.device import REFERENCES as _CROSSBAR_REFERENCES
from ..targets.loihi2.constants import CALIBRATION_POINT as _L2
from ..targets.loihi2.constants import REFERENCES as _LOIHI2_REFERENCES
from ..targets.loihi2.constants import SECOND_POINT as _A26

#: sources cited by no target (key: citation)
_OTHER_REFERENCES: dict[str, str] = {
    "[M24W]": 'S. M. Meyer et al., "A Diagonal State Space Model on Loihi 2 for Efficient Streaming Sequence '
              'Processing", NeurIPS 2024 Workshop "Machine Learning with New Compute Paradigms", poster '
              '(abstract on nips.cc/virtual/2024/101261): the workshop version of [M24]',
    "[M24O]": '"A Diagonal Structured State Space Model on Loihi 2 for Efficient Streaming Sequence Processing", '
              'ICLR 2025 submission (OpenReview, withdrawn; review scores 5, 3, 5, 3): its abstract and the four '
              'reviews, as stored in a public GitHub collection of OpenReview records (search index file id '
              '62051868088)',
    "[M24S]": 'B. Vaiciulis, "Deep Research: Intel Loihi 2 + Spiking State-Space Models for Event-Based Vision", '
              'thesis literature review (UNSW Sydney, MMAN4952), 2026, section 1.2, in a public GitHub repository '
              '(search index file id 70189952847): a secondary summary of [M24]',
}

REFERENCES: dict[str, str] = {**_LOIHI2_REFERENCES, **_CROSSBAR_REFERENCES, **_OTHER_REFERENCES}


@dataclass(frozen=True)
class Published:
    key: str          # unique name
    value: float
    unit: str         # "%", "s", "W", "cores", "uS", ...
    what: str         # what was measured, on which system and task
    source: str       # a key of REFERENCES
    topic: str        # the report section that shows it
    note: str = ""

    @property
    def citation(self) -> str:
        return REFERENCES[self.source]

    def text(self) -> str:
        """The value with its unit, as the page prints it."""
        v = self.value
        if self.unit == "%":
            return f"{v:g}%"
        if self.unit == "s" and v < 1e-3:
            return f"{v * 1e6:g} us"
        if self.unit == "J" and v < 1e-2:
            return f"{v * 1e6:g} uJ"
        if self.unit == "x":
            return f"{v:g}x"
        return f"{v:g} {self.unit}"

    def to_dict(self) -> dict:
        return {**asdict(self), "citation": self.citation, "kind": "published"}


_S4D_L2 = (f"1-layer S4D (d_model {_L2['d_model']}, {_L2['d_state']} states, {_L2['d_input']} inputs, sCIFAR) "
           f"on one Loihi 2 chip")

FIGURES: tuple[Published, ...] = (
    # ---- S4D on Loihi 2 [M24] ----------------------------------------------------------------
    Published("m24_scifar_float", 86.5, "%", "sCIFAR test accuracy, float model", "[M24]", "quantization"),
    Published("m24_scifar_ptq", 71.7, "%", "sCIFAR test accuracy, post-training quantized to the Loihi 2 "
              "precision (8-bit weights, 24-bit states and graded spikes)", "[M24]", "quantization"),
    Published("m24_scifar_qaft", 84.1, "%", "sCIFAR test accuracy after quantization-aware fine-tuning "
              "(same precision)", "[M24]", "quantization"),
    Published("m24_time_per_step", _L2["time_per_step_s"], "s", f"time per step, {_S4D_L2}", _L2["source"],
              "loihi2", "the calibration point of targets/loihi2 (its static power is derived from it); "
              "not found again in the sources searched for the comparison below: unverified"),
    Published("m24_power", _L2["power_w"], "W", f"power, {_S4D_L2}", _L2["source"], "loihi2",
              "the calibration point of targets/loihi2 (its static power is derived from it); unverified"),
    Published("m24_cores", _L2["cores"], "cores", f"neuro cores used, {_S4D_L2}", _L2["source"], "loihi2",
              "unverified; a secondary summary gives 31 and 111 cores for the study's two models"),
    # ---- S4D on Loihi 2 vs recurrent S4D on a Jetson Orin Nano, token by token [M24] ---------------
    # The study's per-token table (energy, latency, throughput per model and mode) was not found in any
    # stored source (searched: the arXiv abstract and HTML pages, the NeurIPS workshop page, the ICLR
    # OpenReview record, summary sites, citing papers and theses, lava / lava-dl / IntelLabs repositories):
    # what was found is below, each figure with where it was found.
    Published("m24_energy_ratio", 1000, "x", "energy per token: recurrent S4D on a Jetson Orin Nano over S4D on "
              "Loihi 2, token-by-token processing (sMNIST, psMNIST, sCIFAR)", "[M24]", "loihi2-jetson",
              "abstract; 'consumes 1000 times less energy'"),
    Published("m24_latency_ratio", 75, "x", "latency per token, the same comparison (Jetson / Loihi 2)", "[M24]",
              "loihi2-jetson", "abstract; latency and throughput improve by the same factor, so latency per "
              "token is 1 / throughput"),
    Published("m24_throughput_ratio", 75, "x", "throughput, the same comparison (Loihi 2 / Jetson)", "[M24]",
              "loihi2-jetson", "abstract"),
    Published("m24w_speed_ratio", 29, "x", "'faster' than the Jetson, token by token (workshop version of the "
              "study)", "[M24W]", "loihi2-jetson", "with '1000 times less energy'; differs from the arXiv "
              "abstract's 75x"),
    Published("m24o_accuracy_drop", 3, "points", "largest accuracy decrease on Loihi 2 against the full-precision "
              "model on the Jetson ('less than one to three percentage points')", "[M24O]", "loihi2-jetson",
              "the Jetson ran a JIT-compiled full-precision PyTorch model, not TensorRT (reviewers); in the "
              "batched mode at batch 64 the Jetson outperforms Loihi 2 (a reviewer, on the paper's Table 2)"),
    Published("m24o_params", 275000, "parameters", "largest network of the study (a reviewer's statement)",
              "[M24O]", "loihi2-jetson"),
    Published("m24s_cores_small", 31, "cores", "neuro cores of the study's small S4D model, one chip",
              "[M24S]", "loihi2-jetson", "secondary source (67k-265k parameters over the two models); it "
              "conflicts with the 6 cores of the calibration point above"),
    Published("m24s_cores_large", 111, "cores", "neuro cores of the study's large S4D model, one chip",
              "[M24S]", "loihi2-jetson", "secondary source"),
    # ---- a dense autoencoder on a 16-chip Loihi 2 VPX system [A26]: the model's second check ------
    Published("a26_cores", _A26["cores"], "cores", "neuro cores used by the dense autoencoder", _A26["source"],
              "loihi2-second"),
    Published("a26_latency", _A26["latency_s"], "s", "latency per inference, input preloaded", _A26["source"],
              "loihi2-second"),
    Published("a26_dynamic_energy", _A26["dynamic_energy_j"], "J", "dynamic energy per inference",
              _A26["source"], "loihi2-second"),
    Published("a26_static_power", _A26["static_power_w"], "W", "static power of the 16-chip VPX system",
              _A26["source"], "loihi2-second"),
    Published("a26_total_energy", _A26["total_energy_j"], "J", "total energy per inference", _A26["source"],
              "loihi2-second"),
    Published("a26_ethernet_latency", _A26["ethernet"]["latency_s"], "s", "latency per inference with the input "
              "sent over Ethernet", _A26["source"], "loihi2-second"),
    Published("n26_board_static", 1.78, "W", "static power of a one-chip Loihi 2 board (Oheo Gulch, N3B3), "
              "tabular Q-learning workload", "[N26]", "loihi2-second", "board total 1.80 W"),
    Published("n26_neurocores", 0.25, "W", "power of the neuro cores alone on that board (34 cores, training)",
              "[N26]", "loihi2-second", "the embedded x86 cores draw 1.56 W of the 1.80 W"),
    # ---- S4D on memristive crossbars [IMSSA] -------------------------------------------------------
    Published("imssa_software", 95.1, "%", "test accuracy of the S4D model in software", "[IMSSA]", "crossbar"),
    Published("imssa_on_chip", 81.7, "%", "test accuracy of the same model on the chip's 64x64 TaOx arrays; "
              "the loss attributed to devices stuck at high conductance", "[IMSSA]", "crossbar"),
    Published("imssa_noise_2bit", 15.0, "uS", "write-noise sigma 2-bit weights still tolerate (above ~15 uS)",
              "[IMSSA]", "robustness", "lower bit-widths tolerated more write noise"),
    Published("imssa_noise_5bit", 5.0, "uS", "write-noise sigma 5-bit weights tolerate (about 5 uS)",
              "[IMSSA]", "robustness", "lower bit-widths tolerated more write noise"),
)


def figures(topic: str | None = None) -> list[Published]:
    """The published figures of one report section (all of them for None)."""
    return [f for f in FIGURES if topic is None or f.topic == topic]


def get(key: str) -> Published:
    for f in FIGURES:
        if f.key == key:
            return f
    raise UnknownNameError(f"no published figure {key!r}; known: {', '.join(f.key for f in FIGURES)}")


def check() -> None:
    """Every entry names a known source and a unique key (run by the tests)."""
    keys = [f.key for f in FIGURES]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise ValueError(f"duplicate published keys: {sorted(dup)}")
    for f in FIGURES:
        if f.source not in REFERENCES:
            raise ValueError(f"published figure {f.key}: unknown source {f.source!r}")
