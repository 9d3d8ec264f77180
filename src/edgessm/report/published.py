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

#: sources cited by no target (key: citation)
_OTHER_REFERENCES: dict[str, str] = {}

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
              "loihi2", "the calibration point of targets/loihi2 (its static power is derived from it)"),
    Published("m24_power", _L2["power_w"], "W", f"power, {_S4D_L2}", _L2["source"], "loihi2",
              "the calibration point of targets/loihi2 (its static power is derived from it)"),
    Published("m24_cores", _L2["cores"], "cores", f"neuro cores used, {_S4D_L2}", _L2["source"], "loihi2"),
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
