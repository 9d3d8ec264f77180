#!/usr/bin/env bash
# Continue the training runs in progress (resume/README.md) in the background, one thread each,
# each stopping by itself after M minutes (default 150) with a resumable checkpoint in its folder.
#   bash resume/continue.sh [M]
# Installs the [fft] extra (ducc0) into .venv first: these runs' steps are 1.6-1.9x faster with
# it on one thread (benchmarks/RESULTS.md, "The batch norm of the mixing product fused").
# Pause for a measurement with `kill -STOP $(cat resume/.pids)`, go on with `kill -CONT ...`;
# stop early with `kill -TERM $(cat resume/.pids)` (each saves after its current step).
set -euo pipefail
cd "$(dirname "$0")/.."
M="${1:-150}"
make -s install
.venv/bin/python -c "import ducc0" 2>/dev/null || .venv/bin/pip install -q "ducc0>=0.40"
export EDGESSM_DATA="${EDGESSM_DATA:-$(cd ../shared/data && pwd)}"
: > resume/.pids
for run in "psmnist_h128_res psmnist_res" "scifar_h128 scifar"; do
    set -- $run
    [ -f "resume/$2/last/trainer.json" ] || continue
    nohup bash -c 'echo $$ >> resume/.pids; exec "$@"' run .venv/bin/edgessm train "configs/$1.toml" \
        --out "resume/$2" --resume --max-minutes "$M" --set train.threads=1 \
        > "resume/$2.log" 2>&1 < /dev/null &
    echo "resume/$2: continuing (log resume/$2.log)"
done
sleep 1
echo "pids: $(tr '\n' ' ' < resume/.pids)"
