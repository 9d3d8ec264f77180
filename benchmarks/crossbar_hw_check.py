"""Accuracy of a float checkpoint wrapped for hardware-aware crossbar training, before any
training: the model `edgessm train --hw crossbar --init CKPT` starts from, in eval mode, under
several device settings side by side (which part of the hardware breaks a model).

    python benchmarks/crossbar_hw_check.py CKPT --task smnist --limit 64 \
        --variant "weight_bits=3 ssm_bits=7" --variant "weight_bits=3 ssm_bits=7 adc_bits=12 dac_bits=12"

Each --variant is a list of crossbar device fields (`edgessm deploy --target crossbar --set`
names) on the default device, plus ``gain=layer`` for one state gain per layer (the largest of
the layer's per-state gains, as calibrated before the gains were per state) and ``cap_dA=X``
(every S4D mode of the float model made at least as fast as |dA| = X before wrapping, A's real
part moved, nothing retrained). Prints one JSON
line per variant: accuracy on the first --limit validation samples and the largest logit
magnitude; with --trace also, per S4D layer, the relative error (||y - y_float|| / ||y_float||)
of the layer's input and output against the float model on the same samples, and the RMS over
the layer's complex states of their largest |w| under one gain per layer (the share of the
converter range a typical state would use). --train-mode evaluates the wrapped model as a
training step's forward sees it (write noise drawn, seed 0) and adds the cross-entropy and the
number of converter saturations.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--task", required=True)
    ap.add_argument("--limit", type=int, default=64)
    ap.add_argument("--device", default="default", help="crossbar device preset or TOML")
    ap.add_argument("--variant", action="append", required=True, help='"field=value field=value ..."')
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trace", action="store_true", help="relative error of every S4D layer vs float")
    ap.add_argument("--train-mode", action="store_true", help="the training forward: write noise drawn")
    a = ap.parse_args(argv)
    import edgessm as es
    from edgessm import targets
    from edgessm.errors import ConfigError
    for v in a.variant:
        bad = [kv for kv in v.split() if "=" not in kv]
        if bad or not v.split():
            raise ConfigError(f"--variant {v!r}: expected field=value pairs separated by spaces")
    from edgessm.data import load_task
    torch.set_num_threads(a.threads)
    model = es.load(a.checkpoint)
    val = load_task(a.task, "val", limit=a.limit)
    ref = []
    hooks = [b.s4d.register_forward_hook(lambda mod, inp, out: ref.append((inp[0].detach(), out.detach())))
             for b in model.blocks]
    with torch.no_grad():
        acc = (model(val.x, mode="chunked").argmax(-1) == val.y).float().mean().item()   # block by block
    for h in hooks:
        h.remove()
    rec = {"variant": "float", "accuracy": acc}
    if a.trace:       # how close to 1 each layer's modes are (the memory the recurrence must hold)
        with torch.no_grad():
            rec["abs_dA_min_max"] = [[round(float(m), 4) for m in (d.min(), d.max())]
                                     for d in (b.s4d.discrete()[0].abs() for b in model.blocks)]
    print(json.dumps(rec), flush=True)
    T = targets.get("crossbar")
    rel = lambda x, r: round(float((x - r).norm() / r.norm().clamp(min=1e-30)), 4)   # noqa: E731
    for v in a.variant:
        fields = dict(kv.split("=", 1) for kv in v.split())
        gain = fields.pop("gain", "state")
        if gain not in ("state", "layer"):
            raise ConfigError(f"--variant {v!r}: gain must be 'state' or 'layer'")
        net = model
        if "cap_dA" in fields:
            net = _cap_modes(model, float(fields.pop("cap_dA")))
        hm = T.hw_wrap(a.device, T.config(**fields).overrides())(net)
        hm.train(a.train_mode)
        hm.saturations = 0
        torch.manual_seed(0)
        share = [round(float((g / g.max()).pow(2).mean().sqrt()), 4) for g in hm.rho]   # before gain=layer
        if gain == "layer":
            for i in range(hm.rho.shape[0]):
                hm.rho[i].fill_(float(hm.rho[i].max()))
        got, inner = [], hm._s4d
        hm._s4d = lambda i, u: got.append((u.detach(), inner(i, u))) or got[-1][1]
        with torch.no_grad():
            out = hm(val.x)
        rec = {"variant": v, "accuracy": (out.argmax(-1) == val.y).float().mean().item(),
               "max_abs_logit": out.abs().max().item()}
        if a.train_mode:
            rec.update(loss=torch.nn.functional.cross_entropy(out, val.y).item(), saturations=int(hm.saturations))
        if a.trace:
            rec["s4d_in_relerr"] = [rel(u, r[0]) for (u, _), r in zip(got, ref)]
            rec["s4d_out_relerr"] = [rel(y, r[1]) for (_, y), r in zip(got, ref)]
            rec["state_range_share"] = share
        print(json.dumps(rec), flush=True)
    return 0


def _cap_modes(model, cap: float):
    """A copy of `model` whose modes all have |dA| <= cap: -Re A raised to -ln(cap) / dt."""
    import copy
    import math
    from edgessm.errors import ConfigError
    if not 0 < cap < 1:
        raise ConfigError(f"cap_dA = {cap}: expected a value in (0, 1)")
    m = copy.deepcopy(model)
    with torch.no_grad():
        for b in m.blocks:
            s = b.s4d
            need = -math.log(cap) / torch.exp(s.log_dt).unsqueeze(-1)
            s.log_A_real.copy_(torch.log(torch.maximum(torch.exp(s.log_A_real), need)))
    return m


if __name__ == "__main__":
    sys.path.insert(0, __import__("os").path.dirname(__file__))
    from common import run_main
    run_main(main)
