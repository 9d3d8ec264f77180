"""Command line: ``edgessm quantize`` (PTQ) and ``edgessm deploy`` (run a model on a target).

    edgessm quantize MODEL --spec loihi2 --calibrate 512 --out DIR [--task T] [--limit N] [--json]
    edgessm deploy MODEL --target loihi2 --task T [--limit N] [--check] [--trials K]
                   [--set KEY=VALUE ...] [--spec SPEC] [--calibrate N] [--json]

``deploy`` is generic over targets: ``targets.get(name).compile(model, spec, **options)``
where options are the ``--set`` pairs (values as strings; the target converts them and
rejects unknown keys) plus ``calibration=X`` (training inputs for PTQ) when the target's
``compile`` has a ``calibration`` parameter and the model is not quantized. ``--trials K``
compiles K device instances (``seed=0..K-1``) for targets whose class sets
``stochastic = True`` (analog); other targets run once.

cli.py wires these in with ``add_commands`` and, for ``train --quant SPEC``,
``wrap=quant_wrap(args.quant, task=cfg.data.task)``. :func:`deploy` is the same run as a
function (the demo and the report call it).
"""
from __future__ import annotations

import inspect
import time
from typing import Callable

from .cli_common import emit, task_for
from .errors import ConfigError


def quant_wrap(spec_name_or_path, task: str | None = None, calibrate: int = 256) -> Callable:
    """`wrap` for edgessm.train.train: float model -> quantization-aware model (QAT/QAFT).

    Calibrated on the first `calibrate` training samples of `task` (or of the task in the
    checkpoint's run config, or, failing both, on the first training batch)."""
    from .quant import qat_wrap
    return qat_wrap(spec_name_or_path, task=task, n=calibrate)


def parse_sets(pairs) -> dict:
    """--set / --hw-set KEY=VALUE pairs -> {key: value string} (dashes in keys become underscores)."""
    out = {}
    for s in pairs or []:
        if "=" not in s:
            raise ConfigError(f"--set/--hw-set takes KEY=VALUE, got {s!r}")
        k, v = s.split("=", 1)
        k = k.strip().replace("-", "_")
        if not k:
            raise ConfigError(f"--set/--hw-set takes KEY=VALUE, got {s!r}")
        out[k] = v.strip()
    return out


# ---- quantize ---------------------------------------------------------------------------------
def cmd_quantize(args):
    import torch
    from . import io
    from .data import load_task
    from .quant import quantize
    from .quant.spec import QuantSpec
    if args.calibrate < 1:
        raise ConfigError(f"--calibrate must be >= 1, got {args.calibrate}")
    torch.set_num_threads(args.threads) if args.threads else None
    model = io.load(args.model)
    task = task_for(model, args.task)
    spec = QuantSpec.load(args.spec)
    t0 = time.time()
    X = load_task(task, "train", limit=args.calibrate).x
    q = quantize(model, spec, calibration=X, n=args.calibrate)
    res = {"out": str(args.out), "spec": spec.name, "task": task, "calibrate": args.calibrate,
           "exponents": {"input": int(q.exp_in), "encoder": int(q.exp_enc),
                         "ssm_out": q.exp_y.tolist(), "mixing": q.exp_z.tolist(),
                         "state": q.exp_x.tolist(), "logits": int(q.exp_out)},
           "compile_overflows": q.integer_network().compile_overflows}
    if args.limit:
        from .train.loop import evaluate
        te = load_task(task, "test", limit=args.limit)
        fl = evaluate(model, te, args.batch_size)
        q.reset_overflows()
        qa = evaluate(q, te, args.batch_size)
        res.update(float_accuracy=fl["accuracy"], accuracy=qa["accuracy"], n=qa["n"],
                   overflows=dict(q.overflows))
    run = (getattr(model, "checkpoint_meta", {}) or {}).get("run")
    metrics = {"ptq": {k: v for k, v in res.items() if k != "out"}}
    io.save(q, args.out, metrics=metrics, extra={"run": run} if run else None)
    res["seconds"] = time.time() - t0
    lines = [f"quantized {args.model} with spec {spec.name} ({args.calibrate} calibration samples of {task})",
             f"saved to {args.out}"]
    if "accuracy" in res:
        lines.append(f"accuracy on {res['n']} test samples: float {res['float_accuracy']:.4f}, "
                     f"quantized {res['accuracy']:.4f}; overflows {res['overflows']}")
    emit(args, res, "\n".join(lines))


