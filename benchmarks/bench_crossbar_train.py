"""Hardware-aware training for the crossbar target and export of the deployable model.

    python benchmarks/bench_crossbar_train.py --config configs/fsdd01_ternary.toml \
        --init runs/crossbar/fsdd01/best --out runs/crossbar/fsdd01_ternary \
        [--ship src/edgessm/models/fsdd01-ternary]

Equivalent to ``edgessm train CONFIG --hw crossbar --init MODEL`` once cli.py wires --hw:
``train(cfg, out, wrap=hw_wrap(device, **[hw]), init=MODEL)``. After training, the best
checkpoint (latent float weights) is wrapped again, its DAC/ADC ranges calibrated on the
training split, evaluated in software (quantized weights, converters, ideal devices) and
saved in the deployable form (projected weights + "hw" metadata) with save_hw.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--init", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--ship", help="also save the deployable model here")
    p.add_argument("--epochs", type=int)
    p.add_argument("--hw-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--pick", choices=["best", "last"], default="best",
                   help="checkpoint to export: best (first epoch with the best val accuracy) or last")
    p.add_argument("--no-train", action="store_true", help="only export an existing run")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from edgessm import io
    from edgessm.data import load_task
    from edgessm.targets.crossbar import hw_wrap, project, save_hw
    from edgessm.train import train
    from edgessm.train.config import load_config
    from edgessm.train.loop import evaluate
    cfg = load_config(a.config)
    if a.epochs:
        cfg.train.epochs = a.epochs
    hw = dict(cfg.extra.get("hw", {}))
    device = hw.pop("device", "default")
    for s in a.hw_set:
        k, v = s.split("=", 1)
        hw[k.strip()] = v.strip()
    t0 = time.time()
    if a.no_train:
        res = {"exported_from": os.path.join(a.out, a.pick)}
    else:
        res = train(cfg, a.out, wrap=hw_wrap(device, **hw), init=a.init, progress=False)
    best = io.load(os.path.join(a.out, a.pick))
    m = hw_wrap(device, **hw)(best)
    m.calibrate(load_task(cfg.data.task, "train", limit=m.hw.calibrate, **cfg.data.task_options()).x)
    m.eval()
    test = load_task(cfg.data.task, "test", **cfg.data.task_options())
    sw = evaluate(m, test)
    proj = evaluate(project(m), test)
    out = {"config": a.config, "init": a.init, "train": res, "checkpoint": a.pick, "software_accuracy": sw["accuracy"],
           "projected_float_accuracy": proj["accuracy"], "n": sw["n"], "hw": {k: str(v) for k, v in hw.items()},
           "minutes": (time.time() - t0) / 60}
    save_hw(m, os.path.join(a.out, f"deploy_{a.pick}"), metrics={"test_accuracy": sw["accuracy"], "test_n": sw["n"]},
            extra={"run": cfg.to_dict()})
    if a.ship:
        save_hw(m, a.ship, metrics={"test_accuracy": sw["accuracy"], "test_n": sw["n"],
                                    "projected_float_test_accuracy": proj["accuracy"]},
                extra={"run": cfg.to_dict()})
        out["shipped"] = a.ship
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
