"""``edgessm train``: a run config (TOML) trained, optionally quantization- or hardware-aware."""
from __future__ import annotations

from .common import emit


def cmd_train(args):
    import logging

    from ..progress import enabled
    from ..train import train
    from ..train.prepare import run_config, training_wrap
    cfg = run_config(args.config, args.set, seed=args.seed, epochs=args.epochs, device=args.device,
                     precision=args.precision, compile=args.compile)
    out = args.out or f"runs/{cfg.data.task}"
    wrap = training_wrap(cfg, args.config, quant=args.quant, hw=args.hw, hw_device=args.hw_device,
                         hw_sets=args.hw_set)
    on_metrics = close = None
    if args.tensorboard:
        from ..train.tracking import tensorboard
        on_metrics, close = tensorboard(out)
    try:
        result = train(cfg, out, resume=args.resume, max_minutes=args.max_minutes, init=args.init,
                       progress=enabled(), wrap=wrap, log=logging.getLogger("edgessm.train").info,
                       on_metrics=on_metrics)
    finally:
        if close is not None:
            close()
    emit(args, {"out": out, **result})


def add_train(sub) -> None:
    s = sub.add_parser("train", help="train a model from a TOML config")
    s.add_argument("config")
    s.add_argument("--out", help="run directory (default runs/TASK)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/last")
    s.add_argument("--seed", type=int)
    s.add_argument("--epochs", type=int)
    s.add_argument("--max-minutes", type=float, help="stop cleanly and save after this long")
    s.add_argument("--init", help="start from this checkpoint's weights and model config ([model] "
                                  "may change its readout and dropout (tie_dropout too); other fields must match)")
    s.add_argument("--quant", help="quantization-aware training with this spec (preset name or TOML)")
    s.add_argument("--hw", help="hardware-aware training for this target (crossbar)")
    s.add_argument("--hw-device", help="device preset for --hw (default: the config's [hw] device, else 'default')")
    s.add_argument("--hw-set", action="append", metavar="KEY=VALUE", help="override a device field")
    s.add_argument("--device", help="auto (CUDA when present, else CPU), cpu, cuda "
                   "or cuda:N (default: the config's [train] device, else auto)")
    s.add_argument("--precision", choices=["fp32", "bf16-mixed", "fp16-mixed"],
                   help="numeric precision of the step (default: the config's, else fp32); "
                   "fp16-mixed needs CUDA")
    s.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="torch.compile the training step (default: the config's [train] compile, else off: "
                   "on a 2-core CPU the eager step measured as fast; see benchmarks/RESULTS.md)")
    s.add_argument("--no-compile", dest="compile", action="store_false", help="train eagerly")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config field, e.g. train.lr=0.003 or model.d_state=32 (repeatable)")
    s.add_argument("--tensorboard", action="store_true",
                   help="also log the training curves to OUT/tensorboard (needs the tensorboard extra)")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_train)
