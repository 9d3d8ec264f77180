"""Run every benchmark in turn (`make bench`); each prints JSON lines. `--record` appends
their tables to RESULTS.md. Long ones (training throughput with torch.compile, the full
Loihi 2 test set) take their own flags; see each script's docstring."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = [["bench_stream.py"], ["bench_step.py"], ["bench_train.py"], ["bench_study.py"],
           ["bench_loihi2.py", "--limit", "200", "--check"], ["bench_export_c.py"],
           ["bench_crossbar.py", "accuracy", "--model", "fsdd01-ternary=fsdd01-ternary", "--task", "fsdd-01",
            "--trials", "3"]]


def main() -> int:
    record = ["--record"] if "--record" in sys.argv[1:] else []
    failed = []
    for s in SCRIPTS:
        cmd = [sys.executable, str(HERE / s[0]), *s[1:]]
        if record and s[0] in ("bench_stream.py", "bench_step.py", "bench_train.py", "bench_study.py",
                               "bench_export_c.py"):
            cmd += record
        if s[0] == "bench_loihi2.py" and not record:
            cmd.append("--no-append")
        print(f"# {' '.join(cmd)}", file=sys.stderr, flush=True)
        if subprocess.run(cmd, cwd=HERE).returncode:
            failed.append(s[0])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
