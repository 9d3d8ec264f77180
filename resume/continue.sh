#!/usr/bin/env bash
# Continue the training runs in progress (resume/README.md) in the background, each stopping by
# itself after M minutes (default 150) with a resumable checkpoint in its folder.
#   bash resume/continue.sh [M]
# Runs that have trained all their epochs are skipped; the two cores are shared by the runs
# left (one thread each for two runs, both threads for one).
# Installs the [fft] extra (ducc0) into .venv first: these runs' steps are 1.6-1.9x faster with
# it on one thread (benchmarks/RESULTS.md, "The batch norm of the mixing product fused").
# The runs in progress are listed in RUNS below as "CONFIG FOLDER" pairs (configs/CONFIG.toml,
# resume/FOLDER); with none listed, or none with epochs left, it says so and installs and starts
# nothing.
# Pause for a measurement with `kill -STOP $(cat resume/.pids)`, go on with `kill -CONT ...`;
# stop early with `kill -TERM $(cat resume/.pids)` (each saves after its current step).
set -euo pipefail
cd "$(dirname "$0")/.."
M="${1:-150}"
RUNS=()            # e.g. RUNS=("scifar_h128_mixup scifar_mixup")

unfinished() {      # resume/$1 exists and has epochs left to train (the standard library only)
    [ -f "resume/$1/last/trainer.json" ] && python3 - "$1" <<'PY'
import json, sys
run = sys.argv[1]
done = json.load(open(f"resume/{run}/last/trainer.json"))["epoch"]
total = json.load(open(f"resume/{run}/config.json"))["train"]["epochs"]
sys.exit(0 if done < total else 1)
PY
}

runs=()
for run in "${RUNS[@]}"; do
    set -- $run
    if unfinished "$2"; then runs+=("$run"); else echo "resume/$2: nothing to continue"; fi
done
if [ ${#runs[@]} -eq 0 ]; then
    echo "resume/continue.sh: no training runs in progress (resume/README.md)"
    exit 0
fi
make -s install
.venv/bin/python -c "import ducc0" 2>/dev/null || .venv/bin/pip install -q "ducc0>=0.40"
export EDGESSM_DATA="${EDGESSM_DATA:-$(cd ../shared/data && pwd)}"
threads=$(( ${#runs[@]} > 1 ? 1 : 2 ))
: > resume/.pids
for run in "${runs[@]}"; do
    set -- $run
    nohup bash -c 'echo $$ >> resume/.pids; exec "$@"' run .venv/bin/edgessm train "configs/$1.toml" \
        --out "resume/$2" --resume --max-minutes "$M" --set "train.threads=$threads" \
        > "resume/$2.log" 2>&1 < /dev/null &
    echo "resume/$2: continuing on $threads thread(s) (log resume/$2.log)"
done
sleep 1
echo "pids: $(tr '\n' ' ' < resume/.pids)"
