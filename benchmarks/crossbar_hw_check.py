"""Accuracy of a float checkpoint wrapped for hardware-aware crossbar training, before any
training: the model `edgessm train --hw crossbar --init CKPT` starts from, in eval mode, under
several device settings side by side (which part of the hardware breaks a model).

    python benchmarks/crossbar_hw_check.py CKPT --task smnist --limit 64 \
        --variant "weight_bits=3 ssm_bits=7" --variant "weight_bits=3 ssm_bits=7 adc_bits=12 dac_bits=12"

Each --variant is a list of crossbar device fields (`edgessm deploy --target crossbar --set`
names) on the default device. Prints one JSON line per variant: accuracy on the first --limit
validation samples and the largest logit magnitude.
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
    with torch.no_grad():
        acc = (model(val.x).argmax(-1) == val.y).float().mean().item()
    print(json.dumps({"variant": "float", "accuracy": acc}), flush=True)
    T = targets.get("crossbar")
    for v in a.variant:
        fields = dict(kv.split("=", 1) for kv in v.split())
        hm = T.hw_wrap(a.device, T.config(**fields).overrides())(model)
        hm.eval()
        with torch.no_grad():
            out = hm(val.x)
        print(json.dumps({"variant": v, "accuracy": (out.argmax(-1) == val.y).float().mean().item(),
                          "max_abs_logit": out.abs().max().item()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, __import__("os").path.dirname(__file__))
    from common import run_main
    run_main(main)
