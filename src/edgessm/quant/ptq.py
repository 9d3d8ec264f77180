"""Post-training quantization and the QAT wrapper.

    qmodel = quantize(model, "loihi2", calibration=X)      # PTQ: float -> calibrated integer model
    wrap = qat_wrap("loihi2", calibration=X)               # train(cfg, out, wrap=wrap): QAT / QAFT
"""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ..ssm.network import SequenceModel
from .model import QuantSequenceModel
from .spec import QuantSpec


def calibration_data(task: str, n: int = 512, split: str = "train") -> torch.Tensor:
    """The first `n` samples of a task's split, (n, L, d_in), for calibration."""
    from ..data import load_task
    return load_task(task, split, limit=n).x


def quantize(model: SequenceModel, spec="loihi2", calibration: torch.Tensor | None = None,
             task: str | None = None, n: int = 512) -> QuantSequenceModel:
    """PTQ: a calibrated QuantSequenceModel from a float (or quantized) model.

    calibration: inputs (B, L, d_in); or task: take the first `n` training samples.
    A quantized model given with the same spec and no data is returned as is.
    """
    spec = QuantSpec.load(spec)
    if isinstance(model, QuantSequenceModel) and calibration is None and task is None \
            and model.spec.to_dict() == spec.to_dict() and bool(model.calibrated):
        return model
    if calibration is None:
        if task is None:
            raise ConfigError("PTQ needs calibration data: pass calibration=X (B, L, d_in) or "
                              "task=NAME (its first training samples)")
        calibration = calibration_data(task, n)
    q = QuantSequenceModel.from_float(model, spec)
    q.calibrate(calibration[:n] if n else calibration)
    q.eval()
    return q


def qat_wrap(spec="loihi2", calibration: torch.Tensor | None = None, task: str | None = None,
             n: int = 256, exact_eval: bool = False):
    """A ``wrap`` for edgessm.train.train: float model -> QuantSequenceModel in train mode.

    Calibrated on `calibration` / `task` if given, else on the first training batch.
    A model that is already quantized keeps its calibration unless the spec changes.
    exact_eval=False: validation during training uses the fast fake-quant forward (FFT);
    the checkpoint, once loaded, evaluates with the exact integer network.
    """
    spec = QuantSpec.load(spec)

    def wrap(model: SequenceModel) -> QuantSequenceModel:
        if isinstance(model, QuantSequenceModel) and model.spec.to_dict() == spec.to_dict():
            q = model
        else:
            q = QuantSequenceModel.from_float(model, spec)
            X = calibration
            t = task
            if X is None and t is None:
                run = (getattr(model, "checkpoint_meta", {}) or {}).get("run", {})
                t = (run.get("data") or {}).get("task")
            if X is None and t is not None:
                X = calibration_data(t, n)
            if X is not None:
                q.calibrate(X[:n])
        q.exact_eval = exact_eval
        q.train()
        return q
    return wrap


def quant_wrap(spec="loihi2", task: str | None = None, calibrate: int = 256):
    """The ``wrap`` of ``edgessm train --quant SPEC``: :func:`qat_wrap` calibrated on the first
    `calibrate` training samples of `task` (or of the task in the checkpoint's run config, or,
    failing both, on the first training batch)."""
    return qat_wrap(spec, task=task, n=calibrate)
