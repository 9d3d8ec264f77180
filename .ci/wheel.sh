#!/usr/bin/env bash
# Build the sdist, then the wheel from it; install the wheel into a fresh venv outside the source
# tree and run the shipped models' commands from there (eval, stream, deploy on cpu, loihi2 and
# crossbar, export-c --verify), each on a few test samples. A file the installed package needs
# but the wheel lacks fails here.
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/edgessm-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
echo "== wheel check in $WORK"
"$PY" -m venv venv
V="$WORK/venv/bin"
"$V/python" -m pip install --quiet --upgrade pip
"$V/python" -m pip install --quiet torch==2.13.0 build
"$V/python" -m build --sdist --outdir dist "$SRC" >build.log 2>&1 || { cat build.log; exit 1; }
"$V/python" -m pip wheel --quiet --no-deps -w dist dist/edgessm-*.tar.gz
WHL="$(ls dist/edgessm-*.whl)"
"$V/python" -m pip install --quiet "$WHL[onnx]"
# pip must have kept the installed torch (the requirement is a range)
"$V/python" -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
mkdir run && cd run
export EDGESSM_CACHE="$WORK/cache"        # a cold C build cache: the kernel source comes from the wheel
"$V/python" "$SRC/.ci/wheel_check.py" "$V/edgessm"
