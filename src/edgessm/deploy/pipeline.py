"""The deploy pipeline: test samples of a task, token by token, through a checkpoint compiled
for a target; accuracy, resources, cost per token and engine statistics as a :class:`DeployRun`.

What the pipeline asks of a target comes from its declaration: ``capabilities`` (calibration,
device instances, ``check``, cost modes) and ``config_class`` (typed options, the field a spec
sets). It never inspects a target's or a program's signature or attributes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .checkpoint import Checkpoint


@dataclass
class CheckCounts:
    """Integer outputs compared with the quantized PyTorch model (``deploy --check``)."""
    mismatches: int = 0
    compared: int = 0
    samples_with_mismatch: int = 0


@dataclass
class DeployRun:
    """One deployment: `accuracies` has one entry per device instance (one for a deterministic
    target); `cost` is the target's default cost mode, `cost_modes` the other modes it declares;
    `stats` the last program's counters since its run."""
    model: str
    target: str
    task: str
    n: int
    accuracies: list[float]
    stochastic: bool
    resources: dict
    cost: Any                                   # targets.Cost
    cost_modes: dict[str, Any] = field(default_factory=dict)
    check: CheckCounts | None = None
    spec: str | None = None
    stats: dict = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def trials(self) -> int:
        return len(self.accuracies)

    @property
    def accuracy(self) -> float:
        """Mean accuracy over the device instances."""
        return sum(self.accuracies) / len(self.accuracies)

    @property
    def accuracy_std(self) -> float:
        """Sample standard deviation over the device instances (0.0 for one)."""
        if self.trials < 2:
            return 0.0
        m = self.accuracy
        return (sum((a - m) ** 2 for a in self.accuracies) / (self.trials - 1)) ** 0.5

    def to_dict(self) -> dict:
        """The figures ``edgessm deploy --json`` prints."""
        res = {"model": self.model, "target": self.target, "task": self.task, "n": self.n,
               "accuracy": self.accuracy}
        if self.trials > 1:
            res.update(trials=self.trials, accuracy_trials=list(self.accuracies),
                       accuracy_std=self.accuracy_std)
        if self.stochastic:   # analog targets: {"mean", "std"} over device instances
            res["accuracy"] = {"mean": self.accuracy, "std": self.accuracy_std, "trials": list(self.accuracies)}
        if self.check is not None:
            res.update(mismatches=self.check.mismatches, compared=self.check.compared,
                       samples_with_mismatch=self.check.samples_with_mismatch)
        if self.spec is not None:
            res["spec"] = self.spec
        res["resources"] = self.resources
        for key in ("cores", "chips"):
            if key in self.resources:
                res[key] = self.resources[key]
        c = self.cost
        res.update(energy_per_token_j=c.energy_per_token_j, latency_per_token_s=c.latency_per_token_s,
                   throughput_tokens_per_s=c.throughput_tokens_per_s, power_w=c.power_w, cost=c.to_dict())
        for mode, cm in self.cost_modes.items():
            res[f"cost_{mode}"] = cm.to_dict()
        if self.stats:
            res["spike_sparsity"] = self.stats.get("spike_sparsity")
            res["overflows"] = self.stats.get("overflows")
            res["stats"] = {k: v for k, v in self.stats.items() if k not in ("messages", "synops")}
        res["wall_s"] = self.wall_s
        return res


def run_program(program, X, y, batch_size: int, check: bool, desc: str | None = None) -> dict:
    """Accuracy (prediction after the last token) and, with check, integer mismatches
    (``program.check``: only for targets that declare ``supports_check``)."""
    from ..progress import bar
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


def deploy(checkpoint, target: str = "loihi2", config=None, *, task: str | None = None,
           limit: int | None = None, check: bool = False, trials: int = 1, calibrate: int = 512,
           batch_size: int = 100) -> DeployRun:
    """Run test samples of `task` (default: the checkpoint's) token by token through the
    checkpoint compiled for `target`.

    checkpoint: a Checkpoint, a checkpoint path, a shipped name or a loaded model; config: the
    target's typed config (default: its defaults); trials: device instances of a stochastic
    target (seed 0..K-1 unless the config sets one; other targets run once); calibrate:
    training samples loaded for targets that calibrate a model not yet quantized for them."""
    from .. import targets
    from ..data import load_task
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    tgt = targets.get(target)
    caps = tgt.capabilities
    cfg = config if config is not None else tgt.config_class()
    if not isinstance(cfg, tgt.config_class):
        raise ConfigError(f"the {target} target takes a {tgt.config_class.__name__}, "
                          f"got {type(cfg).__name__}")
    if check and not caps.supports_check:
        raise ConfigError(f"target {target!r} has no reference to check against "
                          f"(--check needs a bit-exact target such as fixed or loihi2)")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    task = ckpt.task_for(task)
    from ..io import trained_task_options
    split = trained_task_options(ckpt.model, task)    # the split and features it was trained on
    test = load_task(task, "test", limit=limit, **split)
    calibration = None
    if caps.needs_calibration and (not ckpt.quantized or cfg.spec_value is not None):
        calibration = load_task(task, "train", limit=calibrate, **split).x
    trials = trials if caps.stochastic else 1
    results, program = [], None
    t0 = time.time()
    for k in range(trials):
        program = tgt.build(ckpt.model, cfg.instance(k) if caps.stochastic else cfg, calibration)
        program.reset_stats()
        results.append(run_program(program, test.x, test.y, batch_size, check,
                                   desc=f"{target} {k + 1}/{trials}" if trials > 1 else target))
    wall = time.time() - t0
    counts = None
    if check:
        counts = CheckCounts(sum(r["mismatches"] for r in results), sum(r["compared"] for r in results),
                             sum(r["samples_with_mismatch"] for r in results))
    spec = program.spec_name()
    resources = program.resources()
    tokens = test.x.shape[1]
    cost = program.cost(tokens=tokens)
    modes = {m: program.cost(tokens=tokens, mode=m) for m in caps.cost_modes[1:]}
    return DeployRun(model=ckpt.name, target=target, task=task, n=results[0]["n"],
                     accuracies=[r["accuracy"] for r in results], stochastic=caps.stochastic,
                     resources=resources, cost=cost, cost_modes=modes, check=counts, spec=spec,
                     stats=program.stats(), wall_s=wall)


def deploy_dict(model, target: str = "loihi2", task: str | None = None, limit: int | None = None,
                check: bool = False, trials: int = 1, config=None, spec=None, calibrate: int = 512,
                batch_size: int = 100, name: str | None = None) -> dict:
    """:func:`deploy` with a spec given apart from the config, as the figures
    ``edgessm deploy --json`` prints (``DeployRun.to_dict()``). model: a checkpoint path, a
    shipped name, a loaded model or a Checkpoint; name: how the model is named in the figures."""
    from .. import targets
    ckpt = model if isinstance(model, Checkpoint) else Checkpoint.load(model, name)
    if name is not None:
        ckpt.name = name
    tgt = targets.get(target)
    cfg = (config if config is not None else tgt.config_class()).with_spec(spec)
    return deploy(ckpt, target, cfg, task=task, limit=limit, check=check, trials=trials,
                  calibrate=calibrate, batch_size=batch_size).to_dict()
