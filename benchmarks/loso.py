"""Leave-one-speaker-out (LOSO) over the FSDD speakers: one training run per held-out speaker.

    python benchmarks/loso.py --config configs/loso/fsdd01.toml --out runs/loso/fsdd01 \
        [--folds george,jackson] [--set data.normalize=cmn ...] [--nested] [--table FILE.md] [--write-configs DIR]

Fold k trains on every speaker but one (``[data] speaker_holdout``) and tests on all recordings
of the held-out speaker; validation (checkpoint selection) is the config's seeded subset of the
training speakers, or with ``--nested`` one training speaker (``[data] val_speaker``: the next
speaker after the held-out one in sorted order, cyclic), so the kept epoch is the one that does
best on a voice it never trained on. Folds run one after another in this process (``[train] threads``); a fold
whose run directory already holds a final record is read, not trained again, so an interrupted
sweep continues where it stopped. Prints one JSON line per fold and, at the end, the table
(markdown: per fold test accuracy, best validation accuracy and epoch, final train accuracy,
minutes; then mean and std over folds) and a learning-curve summary (train and validation
accuracy per epoch, mean over folds). ``--write-configs DIR`` writes each fold's config as TOML.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch


def fold_config(base, speaker: str, val_speaker: str = ""):
    from edgessm.train.config import from_dict
    d = base.to_dict()
    d["data"]["speaker_holdout"] = speaker
    if val_speaker:
        d["data"]["val_speaker"] = val_speaker
    return from_dict(d)


def next_speaker(known, speaker: str) -> str:
    """The speaker after `speaker` in the sorted `known`, cyclic (the nested fold's val speaker)."""
    known = sorted(known)
    return known[(known.index(speaker) + 1) % len(known)]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def write_toml(cfg, path: Path, header: str) -> None:
    lines = [f"# {h}" if h else "#" for h in header.splitlines()]
    for name, table in cfg.to_dict().items():
        lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")


def read_metrics(run: Path) -> tuple[list[dict], dict | None]:
    epochs, final = [], None
    p = run / "metrics.jsonl"
    if p.is_file():
        for line in p.read_text().splitlines():
            rec = json.loads(line)
            if "final" in rec:
                final = rec["final"]
            else:
                epochs.append(rec)
    return epochs, final


def selected(epochs: list[dict], select: str) -> dict:
    """The epoch record the run kept as best (``[train] select``)."""
    if select == "last":
        return epochs[-1]
    if select == "val_loss":
        return min(epochs, key=lambda r: r["val_loss"])
    return max(epochs, key=lambda r: r["val_acc"])      # the first epoch with the best val accuracy


def summarize(folds: dict, select: str = "val_acc", val_label: str = "seen speakers") -> list[str]:
    """The markdown table of the folds and the learning-curve summary."""
    rows = ["| held-out speaker | test accuracy | test n | val accuracy (epoch kept) | final train accuracy | minutes |",
            "|---|---|---|---|---|---|"]
    accs = []
    for spk, f in folds.items():
        ep, fin = f["epochs"], f["final"]
        best = selected(ep, select)
        accs.append(fin["test_accuracy"])
        rows.append(f"| {spk} | {fin['test_accuracy']:.3f} | {fin['test_n']} | {best['val_acc']:.3f} "
                    f"({best['epoch']}) | {ep[-1]['train_acc']:.3f} | {fin['train_minutes']:.1f} |")
    if accs:
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append(f"| **mean over {len(accs)} folds** | **{statistics.mean(accs):.3f}** +- {sd:.3f} "
                    f"(min {min(accs):.3f}) | | | | {sum(f['final']['train_minutes'] for f in folds.values()):.1f} |")
    n_ep = min((len(f["epochs"]) for f in folds.values()), default=0)
    if n_ep:
        marks = sorted({1, 2, 3, 5} | set(range(10, n_ep + 1, 5)) | {n_ep})
        marks = [e for e in marks if e <= n_ep]
        rows += ["", "| epoch | " + " | ".join(str(e) for e in marks) + " |",
                 "|---|" + "---|" * len(marks)]
        for key, label in (("train_loss", "train loss"), ("train_acc", "train accuracy"),
                           ("val_acc", f"val accuracy ({val_label})")):
            vals = [statistics.mean(f["epochs"][e - 1][key] for f in folds.values()) for e in marks]
            rows.append(f"| {label}, mean over folds | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="base run config (an fsdd task)")
    p.add_argument("--out", required=True, help="runs go to OUT/SPEAKER")
    p.add_argument("--folds", default="all", help="comma-separated held-out speakers (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (as edgessm train --set)")
    p.add_argument("--nested", action="store_true",
                   help="validate each fold on one training speaker (the next one, cyclic) instead of val_fraction")
    p.add_argument("--table", help="also write the markdown table to this file")
    p.add_argument("--write-configs", metavar="DIR", help="write each fold's config as DIR/<stem>_<speaker>.toml and exit")
    a = p.parse_args(argv)
    from edgessm.data import data_root
    from edgessm.data.fsdd import speakers
    from edgessm.errors import ConfigError
    from edgessm.resources import read_toml
    from edgessm.train import train
    from edgessm.train.config import from_dict
    from edgessm.train.tracking import apply_sets
    base = from_dict(apply_sets(read_toml(a.config), a.set))
    if not base.data.task.startswith("fsdd"):
        raise ConfigError(f"leave-one-speaker-out needs an fsdd task, got {base.data.task!r}")
    known = speakers(data_root())
    folds = known if a.folds == "all" else tuple(s.strip().lower() for s in a.folds.split(",") if s.strip())
    bad = [s for s in folds if s not in known]
    if bad or not folds:
        raise ConfigError(f"unknown FSDD speaker(s) {', '.join(bad) or '(none given)'} in --folds; "
                          f"known speakers: {', '.join(known)}")
    if a.nested and base.data.val_speaker:
        raise ConfigError("--nested picks each fold's val_speaker; the config sets [data] val_speaker "
                          f"= {base.data.val_speaker!r} already")
    vspk = {s: next_speaker(known, s) if a.nested else "" for s in folds}
    if a.write_configs:
        d = Path(a.write_configs)
        d.mkdir(parents=True, exist_ok=True)
        stem = Path(a.config).stem
        for spk in folds:
            path = d / f"{stem}_{spk}.toml"
            write_toml(fold_config(base, spk, vspk[spk]), path,
                       f"Leave-one-speaker-out fold of {a.config}: speaker {spk} held out (its 'test' split).\n"
                       f"Written by: python benchmarks/loso.py --config {a.config} --write-configs {a.write_configs}"
                       + "".join(f" --set {s}" for s in a.set) + (" --nested" if a.nested else "") + "\n"
                       f"  edgessm train {path} --out {a.out}/{spk}")
            print(path)
        return 0
    if base.train.threads:
        torch.set_num_threads(base.train.threads)
    results = {}
    for spk in folds:
        run = Path(a.out) / spk
        epochs, final = read_metrics(run)
        if final is None or "test_accuracy" not in final:
            resume = (run / "last" / "trainer.json").is_file()
            train(fold_config(base, spk, vspk[spk]), run, resume=resume, progress=False,
                  log=lambda s: print(s, file=sys.stderr, flush=True))
            epochs, final = read_metrics(run)
        results[spk] = {"epochs": epochs, "final": final}
        print(json.dumps({"fold": spk, "test_accuracy": final["test_accuracy"], "test_n": final["test_n"],
                          "best_val_accuracy": final["best_val_accuracy"],
                          "train_minutes": final["train_minutes"]}), flush=True)
    nested = a.nested or bool(base.data.val_speaker)
    table = summarize(results, base.train.select, "one unseen training speaker" if nested else "seen speakers")
    text = "\n".join(table)
    print(text)
    if a.table:
        Path(a.table).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    from common import run_main
    run_main(main)
