"""Export a float SequenceModel to ONNX, for ONNX Runtime and other standard runtimes.

Two graphs, both with real tensors only (ONNX has no complex arithmetic; the S4D state's
complex numbers travel as real pairs, the last axis of size 2):

* ``step``: one token. Inputs ``x`` (B, d_input) and ``state`` (n_layers, B, H, N/2, 2); for a
  mean readout also ``total`` (B, H) and ``count`` (B, 1), the running sum and token count.
  Outputs ``logits`` (B, d_output), ``state_out`` (and ``total_out``, ``count_out``): feed them
  back as the next token's inputs, starting from zeros. The recurrence per layer is
  ``x_n <- dA_n x_n + dB_n u``, ``y = 2 Re(sum_n C_n x_n) + D u`` written with real products.
* ``sequence``: a whole sequence of the task's length L: ``x`` (B, L, d_input) -> ``logits``
  (B, d_output), the S4D convolution as a grouped causal Conv (kernel K of length L, computed
  from the parameters at export time) instead of the FFT.

The batch axis is dynamic. Quantized models (fake-quantized integer arithmetic with round half
up) are refused: ONNX's Round rounds half to even, so the graph could not be bit-exact; use
``export-c`` or ``deploy`` for them.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, EdgessmError

MODES = ("step", "sequence")


class OnnxUnavailableError(EdgessmError):
    """onnx / onnxruntime are not installed (pip install 'edgessm[onnx]')."""


def _check_exportable(model) -> None:
    from ..quant import QuantSequenceModel
    from ..ssm import SequenceModel
    if isinstance(model, QuantSequenceModel):
        raise ConfigError(
            "layer blocks.0.s4d (quantized S4D): its integer arithmetic rounds half up and saturates "
            "at the spec's bit widths; ONNX's Round rounds half to even, so no ONNX graph reproduces it "
            "exactly. Export the float checkpoint, or use export-c / deploy for the quantized model")
    if not isinstance(model, SequenceModel):
        raise ConfigError(f"export-onnx needs a SequenceModel, got {type(model).__name__}")
    for i, b in enumerate(model.blocks):
        if b.norm_kind == "batch" and b.training:
            raise ConfigError(f"layer blocks.{i}.norm (BatchNorm in training mode): call model.eval() first")
        if not isinstance(b.act, (nn.ReLU, nn.GELU)):
            raise ConfigError(f"layer blocks.{i}.act ({type(b.act).__name__}) has no ONNX export here")


def _real_coeffs(block):
    dA, dB, C = (t.detach() for t in block.s4d.discrete())
    return [torch.stack([t.real, t.imag]).float() for t in (dA, dB, C)]   # each (2, H, N/2)


class StepGraph(nn.Module):
    """net.step with the complex state as real pairs (see the module docstring)."""

    def __init__(self, model):
        super().__init__()
        _check_exportable(model)
        self.model = model = model.fold_norms()      # a mixing batch norm: into the mixing weights
        self.mean = model.config.readout == "mean"
        for i, b in enumerate(model.blocks):
            for k, t in zip(("dA", "dB", "C"), _real_coeffs(b)):
                self.register_buffer(f"{k}{i}", t, persistent=False)

    def forward(self, x, state, total=None, count=None):
        m = self.model
        h = m.encoder(x)
        new = []
        for i, b in enumerate(m.blocks):
            dA, dB, C = (getattr(self, f"{k}{i}") for k in ("dA", "dB", "C"))
            z = b._norm(h) if b.prenorm else h
            sr, si = state[i, ..., 0], state[i, ..., 1]
            u = z.unsqueeze(-1)
            nr = dA[0] * sr - dA[1] * si + dB[0] * u
            ni = dA[0] * si + dA[1] * sr + dB[1] * u
            y = 2 * (C[0] * nr - C[1] * ni).sum(-1) + b.s4d.D * z
            h = b._after_ssm(y, h)
            new.append(torch.stack([nr, ni], -1))
        st = torch.stack(new, 0)
        if self.mean:
            total = total + h
            count = count + 1.0
            return m.decoder(total / count), st, total, count
        return m.decoder(h), st


class SequenceGraph(nn.Module):
    """net.forward on sequences of length L with the S4D convolution as a grouped Conv."""

    def __init__(self, model, seq_len: int):
        super().__init__()
        _check_exportable(model)
        self.model, self.L = model.fold_norms(), int(seq_len)
        model = self.model
        for i, b in enumerate(model.blocks):
            with torch.no_grad():
                K = b.s4d.kernel(self.L).float()                     # (H, L)
            self.register_buffer(f"K{i}", K.flip(-1).unsqueeze(1), persistent=False)   # (H, 1, L)

    def forward(self, x):
        m = self.model
        h = m.encoder(x)                                             # (B, L, H)
        for i, b in enumerate(m.blocks):
            z = b._norm(h) if b.prenorm else h
            zt = F.pad(z.transpose(1, 2), (self.L - 1, 0))
            y = F.conv1d(zt, getattr(self, f"K{i}"), groups=zt.shape[1]).transpose(1, 2) + b.s4d.D * z
            h = b._after_ssm(y, h)
        h = h.mean(1) if m.config.readout == "mean" else h[:, -1]
        return m.decoder(h)


def zero_inputs(model, batch: int = 1) -> dict[str, np.ndarray]:
    """The step graph's inputs before the first token (state, and total/count for a mean readout)."""
    c = model.config
    d = {"state": np.zeros((c.n_layers, batch, c.d_model, c.d_state // 2, 2), np.float32)}
    if c.readout == "mean":
        d.update(total=np.zeros((batch, c.d_model), np.float32), count=np.zeros((batch, 1), np.float32))
    return d


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise OnnxUnavailableError("exporting to ONNX needs the onnx package: pip install 'edgessm[onnx]'") from None
    return onnx


def export_onnx(model, out, mode: str = "step", seq_len: int | None = None, opset: int = 18) -> Path:
    """Write `model` as an ONNX graph to `out` (see the module docstring); returns the path."""
    require_onnx()
    if mode not in MODES:
        raise ConfigError(f"unknown --mode {mode!r}; expected one of {', '.join(MODES)}")
    model = model.eval()
    c = model.config
    if mode == "step":
        g = StepGraph(model).eval()
        z = {k: torch.from_numpy(v) for k, v in zero_inputs(model, 2).items()}
        args = (torch.zeros(2, c.d_input), *z.values())
        names_in = ["x", *z]
        names_out = ["logits", "state_out"] + (["total_out", "count_out"] if c.readout == "mean" else [])
    else:
        if not seq_len or seq_len < 1:
            raise ConfigError("the sequence graph needs the sequence length (the task's)")
        g = SequenceGraph(model, seq_len).eval()
        args = (torch.zeros(2, seq_len, c.d_input),)
        names_in, names_out = ["x"], ["logits"]
    dyn = {n: {0: "batch"} for n in names_in + names_out if n not in ("state", "state_out")}
    dyn.update({n: {1: "batch"} for n in ("state", "state_out") if n in names_in + names_out})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(g, args, str(tmp), input_names=names_in, output_names=names_out,
                              dynamic_axes=dyn, opset_version=opset, dynamo=False)
        tmp.replace(out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise OnnxUnavailableError("verifying an ONNX export needs onnxruntime: pip install 'edgessm[onnx]'") from None
    return onnxruntime


def _ort_session(path):
    ort = require_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def verify_onnx(model, path, X, mode: str = "step") -> dict:
    """Run the test sequences X (N, L, d_input) through the ONNX graph with onnxruntime and
    through PyTorch (``net.step`` token by token, or ``net(x)``); returns the largest absolute
    difference of the logits, the predictions compared and how many differ."""
    sess = _ort_session(path)
    model = model.eval()
    X = torch.as_tensor(X, dtype=torch.float32)
    max_diff, disagree, compared = 0.0, 0, 0
    with torch.no_grad():
        if mode == "step":
            for x in X:
                feeds = zero_inputs(model, 1)
                st = model.init_state(1)
                for t in range(x.shape[0]):
                    outs = sess.run(None, {"x": x[t:t + 1].numpy(), **feeds})
                    ref, st = model.step(x[t:t + 1], st)
                    feeds["state"] = outs[1]
                    if len(outs) > 2:
                        feeds["total"], feeds["count"] = outs[2], outs[3]
                    d = np.abs(outs[0] - ref.numpy())
                    max_diff = max(max_diff, float(d.max()))
                    disagree += int(outs[0].argmax(-1)[0] != int(ref.argmax(-1)[0]))
                    compared += 1
        else:
            for s in range(0, X.shape[0], 32):
                xb = X[s:s + 32]
                o = sess.run(None, {"x": xb.numpy()})[0]
                ref = model(xb).numpy()
                max_diff = max(max_diff, float(np.abs(o - ref).max()))
                disagree += int((o.argmax(-1) != ref.argmax(-1)).sum())
                compared += len(xb)
    return {"max_abs_diff": max_diff, "predictions_compared": compared, "predictions_differing": disagree}
