"""The training loop: AdamW (SSM parameters in their own group), cosine schedule with
warmup, gradient clipping, a checkpoint every epoch, resume, a time budget, metrics as
JSON lines, and DistributedDataParallel under torchrun (gloo on CPU, nccl on GPU, one process
per GPU). The step runs on `[train] device`, in `precision`, eagerly or, with `compile = true`,
compiled (see ``accel``).

Output directory layout::

    OUT/last/      model (weights.safetensors, model.json) + trainer.safetensors/json: resumable
                   (each checkpoint directory is replaced as a whole: see train/checkpoint.py)
    OUT/best/      the model with the best validation accuracy, test metrics in model.json
    OUT/metrics.jsonl
"""
from __future__ import annotations

import json
from functools import partial
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import io
from ..data import load_task
from ..errors import CheckpointError
from ..fields import json_text
from ..ssm import fftconv
from ..ssm.network import SequenceModel
from . import accel
from .checkpoint import load_trainer, recover_dir, trim_metrics, write_checkpoint
from .config import RunConfig
from .ema import WeightEMA


# ---- distributed --------------------------------------------------------------------
def dist_info() -> tuple[int, int]:
    """(rank, world size) from the torchrun environment; (0, 1) without it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _init_dist(world: int, device: torch.device):
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")


# ---- evaluation ---------------------------------------------------------------------
# evaluations of at least this many tokens (samples x length) run a quantized model's integer
# network on the integer engine's C backend instead of the model's torch int64 forward: the same
# integers (tests/test_quant.py), 7.7-9.8x faster on d_model-128 psMNIST and sCIFAR models. The
# network's C code is compiled once (about 1.2 s, then found in the build cache), about what the
# torch forward spends on 3,000 such tokens: from 16,384 tokens (16 sCIFAR images, 21 psMNIST
# digits) on the engine is the faster way (benchmarks/RESULTS.md, "Evaluating a quantized
# model"). The overflow counts added to the model's are the engine's, whose readout runs at every
# token (the model's forward runs it at the last token only).
ENGINE_MIN_TOKENS = 1 << 14


def _exact_integer(model: nn.Module) -> bool:
    """Whether `model` is a quantized model evaluating its integer network (eval mode,
    ``exact_eval``)."""
    from ..quant import QuantSequenceModel
    return isinstance(model, QuantSequenceModel) and model.exact_eval and not model.training


def _integer_engine(model: nn.Module, dataset, dev: torch.device):
    """The integer engine (C backend) for `model` when it evaluates its integer network
    (``_exact_integer``) on the CPU over at least ENGINE_MIN_TOKENS tokens, else None (then the
    model's own integer forward runs)."""
    if not (_exact_integer(model) and dev.type == "cpu"
            and dataset.x.dim() == 3 and dataset.x.shape[0] * dataset.x.shape[1] >= ENGINE_MIN_TOKENS):
        return None
    from ..targets.fixed.engine import Engine
    eng = Engine(model.integer_network(), backend="auto")       # "auto": numpy, with a warning, without a compiler
    return eng if eng.backend == "c" else None


def _engine_logits(eng, x: torch.Tensor) -> torch.Tensor:
    """The logits after the last token of the integer network on the engine, as the model's
    eval forward gives them (the input encoded, the output mantissas, or a mean readout's mean
    of them, scaled by 2^out_exp), in float64 as the deployment's readout: a mean readout's
    sums of 1,024 tokens carry more than float32's 24 bits, and rounding them could tie two
    classes and change the argmax."""
    from ..quant.fixedpoint import quantize_input_np
    from ..quant.model import final_logits
    net = eng.net
    xm, o = quantize_input_np(x.numpy(), net.in_exp, net.in_bits)
    eng._over("input", "input", o)
    return final_logits(torch.from_numpy(eng.run_int(xm)[0]), net.readout, int(net.out_exp))


@torch.no_grad()
def evaluate(model: nn.Module, dataset, batch_size: int = 256, progress: bool = False) -> dict:
    """Accuracy and mean cross-entropy of `model` on a SequenceDataset (batches are moved to the
    model's device). A quantized model in eval mode runs its integer network, over a large
    dataset on the integer engine's C backend (``ENGINE_MIN_TOKENS``)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    eng = _integer_engine(model, dataset, dev)
    exact = _exact_integer(model)
    correct, loss_sum, n = 0, 0.0, 0
    it = range(0, len(dataset), batch_size)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="eval", unit="batch", leave=False, file=sys.stderr)
    for s in it:
        x, y = dataset.x[s:s + batch_size].to(dev), dataset.y[s:s + batch_size].to(dev)
        logits = _engine_logits(eng, x) if eng is not None else model.exact_logits(x) if exact else model(x)
        # the loss in float32, as the model's forward gives it; the argmax on the float64 logits
        # of the integer network (the engine's or the model's)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(-1) == y).sum().item()
        n += len(y)
    if eng is not None:    # the engine's counts: its readout runs (and is counted) at every token
        for kind, count in eng.overflows.items():
            model.overflows[kind] += count
    model.train(was_training)
    return {"accuracy": correct / max(n, 1), "loss": loss_sum / max(n, 1), "n": n}


# ---- optimizer ----------------------------------------------------------------------
def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    t = cfg.train
    ssm_ids = {id(p) for p in model.ssm_parameters()} if hasattr(model, "ssm_parameters") else set()
    ssm = [p for p in model.parameters() if id(p) in ssm_ids and p.requires_grad]
    no_decay = [p for n, p in model.named_parameters()
                if id(p) not in ssm_ids and p.requires_grad and (p.dim() < 2 or "norm" in n)]
    nd_ids = {id(p) for p in no_decay}
    rest = [p for p in model.parameters() if id(p) not in ssm_ids and id(p) not in nd_ids
            and p.requires_grad]
    groups = [{"params": rest, "lr": t.lr, "weight_decay": t.weight_decay, "base_lr": t.lr},
              {"params": no_decay, "lr": t.lr, "weight_decay": 0.0, "base_lr": t.lr},
              {"params": ssm, "lr": t.ssm_lr, "weight_decay": 0.0, "base_lr": t.ssm_lr}]
    return torch.optim.AdamW([g for g in groups if g["params"]])


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup then cosine decay to zero."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ---- the loop -----------------------------------------------------------------------
def train(cfg: RunConfig, out_dir, *, resume: bool = False, max_minutes: float | None = None,
          init: str | None = None, progress: bool = True,
          wrap: Callable[[SequenceModel], SequenceModel] | None = None,
          log: Callable[[str], None] | None = None,
          on_metrics: Callable[[dict], None] | None = None) -> dict:
    """Train per `cfg`, writing checkpoints and metrics under `out_dir`.

    init: a checkpoint (path or shipped name) whose weights and model config start the run
    (``RunConfig.warm_start``: [model] may change its readout and dropout (and its tying), nothing else).
    wrap: turns the float model into the model actually trained (e.g. quantization-aware).
    Returns the final metrics (test accuracy of the best model, or {"stopped": True, ...}).
    SIGTERM (in the main thread) stops the run like the time budget: after the current step,
    with a resumable checkpoint in OUT/last.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return _train(cfg, out_dir, resume, max_minutes, init, progress, wrap, log, stop, on_metrics)
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return _train(cfg, out_dir, resume, max_minutes, init, progress, wrap, log, stop, on_metrics)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train(cfg, out_dir, resume, max_minutes, init, progress, wrap, log, stop, on_metrics=None) -> dict:
    rank, world = dist_info()
    t = cfg.train
    device = accel.resolve_device(t.device, int(os.environ.get("LOCAL_RANK", 0)))
    accel.check_precision_on(t.precision, device)
    fftconv.check_choice()
    _init_dist(world, device)
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if rank != 0:
        log = lambda s: None  # noqa: E731
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.batch_size % world:
        raise CheckpointError(f"batch_size {t.batch_size} must be divisible by the {world} processes")
    out = Path(out_dir)
    d = cfg.data
    kw = dict(val_fraction=d.val_fraction, seed=0, **d.task_options())
    train_ds = load_task(d.task, "train", limit=d.limit_train or None, augment=d.augment(), **kw)
    val_ds = load_task(d.task, "val", limit=d.limit_val or None, **kw)
    info = train_ds.info

    torch.manual_seed(t.seed)
    if init is not None:
        model = cfg.warm_start(io.load(init))      # [model] may change the readout and dropout
        model.train()
    else:
        model = SequenceModel(cfg.model_config(info.d_input, info.d_output))
    if wrap is not None:
        model = wrap(model)
    model.to(device)
    opt = make_optimizer(model, cfg)
    ema = WeightEMA(model, t.ema) if t.ema > 0 else None
    steps_per_epoch = len(train_ds) // t.batch_size
    if steps_per_epoch == 0:
        raise CheckpointError(f"train split has {len(train_ds)} samples, fewer than one batch of {t.batch_size}")
    total = steps_per_epoch * t.epochs
    warmup = int(t.warmup_epochs * steps_per_epoch)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_val": -1.0, "elapsed_s": 0.0}
    last = out / "last"
    if resume:
        if rank == 0:
            recover_dir(last)
            recover_dir(out / "best")
        if world > 1:
            torch.distributed.barrier()
        if not (last / "trainer.json").is_file():
            raise CheckpointError(f"nothing to resume in {out}: {last}/trainer.json is missing")
        io.load(last, model)
        model.train()
        saved = load_trainer(last, opt)
        averaged = saved.pop("ema", None)
        if ema is not None:
            ema.load(averaged, last)
        state.update(saved)
        init = init or io.read_meta(last).get("init_from")   # a warm-started run keeps its origin
        log(f"resumed from {last}: epoch {state['epoch']}, step {state['step_in_epoch']}")
    if rank == 0:   # a fresh run starts its metrics over; a resumed one drops what it will redo
        trim_metrics(out / "metrics.jsonl", state["epoch"])
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    # quantization- and hardware-aware wrappers branch on their calibration state and
    # exponents at run time: they run eagerly
    fwd = accel.Compiled(ddp, enabled=t.compile and wrap is None, log=log)
    scaler = accel.grad_scaler(device, t.precision)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    n_params = sum(p.numel() for p in model.parameters())
    log(f"task {d.task}: {len(train_ds)} train / {len(val_ds)} val, L={info.seq_len}; "
        f"model {model.config.preset} H={model.config.d_model} N={model.config.d_state} "
        f"layers={model.config.n_layers}, {n_params} parameters; {world} process(es), "
        f"{torch.get_num_threads()} threads each; device {device}, {t.precision}, "
        f"{'compiled' if fwd.enabled else 'eager'}"
        f"{f', FFTs by {fftconv.describe()}' if device.type == 'cpu' else ''}")

    # what every checkpoint of the run records: its config and, when warm-started, where from
    run_meta = {"run": cfg.to_dict(), **({"init_from": str(init)} if init is not None else {})}

    def checkpoint(name: str, metrics: dict, trainer: bool = False):
        """OUT/name: the trained weights with the trainer state (`trainer`: OUT/last), else the
        weights that are evaluated (the average under ``[train] ema``)."""
        if rank == 0:
            m = model if trainer or ema is None else ema.model
            write_checkpoint(out / name, partial(io.save, m, metrics=metrics, extra=run_meta),
                             opt if trainer else None, state, ema.state() if trainer and ema is not None else None)

    def write_metrics(rec: dict):
        if rank == 0:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json_text(rec) + "\n")
            if on_metrics is not None:       # e.g. TensorBoard (edgessm.train.tracking)
                on_metrics(rec)

    start = time.time() - state["elapsed_s"]
    deadline = time.time() + 60 * max_minutes if max_minutes else None
    local = t.batch_size // world
    first_step_s = None
    for epoch in range(state["epoch"], t.epochs):
        g = torch.Generator().manual_seed(t.seed * 100003 + epoch)
        perm = torch.randperm(len(train_ds), generator=g)
        model.train()
        loss_sum, correct, seen, t0, before = 0.0, 0, 0, time.time(), 0.0
        first = state["step_in_epoch"] if epoch == state["epoch"] else 0
        if first:   # resuming inside this epoch: its running sums and training time so far
            loss_sum, correct, seen, *rest = state.get("partial_sums", (0.0, 0, 0))
            before = rest[0] if rest else 0.0
        bar = None
        if progress and rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{t.epochs}",
                       unit="batch", file=sys.stderr, dynamic_ncols=True,
                       mininterval=0.5 if sys.stderr.isatty() else 30)
        for step in range(first, steps_per_epoch):
            idx = perm[step * t.batch_size:(step + 1) * t.batch_size][rank * local:(rank + 1) * local]
            x = train_ds.batch(idx, (t.seed, epoch, step, rank)).to(device, non_blocking=True)
            y = train_ds.y[idx].to(device, non_blocking=True)
            mix = None
            if t.mixup > 0:
                x, y2, lam = mix_batch(x, y, t.mixup, (t.seed, epoch, step, rank))
                mix = (y2, lam)
            f = lr_factor(state["global_step"], total, warmup)
            for grp in opt.param_groups:
                grp["lr"] = grp["base_lr"] * f
            t_step = time.perf_counter()
            logits, loss = _step(fwd, model, opt, scaler, x, y, device, t, mix)
            if ema is not None:
                ema.update(model, state["global_step"])
            if first_step_s is None:
                first_step_s = time.perf_counter() - t_step
                if fwd.enabled:
                    log(f"first step {first_step_s:.1f} s (includes compilation"
                        f"{'' if fwd.compiled else ', which failed: running eagerly'})")
            state["global_step"] += 1
            state["step_in_epoch"] = step + 1
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(-1) == y).sum().item()
            seen += len(y)
            if bar is not None:
                rate = seen * world / max(before + time.time() - t0, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}",
                                sps=f"{rate:.0f}", refresh=False)
                bar.update(1)
            halt = stop.is_set() or (deadline is not None and time.time() > deadline)
            if world > 1:   # every process stops after the same step
                flag = torch.tensor([int(halt)], device=device)     # NCCL reduces CUDA tensors only
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                halt = bool(flag.item())
            if halt:
                if bar is not None:
                    bar.close()
                state.update(epoch=epoch, elapsed_s=time.time() - start,
                             partial_sums=[loss_sum, correct, seen, before + time.time() - t0])
                checkpoint("last", {"partial_epoch": epoch}, trainer=True)
                why = f"time budget of {max_minutes} min reached" if deadline is not None and \
                    time.time() > deadline else "stopped by SIGTERM"
                log(f"{why} at epoch {epoch + 1} step {step + 1}; "
                    f"saved {out / 'last'} (continue with --resume)")
                return {"stopped": True, **state}
        if bar is not None:
            bar.close()
        elapsed_epoch = before + time.time() - t0      # this epoch's training time, over stops
        val = evaluate(model if ema is None else ema.model, val_ds, t.eval_batch_size)
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
               "train_acc": correct / max(seen, 1), "val_loss": val["loss"], "val_acc": val["accuracy"],
               "lr": opt.param_groups[0]["lr"],
               "samples_per_s": seen * world / max(elapsed_epoch, 1e-9),
               "compiled": fwd.compiled, "first_step_s": first_step_s,
               "epoch_s": elapsed_epoch, "elapsed_s": time.time() - start}
        write_metrics(rec)
        log(json_text(rec))
        state.update(epoch=epoch + 1, step_in_epoch=0, elapsed_s=time.time() - start)
        state.pop("partial_sums", None)
        if _better(t.select, val, state):
            state["best_val"] = val["accuracy"]
            state["best_val_loss"] = val["loss"]
            checkpoint("best", {"val_accuracy": val["accuracy"], "epoch": epoch + 1})
        checkpoint("last", {"val_accuracy": val["accuracy"], "epoch": epoch + 1}, trainer=True)
    # ---- final test of the best model ----
    result = {"epochs": t.epochs, "best_val_accuracy": state["best_val"],   # of the model kept as best
              "train_minutes": state["elapsed_s"] / 60}
    if rank == 0:
        test_ds = load_task(d.task, "test", limit=d.limit_test or None, **kw)
        best = io.load(out / "best") if wrap is None else _reload_wrapped(out / "best", wrap)
        test = evaluate(best, test_ds, t.eval_batch_size)
        result.update(test_accuracy=test["accuracy"], test_loss=test["loss"], test_n=test["n"])
        meta = io.read_meta(out / "best")
        # a model with a deployable form (e.g. crossbar: weights projected onto the device
        # levels, plus its "hw" metadata) saves that; others save as trained
        save = getattr(best, "save_deployable", None) or partial(io.save, best)
        write_checkpoint(out / "best", partial(save, metrics={**meta.get("metrics", {}), **result},
                                               extra=run_meta))
        write_metrics({"final": result})
        log(json_text({"final": result}))
    if world > 1:
        torch.distributed.barrier()
    return result


