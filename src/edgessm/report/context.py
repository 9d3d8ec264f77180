"""What the report's sections share: the options (every default defined here, once), the
loaded models and data, the runs on targets (each made once, whichever section asks first),
and small helpers for errors and figures."""
from __future__ import annotations

import dataclasses
import logging
import traceback
from pathlib import Path

from ..errors import ConfigError
from . import runs

ROBUST_SWEEPS = {
    "write_noise": (0.0, 5.0, 10.0, 20.0, 40.0, 60.0),     # write_noise_sigma_us, constant (slope 0), all arrays
    "write_noise_linear": (0.0, 15.0, 30.0, 60.0),        # the same on encoder / mixing / decoder arrays only
    "stuck": (0.0, 0.002, 0.01, 0.03, 0.1),                  # stuck_on_frac + stuck_off_frac, split evenly
    "drift": (1.0, 1e2, 1e4, 1e6, 1e8),                      # drift_time_s
}
STUDY = {"batches": (1, 8, 64, 256), "seq_lens": (256, 784), "steps": 100, "torch_steps": 20, "repeats": 2,
         "max_tokens": 1 << 16}


@dataclasses.dataclass(frozen=True)
class Options:
    """Options of :func:`edgessm.report.build_report` (keywords), with their defaults.

    specs: PTQ specs run on `int_target` ("loihi2" or "fixed"), calibrated on `calibrate`
    training samples. crossbar_model / crossbar_task / crossbar_limit (None: the whole test
    set): the model of the crossbar sections; trials: its device instances in the accuracy
    section. robust_devices, robust_sweeps ({"write_noise" | "write_noise_linear" | "stuck" |
    "drift": values}), robust_models ([(label, model, {field: value})] more models to sweep,
    e.g. a post-training-quantized one at another bit-width): the robustness section.
    study: overrides of STUDY (batches, seq_lens, steps, torch_steps, repeats, max_tokens).
    cost_batch, cost_steps: the measured CPU rows of the cost section. trace_index: the test
    sample of the latency and trace sections. threads: torch threads while measuring
    (restored). sections: keys of the sections to build (default all). quant_tasks: the tasks
    of the float / PTQ / QAFT section (their shipped TASK and TASK-loihi2 models), computed on
    min(limit, quant_limit) test samples each (all of them when limit is None: report --full).
    write_noise_study: the results file of the write-noise study (benchmarks/bench_crossbar.py
    sweep --json; relative paths from the working directory), shown in the robustness section
    beside its own sweeps; a missing file is a note, not an error.
    """
    specs: tuple = ("loihi2", "w4", "ternary")
    int_target: str = "loihi2"
    calibrate: int = 256
    crossbar_model: str | None = "fsdd01-ternary"
    crossbar_task: str = "fsdd-01"
    crossbar_limit: int | None = None
    trials: int = 3
    robust_devices: int = 2
    robust_sweeps: dict | None = None
    robust_models: tuple | None = None
    study: dict | None = None
    cost_batch: int = 64
    cost_steps: int = 500
    trace_index: int = 0
    threads: int = 1
    batch_size: int = 256
    sections: tuple | None = None
    quant_tasks: tuple = ("smnist", "psmnist", "scifar")
    quant_limit: int = 50
    write_noise_study: str | None = "benchmarks/results/crossbar_write_noise.json"

    @classmethod
    def from_keywords(cls, kw: dict) -> "Options":
        known = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(kw) - known)
        if bad:
            raise ConfigError(f"unknown report option(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        kw = dict(kw)
        for k in ("specs", "quant_tasks", "sections", "robust_models"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        o = cls(**kw)
        for k in ("calibrate", "trials", "robust_devices", "cost_batch", "cost_steps", "threads", "batch_size",
                  "quant_limit"):
            v = getattr(o, k)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"report option {k} must be a positive integer, got {v!r}")
        return o

    def changed(self) -> dict:
        """The options that differ from their defaults."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}

    def resolved(self) -> dict:
        """Every option, with the sweeps and the study filled in from their defaults."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["robust_sweeps"] = dict(self.robust_sweeps or ROBUST_SWEEPS)
        d["study"] = {**STUDY, **(self.study or {})}
        return d


def log(msg: str):
    logging.getLogger("edgessm.report").info(msg)


def err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class NotFit(Exception):
    """The model does not map onto the target (a note in the report, not an error)."""


class Ctx:
    """The options (as attributes), the loaded models and data, and the memoized runs."""

    def __init__(self, out: Path, model_name: str, limit: int | None, options: Options):
        self.out = Path(out)
        self.model_name, self.limit, self.options = model_name, limit, options
        self.__dict__.update(options.resolved())
        self.model = self.test = self.calib = self.task = None
        self.xmodel = self.xtest = None
        self.load_errors: dict = {}
        self._memo: dict = {}

    # ---- loading -----------------------------------------------------------------------------
    def load(self, task: str | None):
        from .. import io
        from ..data import load_task
        try:
            self.model = io.load(self.model_name).eval()
        except Exception as e:  # noqa: BLE001 - every section then reports it
            self.load_errors["model"] = err(e)
        self.task = task or io.trained_task(self.model) or "smnist"
        try:
            self.test = load_task(self.task, "test", limit=self.limit)
            self.calib = load_task(self.task, "train", limit=max(2, self.calibrate)).x
        except Exception as e:  # noqa: BLE001
            self.load_errors["model"] = self.load_errors.get("model") or err(e)
            self.model = None
        if self.crossbar_model:
            try:
                self.xmodel = io.load(self.crossbar_model).eval()
                self.xtest = load_task(self.crossbar_task, "test", limit=self.crossbar_limit)
            except Exception as e:  # noqa: BLE001
                self.load_errors["xmodel"] = err(e)
                self.xmodel = None

    def need_model(self):
        if self.model is None:
            raise RuntimeError(f"model {self.model_name!r} could not be loaded: {self.load_errors.get('model')}")

    def need_xmodel(self):
        if not self.crossbar_model:
            raise RuntimeError("no crossbar model given (crossbar_model=None)")
        if self.xmodel is None:
            raise RuntimeError(f"{self.crossbar_model!r} could not be loaded: {self.load_errors.get('xmodel')}")

    # ---- runs, each made once --------------------------------------------------------------------
    def memo(self, key, fn):
        """fn() the first time `key` is asked for; its result (or its exception) afterwards."""
        if key not in self._memo:
            try:
                self._memo[key] = (fn(), None)
            except Exception as e:  # noqa: BLE001 - raised again to every caller
                self._memo[key] = (None, e)
        value, e = self._memo[key]
        if e is not None:
            raise e
        return value

    def has_run(self, key) -> bool:
        return key in self._memo and self._memo[key][1] is None

    def cpu_run(self) -> dict:
        self.need_model()
        return self.memo("cpu", lambda: runs.deploy(self.model, "cpu", self.task, self.limit,
                                                    batch_size=self.batch_size, name=self.model_name))

    def int_run(self, spec: str, target: str | None = None) -> dict:
        """The model post-training quantized to `spec` on the integer target (default int_target)."""
        self.need_model()
        target = target or self.int_target
        return self.memo(("int", target, spec), lambda: runs.deploy(
            self.model, target, self.task, self.limit, spec=spec, calibrate=self.calibrate,
            batch_size=self.batch_size, name=self.model_name))

    def crossbar_main_run(self) -> dict:
        """The report's main model on the crossbar (NotFit when it does not map onto the arrays)."""
        self.need_model()

        def run():
            from ..errors import EdgessmError
            try:   # does it map at all? (a 2-sample calibration finds out in a fraction of a second)
                runs.compile(self.model, "crossbar", calibration=self.calib[:2])
            except EdgessmError as e:
                raise NotFit(str(e)) from None
            return runs.deploy(self.model, "crossbar", self.task, self.limit, trials=self.trials,
                               calibrate=self.calibrate, batch_size=self.batch_size, name=self.model_name)
        return self.memo("crossbar_main", run)

    def crossbar_run(self) -> dict:
        """The crossbar model on its task, `trials` device instances of the default device."""
        self.need_xmodel()
        return self.memo("crossbar", lambda: runs.deploy(
            self.xmodel, "crossbar", self.crossbar_task, self.crossbar_limit, trials=self.trials,
            batch_size=self.batch_size, name=self.crossbar_model))

    def crossbar_program(self):
        """The crossbar model compiled for device instance 0 of its device (not run)."""
        self.need_xmodel()
        return self.memo("crossbar_program", lambda: runs.compile(self.xmodel, "crossbar", seed=0))


def figure(errors: list, fn, *args, **kw):
    """A figure's file name, or None with the plotting error recorded (the tables still go out)."""
    try:
        return fn(*args, **kw)
    except Exception as e:  # noqa: BLE001
        errors.append({"where": f"plot {getattr(fn, '__name__', '')}".strip(), "error": err(e)})
        log(traceback.format_exc(limit=4))
        return None


def spec_info(name: str) -> tuple[str, str]:
    """(short bar label, long description) of a quantization spec."""
    from ..quant.spec import QuantSpec
    try:
        s = QuantSpec.load(name)
    except Exception:  # noqa: BLE001 - a spec we cannot describe is still run (and fails there)
        return name, name
    m = s["mixing"]
    w = "ternary" if m.method == "ternary" else f"w{m.bits}"
    short = f"{w}/s{s['state'].bits}/a{s['activations'].bits}"
    long = (f"weights: encoder {s['encoder'].bits} b, mixing {m.bits} b ({m.method}), decoder "
            f"{s['decoder'].bits} b; S4D dA {s['dA'].bits} b, dB/dC {s['dB'].bits} b; state {s['state'].bits} b; "
            f"activations {s['activations'].bits} b")
    return short, long


def acc_fields(res: dict) -> dict:
    """accuracy fields of a deploy result (analog targets: mean, std over device instances)."""
    a = res["accuracy"]
    if isinstance(a, dict):
        return {"accuracy": a["mean"], "accuracy_std": a["std"], "trials": len(a["trials"]),
                "accuracy_trials": a["trials"], "n": res["n"]}
    return {"accuracy": a, "n": res["n"]}
