#!/usr/bin/env bash
# Ship a finished long run the way psMNIST shipped: its best checkpoint as the float model NAME,
# and after quantization-aware fine-tuning for Loihi 2 (QAFT) as NAME-loihi2.
#   bash resume/ship.sh RUN QAFT_CONFIG NAME
#   e.g. bash resume/ship.sh resume/scifar_mixup configs/scifar_qaft.toml scifar  (how sCIFAR shipped)
# Refuses a run with epochs left, and one whose test accuracy does not beat the shipped NAME's
# (SHIP_ANYWAY=1 ships it regardless). Every result lands in runs/NAME_ship/:
#   ptq.json     PTQ of RUN/best to the loihi2 spec, float and integer on 10,000 test samples
#                (recorded beside QAFT, not shipped)
#   qaft.log     the QAFT run (runs/NAME_qaft), ending with its final test on the integer engine
#   eval.json    `edgessm eval NAME --json`: the shipped float model on the full test set
#   deploy.json  `edgessm deploy NAME-loihi2 --target loihi2 --json`: accuracy, cores, energy and
#                latency per token of the shipped integer model on the full test set
# Left by hand: the tables of benchmarks/RESULTS.md and README.md, resume/README.md, and removing
# RUN once the shipped models are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 3 ]; then
    echo "usage: bash resume/ship.sh RUN QAFT_CONFIG NAME" >&2
    exit 2
fi
RUN=${1%/}
QAFT=$2
NAME=$3
for f in "$RUN/config.json" "$RUN/last/trainer.json" "$RUN/best/model.json" "$QAFT"; do
    [ -f "$f" ] || { echo "resume/ship.sh: $f is missing" >&2; exit 2; }
done
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
TASK=$("$PY" - "$RUN" "$NAME" <<'PY'
# a finished run, and one that replaces the shipped NAME only if its test accuracy (the run's
# final test) is higher; prints the run's task
import json, os, sys
run, name = sys.argv[1:]
done = json.load(open(f"{run}/last/trainer.json"))["epoch"]
cfg = json.load(open(f"{run}/config.json"))
if done < cfg["train"]["epochs"]:
    sys.exit(f"resume/ship.sh: {run} has trained {done} of {cfg['train']['epochs']} epochs: continue it first")
new = json.load(open(f"{run}/best/model.json")).get("metrics", {}).get("test_accuracy")
if new is None:
    sys.exit(f"resume/ship.sh: {run}/best has no test accuracy: the run ends with its final test")
shipped = f"src/edgessm/models/{name}/model.json"
old = json.load(open(shipped)).get("metrics", {}).get("test_accuracy") if os.path.exists(shipped) else None
if old is not None and new <= old and os.environ.get("SHIP_ANYWAY") != "1":
    sys.exit(f"resume/ship.sh: {run} tests at {new:.2%}, the shipped {name} at {old:.2%}; "
             "not replacing it (SHIP_ANYWAY=1 to ship regardless)")
print(cfg["data"]["task"])
PY
)
make -s install
export EDGESSM_DATA="${EDGESSM_DATA:-$(cd ../shared/data && pwd)}"
EDGESSM=.venv/bin/edgessm
out="runs/${NAME}_ship"
mkdir -p "$out"
echo "PTQ of $RUN/best -> $out/ptq.json"
"$EDGESSM" quantize "$RUN/best" --spec loihi2 --limit 10000 --out "runs/${NAME}_ptq" --json > "$out/ptq.json"
echo "QAFT -> runs/${NAME}_qaft (log $out/qaft.log)"
"$EDGESSM" train "$QAFT" --quant loihi2 --init "$RUN/best" --out "runs/${NAME}_qaft" > "$out/qaft.log" 2>&1
for pair in "$RUN/best $NAME" "runs/${NAME}_qaft/best ${NAME}-loihi2"; do
    set -- $pair
    mkdir -p "src/edgessm/models/$2"
    cp "$1/model.json" "$1/weights.safetensors" "src/edgessm/models/$2/"
    echo "shipped $1 as $2"
done
echo "evaluation -> $out/eval.json, deployment -> $out/deploy.json"
"$EDGESSM" eval "$NAME" --task "$TASK" --json > "$out/eval.json"
"$EDGESSM" deploy "${NAME}-loihi2" --target loihi2 --task "$TASK" --json > "$out/deploy.json"
grep '"final"' "$out/qaft.log" | tail -n 1
