"""Cross-check of the crossbar target's device model against IBM aihwkit's inference noise models.

The same trained weights go through both simulators' device models, and the resulting
networks are compared over device instances (``pip install edgessm[aihwkit]``):

- edgessm: the crossbar program's own mapping and programming (``targets.crossbar.program``:
  per-column quantization ``quant_linear``, differential pairs, ``Stage.program`` with write
  noise sigma(G), stuck devices, drift and its compensation), read back as the effective
  weight of every cell (``Stage.q_eff`` times the column's digital scale).
- aihwkit: the same float layers converted with ``convert_to_analog`` to
  ``TorchInferenceRPUConfig`` tiles (column-wise weight scaling, ``weight_scaling_omega = 1``,
  so a column's largest weight maps to g_max as in edgessm), programmed with
  ``program_analog_weights`` and drifted with ``drift_analog_weights(t)`` under a noise model
  (``ReRamWan2022NoiseModel``, ``PCMLikeNoiseModel``); the effective weights are read by
  probing each analog layer with the identity matrix (its forward output, including aihwkit's
  global drift compensation).

Only the linear arrays (encoder, mixing, decoder) differ between the two sides: the recurrent
S4D blocks stay float on both (the checkpoint's own S4D parameters, evaluated by the float
``SequenceModel``), and the converters (DAC/ADC) and per-read noise are ideal on both sides
(``forward.is_perfect`` in aihwkit; the weights are read without converters in edgessm), so
any difference in accuracy comes from how the devices are programmed.
"""
from __future__ import annotations

import copy
import math
import statistics

import torch
from torch import nn

__all__ = ["available", "linear_layers", "edgessm_weights", "aihwkit_weights", "accuracy",
           "level_errors", "DEVICES", "compare"]


def available() -> tuple[bool, str]:
    """(True, version) when aihwkit and its pure-torch inference tiles import, else (False, why)."""
    try:
        import aihwkit
        from aihwkit.simulator.configs import TorchInferenceRPUConfig  # noqa: F401
        from aihwkit.nn.conversion import convert_to_analog  # noqa: F401
        from aihwkit.inference import PCMLikeNoiseModel, ReRamWan2022NoiseModel  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means: not usable here
        return False, f"aihwkit is not usable ({type(e).__name__}: {e}); pip install edgessm[aihwkit]"
    return True, aihwkit.__version__


def linear_layers(model) -> dict[str, nn.Linear]:
    """The network's matrices that the crossbar maps as linear arrays, by stage name."""
    out = {"encoder": model.encoder}
    for i, b in enumerate(model.blocks):
        out[f"mixing{i}"] = b.mix
    out["decoder"] = model.decoder
    return out


def edgessm_weights(model, cfg, seed: int) -> dict[str, torch.Tensor]:
    """Effective (out, in) weights of the linear arrays of one crossbar device instance."""
    from ..targets.crossbar.hw import HwSequenceModel
    from ..targets.crossbar.program import CrossbarProgram
    hwm = HwSequenceModel.from_float(model, cfg)
    prog = CrossbarProgram(hwm, cfg.replace(seed=seed))
    out = {}
    for name, lin in linear_layers(model).items():
        st = prog.stages[name]
        W = torch.zeros(st.n_out, st.n_in, dtype=torch.float64)
        for a in range(st.arrays):
            r = torch.nonzero(st.in_idx[a] >= 0).flatten()
            c = torch.nonzero(st.out_idx[a] >= 0).flatten()
            W[st.out_idx[a, c].unsqueeze(-1), st.in_idx[a, r].unsqueeze(0)] = \
                st.q_eff[a][r][:, c].T.double()
        out[name] = (W * prog.scales[name].double().unsqueeze(-1)).float()
    return out


def rpu_config(noise_model, drift_compensation: bool):
    """aihwkit TorchInferenceRPUConfig with ideal periphery and column-wise weight mapping."""
    from aihwkit.inference import GlobalDriftCompensation
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    c = TorchInferenceRPUConfig()
    c.forward.is_perfect = True
    c.mapping.weight_scaling_omega = 1.0
    c.mapping.weight_scaling_columnwise = True
    c.mapping.learn_out_scaling = False
    c.noise_model = noise_model
    c.drift_compensation = GlobalDriftCompensation() if drift_compensation else None
    return c


@torch.no_grad()
def aihwkit_weights(model, noise_model, t_inference: float | None, seed: int,
                    drift_compensation: bool) -> dict[str, torch.Tensor]:
    """Effective (out, in) weights of the linear layers after aihwkit programs them and, unless
    `t_inference` is None, drifts them to `t_inference` seconds."""
    from aihwkit.nn.conversion import convert_to_analog
    m = copy.deepcopy(model).eval()
    analog = convert_to_analog(m, rpu_config(noise_model, drift_compensation))
    analog.eval()
    torch.manual_seed(seed)
    analog.program_analog_weights()
    if t_inference is not None:
        analog.drift_analog_weights(t_inference)
    out = {}
    for name, layer in linear_layers(analog).items():
        n_in = layer.in_features
        probe = torch.cat([torch.eye(n_in), torch.zeros(1, n_in)])
        y = layer(probe)
        out[name] = (y[:-1] - y[-1:]).T.contiguous()      # remove the (digital) bias
    return out


@torch.no_grad()
def accuracy(model, weights: dict, X: torch.Tensor, y: torch.Tensor, batch_size: int = 100) -> float:
    """Test accuracy of the float network with its linear layers' weights replaced."""
    m = copy.deepcopy(model).eval()
    for name, lin in linear_layers(m).items():
        lin.weight.copy_(weights[name])
    correct = 0
    for s in range(0, len(y), batch_size):
        correct += int((m(X[s:s + batch_size]).argmax(-1) == y[s:s + batch_size]).sum())
    return correct / max(len(y), 1)


