"""``edgessm quantize`` (PTQ) and ``edgessm deploy`` (run a model on a target).

    edgessm quantize MODEL --spec loihi2 --calibrate 512 --out DIR [--task T] [--limit N] [--json]
    edgessm deploy MODEL --target loihi2 --task T [--limit N] [--check] [--trials K]
                   [--set KEY=VALUE ...] [--spec SPEC] [--calibrate N] [--json]

``deploy`` parses the target's typed config once here (``config_class.from_sets`` of the
--set pairs, then ``--spec`` into the field the target declares for it) and runs the library
pipeline (:func:`edgessm.deploy.deploy`); it prints the run record.
"""
from __future__ import annotations

from .common import emit


# ---- quantize ---------------------------------------------------------------------------------
def cmd_quantize(args):
    import torch

    from ..deploy import Checkpoint, quantize_checkpoint
    if args.threads:
        torch.set_num_threads(args.threads)
    res = quantize_checkpoint(Checkpoint.load(args.model), args.spec, args.out, task=args.task,
                              calibrate=args.calibrate, limit=args.limit, batch_size=args.batch_size)
    lines = [f"quantized {args.model} with spec {res['spec']} ({args.calibrate} calibration samples of "
             f"{res['task']})", f"saved to {args.out}"]
    if "accuracy" in res:
        lines.append(f"accuracy on {res['n']} test samples: float {res['float_accuracy']:.4f}, "
                     f"quantized {res['accuracy']:.4f}; overflows {res['overflows']}")
    emit(args, res, "\n".join(lines))


# ---- deploy -----------------------------------------------------------------------------------
def cmd_deploy(args):
    import torch

    from .. import targets
    from ..deploy import Checkpoint, deploy
    if args.threads:
        torch.set_num_threads(args.threads)
    tgt = targets.get(args.target)
    cfg = tgt.config_class.from_sets(args.set).with_spec(args.spec)
    run = deploy(Checkpoint.load(args.model), args.target, cfg, task=args.task, limit=args.limit,
                 check=args.check, trials=args.trials, calibrate=args.calibrate, batch_size=args.batch_size)
    res = run.to_dict()
    emit(args, res, _table(res))


def _table(r: dict) -> str:
    acc = r["accuracy"]["mean"] if isinstance(r["accuracy"], dict) else r["accuracy"]
    rows = [("model", r["model"]), ("target", r["target"]), ("task", f"{r['task']} ({r['n']} test samples)"),
            ("accuracy", f"{acc:.4f}" + (f" +- {r['accuracy_std']:.4f} over {r['trials']} trials"
                                                     if "accuracy_std" in r else ""))]
    if "spec" in r:
        rows.append(("spec", r["spec"]))
    if "mismatches" in r:
        rows.append(("mismatches", f"{r['mismatches']} of {r['compared']} integer outputs "
                                   f"({r['samples_with_mismatch']} samples)"))
    if "cores" in r:
        rows.append(("cores / chips", f"{r['cores']} / {r.get('chips', '?')}"))
    rows += [("energy per token", f"{r['energy_per_token_j'] * 1e6:.3f} uJ"),
             ("latency per token", f"{r['latency_per_token_s'] * 1e6:.2f} us"),
             ("throughput", f"{r['throughput_tokens_per_s']:.1f} tokens/s"),
             ("power", f"{r['power_w'] * 1e3:.2f} mW")]
    if "cost_pipelined" in r:
        p = r["cost_pipelined"]
        rows.append(("pipelined", f"{p['energy_per_token_j'] * 1e6:.3f} uJ/token, "
                                  f"{p['throughput_tokens_per_s']:.1f} tokens/s, {p['power_w'] * 1e3:.2f} mW"))
    if r.get("spike_sparsity") is not None:
        rows.append(("spike sparsity", f"{r['spike_sparsity']:.3f}"))
    if r.get("overflows") is not None:
        rows.append(("overflows", ", ".join(f"{k} {v}" for k, v in r["overflows"].items())))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def add_commands(sub) -> None:
    """Add `quantize` and `deploy` to an argparse subparsers object."""
    q = sub.add_parser("quantize", help="post-training quantization (PTQ) of a model")
    q.add_argument("model", help="checkpoint directory or shipped model name")
    q.add_argument("--spec", default="loihi2", help="preset (loihi2, w4, ternary, binary) or TOML file")
    q.add_argument("--calibrate", type=int, default=512, help="calibration samples (training split)")
    q.add_argument("--task", help="task of the calibration data (default: the checkpoint's)")
    q.add_argument("--out", required=True, help="directory of the quantized model")
    q.add_argument("--limit", type=int, help="also evaluate float and quantized on N test samples")
    q.add_argument("--batch-size", type=int, default=256)
    q.add_argument("--threads", type=int)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_quantize)

    d = sub.add_parser("deploy", help="run a model token by token on a target (loihi2, fixed, ...)")
    d.add_argument("model", help="checkpoint directory or shipped model name")
    d.add_argument("--target", default="loihi2")
    d.add_argument("--task", help="task (default: the checkpoint's)")
    d.add_argument("--limit", type=int, help="first N test samples (default: all)")
    d.add_argument("--check", action="store_true",
                   help="compare with the quantized PyTorch model integer for integer")
    d.add_argument("--trials", type=int, default=1, help="device instances (analog targets)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a target config field")
    d.add_argument("--spec", help="on fixed/loihi2 a quantization spec (default: the model's, or loihi2 for "
                   "float models); on crossbar a device preset or TOML (default: the model's device)")
    d.add_argument("--calibrate", type=int, default=512, help="PTQ calibration samples for float models")
    d.add_argument("--batch-size", type=int, default=100)
    d.add_argument("--threads", type=int)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_deploy)