# ---- deploy -----------------------------------------------------------------------------------
def _run(program, X, y, batch_size: int, check: bool, desc: str | None = None) -> dict:
    """Accuracy (prediction after the last token) and, with check, integer mismatches."""
    if check and not hasattr(program, "check"):
        raise ConfigError(f"target {program.target!r} has no reference to check against "
                          f"(--check needs a bit-exact target such as fixed or loihi2)")
    from .progress import bar
    n = X.shape[0]
    correct = mism = compared = bad_samples = 0
    pb = bar(total=n, desc=desc or program.target, unit="seq")
    for s in range(0, n, batch_size):
        pb.update(min(batch_size, n - s))
        xb, yb = X[s:s + batch_size], y[s:s + batch_size]
        if check:
            r = program.check(xb, batch_size=batch_size, labels=yb)
            correct += r["correct"]
            mism += r["mismatches"]
            compared += r["compared"]
            bad_samples += r["samples_with_mismatch"]
        else:
            Y = program.run(xb)
            correct += int((Y[:, -1].argmax(-1) == yb).sum())
    pb.close()
    out = {"accuracy": correct / max(n, 1), "n": n}
    if check:
        out.update(mismatches=mism, compared=compared, samples_with_mismatch=bad_samples)
    return out


def deploy(model, target: str = "loihi2", task: str | None = None, limit: int | None = None,
           check: bool = False, trials: int = 1, sets: dict | None = None, spec=None,
           calibrate: int = 512, batch_size: int = 100, name: str | None = None) -> dict:
    """Run test samples of `task` token by token through `model` compiled for `target`.

    model: a checkpoint path, a shipped name or a loaded model. Returns the figures
    `edgessm deploy --json` prints (accuracy, resources, cost per token, engine stats)."""
    from . import io, targets
    from .data import load_task
    from .quant import QuantSequenceModel
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    tgt = targets.get(target)
    options = dict(sets or {})
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        name = name or str(model)
        model = io.load(model)
    task = task_for(model, task)
    split_options = io.trained_task_options(model, task)   # e.g. a held-out speaker
    test = load_task(task, "test", limit=limit, **split_options)
    params = inspect.signature(tgt.compile).parameters
    needs_cal = not isinstance(model, QuantSequenceModel) or spec is not None
    if "calibration" in params and needs_cal and target != "cpu":
        options["calibration"] = load_task(task, "train", limit=calibrate, **split_options).x
    stochastic = getattr(tgt, "stochastic", False)
    trials = trials if stochastic else 1
    results, program = [], None
    t0 = time.time()
    for k in range(trials):
        opts = dict(options)
        if stochastic:
            opts.setdefault("seed", str(k))
        program = tgt.compile(model, spec, **opts)
        program.reset_stats()
        results.append(_run(program, test.x, test.y, batch_size, check,
                            desc=f"{target} {k + 1}/{trials}" if trials > 1 else target))
    wall = time.time() - t0
    accs = [r["accuracy"] for r in results]
    res = {"model": name or "<model>", "target": target, "task": task, "n": results[0]["n"],
           "accuracy": sum(accs) / len(accs)}
    if trials > 1:
        m = res["accuracy"]
        res.update(trials=trials, accuracy_trials=accs,
                   accuracy_std=(sum((a - m) ** 2 for a in accs) / (trials - 1)) ** 0.5)
    if stochastic:   # analog targets: {"mean", "std"} over device instances
        res["accuracy"] = {"mean": res["accuracy"], "std": res.get("accuracy_std", 0.0), "trials": accs}
    if check:
        res["mismatches"] = sum(r["mismatches"] for r in results)
        res["compared"] = sum(r["compared"] for r in results)
        res["samples_with_mismatch"] = sum(r["samples_with_mismatch"] for r in results)
    qspec = getattr(getattr(program, "model", None), "spec", None)
    if qspec is not None:
        res["spec"] = qspec.name
    resources = program.resources()
    res["resources"] = resources
    for key in ("cores", "chips"):
        if key in resources:
            res[key] = resources[key]
    cost = program.cost(tokens=test.x.shape[1])
    res.update(energy_per_token_j=cost.energy_per_token_j, latency_per_token_s=cost.latency_per_token_s,
               throughput_tokens_per_s=cost.throughput_tokens_per_s, power_w=cost.power_w,
               cost=cost.to_dict())
    try:
        res["cost_pipelined"] = program.cost(tokens=test.x.shape[1], mode="pipelined").to_dict()
    except TypeError:
        pass
    st = program.stats()
    if st:
        res["spike_sparsity"] = st.get("spike_sparsity")
        res["overflows"] = st.get("overflows")
        res["stats"] = {k: v for k, v in st.items() if k not in ("messages", "synops")}
    res["wall_s"] = wall
    return res


def cmd_deploy(args):
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    res = deploy(args.model, args.target, args.task, args.limit, args.check, args.trials,
                 parse_sets(args.set), args.spec, args.calibrate, args.batch_size, name=str(args.model))
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
    d.add_argument("--spec", help="quantization spec (default: the model's, or loihi2 for float models)")
    d.add_argument("--calibrate", type=int, default=512, help="PTQ calibration samples for float models")
    d.add_argument("--batch-size", type=int, default=100)
    d.add_argument("--threads", type=int)
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_deploy)