def _better(select: str, val: dict, state: dict) -> bool:
    """Whether this epoch's model replaces OUT/best (``[train] select``): "val_acc", the first
    epoch with the highest validation accuracy; "val_loss", the lowest validation loss; "last"."""
    if select == "val_loss":
        return val["loss"] < state.get("best_val_loss", math.inf)
    if select == "last":
        return True
    return val["accuracy"] > state["best_val"]


def mix_batch(x: torch.Tensor, y: torch.Tensor, alpha: float, key: tuple):
    """Mixup [Zhang18]: (lam x + (1 - lam) x[perm], y[perm], lam) with lam ~ Beta(alpha, alpha)
    and perm a permutation of the batch, both drawn from ``numpy.random.default_rng(key)`` (the
    batch's key, so a resumed run redraws them exactly). The loss is then lam CE(y) +
    (1 - lam) CE(y[perm]); the epoch's train accuracy counts the first targets, y.

    [Zhang18] H. Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018."""
    import numpy as np
    rng = np.random.default_rng(tuple(int(k) for k in key) + (0x6d6978,))
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(y))).to(y.device)
    return lam * x + (1.0 - lam) * x[perm], y[perm], lam


def _loss(logits, y, t, mix=None):
    ce = partial(F.cross_entropy, label_smoothing=t.label_smoothing)
    if mix is None:
        return ce(logits, y)
    y2, lam = mix
    return lam * ce(logits, y) + (1.0 - lam) * ce(logits, y2)


def _step(fwd, model, opt, scaler, x, y, device, t, mix=None):
    """One optimizer step: forward under autocast, backward (scaled for fp16), clipping, update.
    `mix`: (second targets, weight of y) of a mixup batch (``mix_batch``), or None.

    If the compiled forward fails in its backward (compilation finishes there), the step is
    redone eagerly and the run goes on uncompiled (``Compiled.fail`` logs it once)."""
    with accel.autocast(device, t.precision):
        logits = fwd(x)
        loss = _loss(logits.float(), y, t, mix)
    opt.zero_grad(set_to_none=True)
    try:
        (scaler.scale(loss) if scaler is not None else loss).backward()
    except Exception as e:  # noqa: BLE001 - a compiler failure in the backward: go on eagerly
        if not fwd.compiled or fwd.backward_done:
            raise
        fwd.fail(e)
        return _step(fwd, model, opt, scaler, x, y, device, t, mix)
    fwd.backward_done = True
    if scaler is not None:
        scaler.unscale_(opt)
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    return logits, loss


def _reload_wrapped(path: Path, wrap):
    """The best checkpoint as the model that was trained (quantized / hardware-aware), in eval mode."""
    m = wrap(io.load(path))
    m.eval()
    return m
