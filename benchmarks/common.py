"""Shared by the benchmarks: machine description, JSON lines, appending to RESULTS.md, running a
script's main with edgessm's errors as a message and exit code 2."""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def emit(rec: dict) -> None:
    print(json.dumps(rec), flush=True)


def append_results(title: str, table: list[str], notes: str = "") -> None:
    """Append a section with the command line, the machine and a markdown table."""
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    m = machine()
    lines = [f"\n### {title}", "",
             f"`{cmd}` ({datetime.date.today().isoformat()}; {m['cpu']}, {m['cores']} cores, "
             f"torch {m['torch']}, Python {m['python']})", ""]
    lines += table
    if notes:
        lines += ["", notes]
    with open(RESULTS, "a") as f:
        f.write("\n".join(lines) + "\n")


def torch_mix_norm_tail(m, bias, norm, res=None, glu=True, act="gelu", p=0.0, seed=None):
    """A training-mode ``mix_norm`` as before ``fused.norm_mix_tail`` (same signature): torch's
    BatchNorm1d of m + bias, then the fused tail. Patched in for A/B comparisons."""
    from edgessm.ssm import fused
    return fused.mix_tail(norm(m + bias.unsqueeze(-1)), None, res, glu=glu, act=act, p=p, seed=seed)


def run_main(main) -> None:
    """sys.exit(main()); an edgessm error (bad option, missing data) is printed as one line and
    exits with code 2, as the command line does."""
    from edgessm.errors import EdgessmError
    try:
        sys.exit(main())
    except EdgessmError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
