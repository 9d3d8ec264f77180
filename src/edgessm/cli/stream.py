"""``edgessm stream`` (one test sample token by token) and ``edgessm bench stream`` (streaming
speed of the engines on this CPU)."""
from __future__ import annotations

from .common import emit


def cmd_stream(args):
    from ..bench.trace import stream_test_sample
    out = stream_test_sample(str(args.model), args.task, args.index, download=args.download)
    task = out["task"]
    L, cf = out["tokens"], out["correct_from_token"]
    lines = [f"streaming {task} test sample {args.index} (label {out['label']}) through {args.model}, "
             f"{L} tokens, {out['us_per_token_median']:.0f} us/token (median)",
             f"{'token':>6} {'pred':>5} {'conf':>6}  confidence"]
    for r in out["trace"]:
        bar = "#" * int(round(30 * r["confidence"]))
        lines.append(f"{r['token']:>6} {r['prediction']:>5} {r['confidence']:>6.3f}  {bar}")
    lines.append(f"final: {out['prediction']} ({'correct' if out['prediction'] == out['label'] else 'wrong'}); "
                 f"right and stable from token {cf + 1 if cf is not None else '-'}")
    emit(args, out, "\n".join(lines))


def cmd_bench(args):
    from .. import io
    from ..bench.stream import bench_stream
    from ..errors import ConfigError
    from ..options import check_batch_list
    if args.what != "stream":
        raise ConfigError(f"unknown benchmark {args.what!r}; available: stream")
    model = io.load(args.model)
    batches = check_batch_list(args.batch)
    r = bench_stream(model, batches, args.tokens, threads=args.threads)
    r["model"] = str(args.model)
    lines = [f"{args.model}: {r['flops_per_token'] / 1e6:.3f} MFLOP/token, {args.threads} thread(s)",
             f"{'engine':<18} {'batch':>6} {'us/step':>10} {'us/token':>10} {'tokens/s':>12} {'GFLOP/s':>8}"]
    for name, e in r["engines"].items():
        lines.append(f"{name:<18} {e['batch']:>6} {e['us_per_step']:>10.1f} {e['us_per_token']:>10.2f} "
                     f"{e['tokens_per_s']:>12.0f} {e['gflop_per_s']:>8.2f}")
    emit(args, r, "\n".join(lines))


def add_stream(sub) -> None:
    s = sub.add_parser("stream", help="feed one test sample token by token")
    s.add_argument("model", help="checkpoint directory or shipped model name")
    s.add_argument("--task")
    s.add_argument("--index", type=int, default=0)
    s.add_argument("--download", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_stream)


def add_bench(sub) -> None:
    s = sub.add_parser("bench", help="measure streaming speed on this CPU (engines side by side)")
    s.add_argument("what", choices=["stream"])
    s.add_argument("model", help="checkpoint directory or shipped model name")
    s.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,8,64,1024")
    s.add_argument("--tokens", type=int, default=1000)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_bench)
