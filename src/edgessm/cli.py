"""The edgessm command line.

Every command that prints figures takes --json and then prints one JSON object on
stdout. Errors print one message (no traceback) and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from .errors import EdgessmError
from .cli_common import emit, task_for


# ---- commands -----------------------------------------------------------------------
def cmd_train(args):
    from .train import load_config, train
    cfg = load_config(args.config)
    if args.set:
        from .resources import read_toml
        from .train.config import from_dict
        from .train.tracking import apply_sets
        cfg = from_dict(apply_sets(read_toml(args.config), args.set))
    if args.seed is not None:
        cfg.train.seed = args.seed
    if args.epochs is not None:
        cfg.train.epochs = args.epochs
    if args.device is not None:
        cfg.train.device = args.device
    if args.precision is not None:
        cfg.train.precision = args.precision
    if args.compile is not None:
        cfg.train.compile = args.compile
    out = args.out or f"runs/{cfg.data.task}"
    wrap = None
    if args.quant and args.hw:
        from .errors import ConfigError
        raise ConfigError("--quant and --hw are exclusive: --hw crossbar already quantizes to the device levels")
    if args.quant:
        from .cli_deploy import quant_wrap
        wrap = quant_wrap(args.quant, task=cfg.data.task)
    elif args.hw:
        import importlib

        from .targets import get
        get(args.hw)  # unknown target -> clear error
        hw_wrap = getattr(importlib.import_module(f"edgessm.targets.{args.hw}"), "hw_wrap", None)
        if hw_wrap is None:
            from .errors import ConfigError
            raise ConfigError(f"target {args.hw!r} has no hardware-aware training; use --hw crossbar")
        hw = dict(cfg.extra.get("hw", {}))  # the config's [hw] table, overridden by --hw-device/--hw-set
        device = args.hw_device or hw.pop("device", "default")
        hw.pop("device", None)
        from .cli_deploy import parse_sets
        wrap = hw_wrap(device, **{**hw, **parse_sets(args.hw_set)})
    elif "hw" in cfg.extra:
        from .errors import ConfigError
        raise ConfigError(f"{args.config} has an [hw] table: train it with --hw crossbar")
    import logging

    from .progress import enabled
    on_metrics = close = None
    if args.tensorboard:
        from .train.tracking import tensorboard
        on_metrics, close = tensorboard(out)
    try:
        result = train(cfg, out, resume=args.resume, max_minutes=args.max_minutes, init=args.init,
                       progress=enabled(), wrap=wrap, log=logging.getLogger("edgessm.train").info,
                       on_metrics=on_metrics)
    finally:
        if close is not None:
            close()
    emit(args, {"out": out, **result})


def _load_model(name):
    from . import io
    return io.load(name)


def cmd_models(args):
    from . import io
    rows = []
    for name, path in io.shipped_models().items():
        meta = io.read_meta(path)
        c = meta["config"]
        m = meta.get("metrics", {})
        # what `edgessm eval` measures: the checkpoint's own network on the test set. A model trained
        # through a hardware wrapper (--hw) records that run's figure apart (hw_test_accuracy).
        hw = "hw" in meta
        acc = m.get("projected_float_test_accuracy") if hw else m.get("test_accuracy")
        rows.append({"name": name, "preset": c.get("preset"), "task": meta.get("run", {}).get("data", {}).get("task"),
                     "d_model": c["d_model"], "d_state": c["d_state"], "n_layers": c["n_layers"],
                     "test_accuracy": acc, "test_n": m.get("test_n"),
                     "hw_test_accuracy": m.get("test_accuracy") if hw else None,
                     "quant": meta.get("quant", {}).get("name"),
                     "bytes": (path / io.WEIGHTS).stat().st_size})
    text = "\n".join(f"{r['name']:<16} {r['task'] or '?':<10} {r['preset']:<13} H={r['d_model']} "
                     f"N={r['d_state']} layers={r['n_layers']}  test accuracy "
                     + (f"{100 * r['test_accuracy']:.2f}% ({r['test_n']})" if r['test_accuracy'] is not None else "?")
                     + f"  {r['bytes'] / 1024:.0f} KiB" for r in rows) or "no shipped models"
    if rows:
        text = ("test accuracy: what `edgessm eval NAME` gives on the full test set (samples)\n" + text)
    emit(args, {"models": rows}, text)


def cmd_info(args):
    from . import io
    meta = io.read_meta(args.model)
    model = io.load(args.model)
    n = sum(p.numel() for p in model.parameters())
    info = {"path": meta["_path"], "config": meta["config"], "metrics": meta.get("metrics", {}),
            "parameters": n, "versions": meta.get("versions", {}), "quant": meta.get("quant")}
    emit(args, info)


def cmd_eval(args):
    import time

    import torch

    from .data import load_task
    from .train import evaluate
    model = _load_model(args.model)
    task = task_for(model, getattr(args, "task", None))
    from .io import trained_task_options
    ds = load_task(task, args.split, limit=args.limit, download=args.download,
                   **trained_task_options(model, task))
    if ds.info.d_input != model.config.d_input or ds.info.d_output != model.config.d_output:
        from .errors import ConfigError
        raise ConfigError(f"model {args.model} (d_input={model.config.d_input}, d_output="
                          f"{model.config.d_output}) does not fit task {task} (d_input="
                          f"{ds.info.d_input}, d_output={ds.info.d_output})")
    t0 = time.time()
    with torch.no_grad():
        from .progress import enabled
        r = evaluate(model, ds, args.batch_size, progress=enabled())
    out = {"model": str(args.model), "task": task, "split": args.split, "accuracy": r["accuracy"],
           "loss": r["loss"], "n": r["n"], "seconds": time.time() - t0}
    emit(args, out, f"{args.model} on {task} ({args.split}, {r['n']} samples): "
                     f"accuracy {100 * r['accuracy']:.2f}%  loss {r['loss']:.4f}")


def cmd_stream(args):
    import statistics

    from .data import load_task
    model = _load_model(args.model)
    task = task_for(model, getattr(args, "task", None))
    ds = load_task(task, "test", limit=max(args.index, 0) + 1, download=args.download)
    if args.index < 0 or args.index >= len(ds):
        from .errors import ConfigError
        raise ConfigError(f"--index {args.index} is out of range: {task} test has {len(ds)} samples")
    x, y = ds[args.index]
    from .bench.trace import stream_trace
    tr = stream_trace(model, x, int(y))
    L = x.shape[0]
    marks = sorted({max(0, round(L * f) - 1) for f in (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)})
    pred = tr["pred"].tolist()
    conf = tr["probs"].max(-1).values.tolist()
    correct_from = None
    for t in range(L - 1, -1, -1):
        if pred[t] != int(y):
            break
        correct_from = t
    out = {"model": str(args.model), "task": task, "index": args.index, "label": int(y),
           "prediction": pred[-1], "confidence": conf[-1], "tokens": L,
           "correct_from_token": correct_from,
           "us_per_token_median": 1e6 * statistics.median(tr["step_s"]),
           "trace": [{"token": t + 1, "prediction": pred[t], "confidence": conf[t]} for t in marks]}
    lines = [f"streaming {task} test sample {args.index} (label {int(y)}) through {args.model}, "
             f"{L} tokens, {out['us_per_token_median']:.0f} us/token (median)",
             f"{'token':>6} {'pred':>5} {'conf':>6}  confidence"]
    for r in out["trace"]:
        bar = "#" * int(round(30 * r["confidence"]))
        lines.append(f"{r['token']:>6} {r['prediction']:>5} {r['confidence']:>6.3f}  {bar}")
    lines.append(f"final: {pred[-1]} ({'correct' if pred[-1] == int(y) else 'wrong'}); "
                 f"right and stable from token {correct_from + 1 if correct_from is not None else '-'}")
    emit(args, out, "\n".join(lines))


def cmd_import_s4d(args):
    import torch

    from . import io
    from .errors import CheckpointError
    from .ssm.reference import from_reference_s4d
    src = args.checkpoint
    try:
        if src.endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(src)
        else:
            sd = torch.load(src, map_location="cpu", weights_only=True)  # restricted unpickler
    except FileNotFoundError:
        raise CheckpointError(f"{src} not found") from None
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read {src} as a state_dict ({type(e).__name__}: {e})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{src} is not a state_dict (a mapping of names to tensors); got "
                              f"{type(sd).__name__}")
    if args.prefix:
        sd = {k[len(args.prefix):]: v for k, v in sd.items() if k.startswith(args.prefix)}
    block = from_reference_s4d(sd)
    path = io.save_block(block, args.out)
    emit(args, {"out": str(path), "d_model": block.s4d.d_model, "d_state": block.s4d.d_state})


def cmd_bench(args):
    from .bench.stream import bench_stream
    if args.what != "stream":
        from .errors import ConfigError
        raise ConfigError(f"unknown benchmark {args.what!r}; available: stream")
    model = _load_model(args.model)
    from .options import check_batch_list
    batches = check_batch_list(args.batch)
    r = bench_stream(model, batches, args.tokens, threads=args.threads)
    r["model"] = str(args.model)
    lines = [f"{args.model}: {r['flops_per_token'] / 1e6:.3f} MFLOP/token, {args.threads} thread(s)",
             f"{'engine':<18} {'batch':>6} {'us/step':>10} {'us/token':>10} {'tokens/s':>12} {'GFLOP/s':>8}"]
    for name, e in r["engines"].items():
        lines.append(f"{name:<18} {e['batch']:>6} {e['us_per_step']:>10.1f} {e['us_per_token']:>10.2f} "
                     f"{e['tokens_per_s']:>12.0f} {e['gflop_per_s']:>8.2f}")
    emit(args, r, "\n".join(lines))


def _check_model_name(name):
    """A model argument that is neither a checkpoint directory nor a shipped model fails at once."""
    from . import io
    io.read_meta(name)


def cmd_report(args):
    _check_model_name(args.model)
    from .report import build_report
    path = build_report(args.out, args.model, args.task, None if args.full else args.limit)
    emit(args, {"report": str(path)}, f"report written to {path}")


def cmd_demo(args):
    from .demo import run_demo
    run_demo(args)


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, exit 2, like every other error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = _Parser(prog="edgessm", description="S4D models for token-by-token streaming "
                                "on CPUs, neuromorphic and in-memory-compute hardware")
    p.add_argument("--version", action="version", version=f"edgessm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("train", help="train a model from a TOML config")
    s.add_argument("config")
    s.add_argument("--out", help="run directory (default runs/TASK)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/last")
    s.add_argument("--seed", type=int)
    s.add_argument("--epochs", type=int)
    s.add_argument("--max-minutes", type=float, help="stop cleanly and save after this long")
    s.add_argument("--init", help="start from this checkpoint's weights and model config")
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

    s = sub.add_parser("models", help="list the models shipped with edgessm")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("info", help="show a checkpoint's configuration and metrics")
    s.add_argument("model", help="checkpoint directory or shipped model name")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("eval", help="accuracy of a model on a task's test (or val) split")
    s.add_argument("model", help="checkpoint directory or shipped model name")
    s.add_argument("--task", help="task name (default: the task it was trained on)")
    s.add_argument("--split", default="test", choices=["test", "val", "train"])
    s.add_argument("--limit", type=int, help="only the first N samples")
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--download", action="store_true", help="download missing data")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("stream", help="feed one test sample token by token")
    s.add_argument("model", help="checkpoint directory or shipped model name")
    s.add_argument("--task")
    s.add_argument("--index", type=int, default=0)
    s.add_argument("--download", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_stream)

    s = sub.add_parser("import-s4d", help="import a state-spaces/s4 S4D layer state_dict")
    s.add_argument("checkpoint", help=".pt (loaded with weights_only) or .safetensors")
    s.add_argument("out", help="output directory")
    s.add_argument("--prefix", default="", help="key prefix of the layer inside a larger state_dict")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_import_s4d)

    s = sub.add_parser("bench", help="measure streaming speed on this CPU (engines side by side)")
    s.add_argument("what", choices=["stream"])
    s.add_argument("model", help="checkpoint directory or shipped model name")
    s.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,8,64,1024")
    s.add_argument("--tokens", type=int, default=1000)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("report", help="write an HTML report with plots (measured on this machine)")
    s.add_argument("--out", default="report")
    s.add_argument("--model", default="smnist")
    s.add_argument("--task")
    s.add_argument("--limit", type=int, default=200, help="test samples per accuracy figure")
    s.add_argument("--full", action="store_true",
                   help="every accuracy on the full test set (overrides --limit; takes much longer)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("demo", help="the main job: shipped model, evaluated and streamed")
    s.add_argument("--limit", type=int, help="test samples to evaluate in float (default: all)")
    s.add_argument("--deploy-limit", type=int, default=500,
                   help="test samples run through the Loihi 2 integer engine (default 500)")
    s.add_argument("--trials", type=int, default=3, help="crossbar device instances (default 3)")
    s.add_argument("--calibrate", type=int, default=512, help="PTQ calibration samples for Loihi 2 (default 512)")
    s.add_argument("--report", default="report", help="directory of the report written at the end")
    s.add_argument("--no-report", action="store_true", help="skip the report")
    s.add_argument("--offline", action="store_true",
                   help="never download: data sets missing from the data root come from the embedded sample")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_demo)
    from .cli_deploy import add_commands
    add_commands(sub)
    from .export.cli import add_commands as add_export
    add_export(sub)
    from .cli_onnx import add_commands as add_onnx
    add_onnx(sub)
    from .cli_common import finish
    return finish(p)


def main(argv=None) -> int:
    from .cli_common import closed_pipe, setup
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:     # --help, --version, or a usage error already printed on one line
        return e.code if isinstance(e.code, int) else 2
    try:
        from .options import validate_args
        validate_args(args)     # every option against its rule, before any work
        setup(args)
        args.func(args)
        sys.stdout.flush()
    except EdgessmError as e:
        print(f"edgessm: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_pipe()
    except KeyboardInterrupt:
        print("edgessm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