def level_errors(model, weights: dict) -> dict:
    """Weight error of the cells per target level, in units of the column's largest weight:
    {level: (sum, sum of squares, count)} over all linear layers (levels rounded to 1e-3)."""
    acc: dict = {}
    for name, lin in linear_layers(model).items():
        W = lin.weight.detach().double()
        s = W.abs().amax(1, keepdim=True).clamp(min=1e-30)
        q = (W / s)
        e = (weights[name].double() - W) / s
        for lv in torch.unique(torch.round(q * 1000) / 1000).tolist():
            sel = (torch.round(q * 1000) / 1000) == lv
            a = acc.setdefault(lv, [0.0, 0.0, 0])
            a[0] += float(e[sel].sum())
            a[1] += float((e[sel] ** 2).sum())
            a[2] += int(sel.sum())
    return acc


def _merge(total: dict, part: dict) -> None:
    for k, (s, ss, n) in part.items():
        t = total.setdefault(k, [0.0, 0.0, 0])
        t[0] += s
        t[1] += ss
        t[2] += n


def _stats(acc: dict) -> dict:
    out = {}
    for lv, (s, ss, n) in sorted(acc.items()):
        mean = s / n
        var = max(ss / n - mean ** 2, 0.0)
        out[lv] = {"mean": mean, "std": math.sqrt(var), "n": n,
                   "mean_se": math.sqrt(var / n), "std_se": math.sqrt(var / (2 * max(n - 1, 1)))}
    return out


def _noise_model(kind: str):
    from aihwkit.inference import PCMLikeNoiseModel, ReRamWan2022NoiseModel
    from aihwkit.inference.converter.conductance import SinglePairConductanceConverter
    if kind == "reram_wan2022":
        return ReRamWan2022NoiseModel(g_converter=SinglePairConductanceConverter(g_max=40.0, g_min=0.0))
    if kind == "pcm":
        return PCMLikeNoiseModel(g_converter=SinglePairConductanceConverter(g_max=25.0, g_min=0.0),
                                 read_noise_scale=0.0)
    raise ValueError(kind)


# name: (aihwkit noise model, t_inference s (None: programming only), aihwkit drift compensation,
#        edgessm device, overrides, note)
_RERAM = {"stuck_on_frac": 0.0, "stuck_off_frac": 0.0, "read_noise_rel": 0.0}
DEVICES = {
    "reram_wan2022_prog": (
        "reram_wan2022", None, False, "reram_wan2022", _RERAM,
        "ReRamWan2022NoiseModel (g_max 40 uS, g_min 0), program_analog_weights only; edgessm "
        "preset reram_wan2022 without stuck devices and read noise (aihwkit's model has neither)"),
    "reram_wan2022": (
        "reram_wan2022", 1.0, False, "reram_wan2022", _RERAM,
        "as reram_wan2022_prog, then drift_analog_weights(1 s), which redraws every device from the "
        "1-s fit around its target, converted back with the programmed weights' scale"),
    "pcm_1h": (
        "pcm", 3600.0, True, "default",
        {"g_min_us": 0.0, "g_max_us": 25.0, "write_noise_sigma_us": 0.26348,
         "write_noise_slope": (0.26348 + 1.9650 - 1.1731 - 0.26348) / 25.0,
         "drift_nu": 0.049, "drift_nu_std": 0.008, "drift_t0_s": 20.0, "drift_time_s": 3620.0,
         "drift_compensation": 1, "stuck_on_frac": 0.0, "stuck_off_frac": 0.0, "read_noise_rel": 0.0},
        "PCMLikeNoiseModel (g_max 25 uS, g_min 0, read/1-f noise off) at t = 1 h after programming "
        "with global drift compensation; edgessm: the PCM programming polynomial's values at 0 and "
        "25 uS as sigma(G) (linear, exact at the two levels of ternary weights), drift exponent of a "
        "device at g_max (nu 0.049 +- 0.008), t0 = 20 s, analytic drift compensation"),
}


def compare(model, X, y, device: str = "reram_wan2022", instances: int = 20, log=None) -> dict:
    """Accuracy over `instances` device instances (seeds 0..n-1) on both simulators, and the
    weight error per level pooled over the instances. Returns a JSON-able dict."""
    from ..targets.crossbar.device import load_device
    kind, t_inf, comp, preset, overrides, note = DEVICES[device]
    noise = _noise_model(kind)
    weight_bits = int(((getattr(model, "checkpoint_meta", {}) or {}).get("hw") or {}).get("weight_bits", 5))
    cfg = load_device(preset, weight_bits=weight_bits, **overrides)
    model = copy.deepcopy(model).eval()
    res = {"device": device, "note": note, "instances": instances, "n": len(y),
           "float": accuracy(model, {k: v.weight for k, v in linear_layers(model).items()}, X, y)}
    for side in ("edgessm", "aihwkit"):
        accs, lv = [], {}
        for k in range(instances):
            W = edgessm_weights(model, cfg, k) if side == "edgessm" else \
                aihwkit_weights(model, noise, t_inf, k, comp)
            accs.append(accuracy(model, W, X, y))
            _merge(lv, level_errors(model, W))
            if log:
                log(f"{device} {side} instance {k}: {accs[-1]:.4f}")
        m = statistics.mean(accs)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        res[side] = {"mean": m, "std": sd, "se": sd / math.sqrt(len(accs)), "trials": accs,
                     "levels": _stats(lv)}
    e, a = res["edgessm"], res["aihwkit"]
    res["difference"] = e["mean"] - a["mean"]
    res["difference_se"] = math.sqrt(e["se"] ** 2 + a["se"] ** 2)
    return res
