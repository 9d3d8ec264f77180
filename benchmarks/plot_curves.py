"""Learning curves (val accuracy and train loss per epoch) of training runs, stages joined.

    python benchmarks/plot_curves.py --run LABEL=runs/DIR [--run LABEL2=runs/DIR2 ...] \
        --out benchmarks/plots/NAME.png [--title T]

Reads each run's metrics.jsonl (one JSON object per epoch, as `edgessm train` writes it);
consecutive --run stages are drawn one after the other on one epoch axis.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read(run: str) -> list[dict]:
    rows = []
    for line in (Path(run) / "metrics.jsonl").read_text().splitlines():
        d = json.loads(line)
        if "epoch" in d and "val_acc" in d:
            rows.append(d)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--run", action="append", required=True, metavar="LABEL=DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="")
    a = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    off = 0
    for spec in a.run:
        label, _, d = spec.partition("=")
        rows = read(d)
        ep = [off + r["epoch"] for r in rows]
        ax1.plot(ep, [r["val_acc"] for r in rows], marker=".", label=label)
        ax2.plot(ep, [r["train_loss"] for r in rows], marker=".", label=label)
        off = ep[-1] if ep else off
        print(json.dumps({"run": d, "label": label, "epochs": len(rows),
                          "best_val_acc": max((r["val_acc"] for r in rows), default=None),
                          "last_val_acc": rows[-1]["val_acc"] if rows else None}))
    ax1.set_xlabel("epoch"), ax1.set_ylabel("validation accuracy"), ax1.grid(alpha=0.3), ax1.legend()
    ax2.set_xlabel("epoch"), ax2.set_ylabel("training loss"), ax2.grid(alpha=0.3)
    fig.suptitle(a.title)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
