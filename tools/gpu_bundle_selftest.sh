#!/usr/bin/env bash
# Proves here, without a GPU, the set-up that benchmarks/gpu_check.sh runs on the project's
# GPU machine: a Python 3.12 environment that holds only that machine's packages
# (tools/gpu_bundle_image.txt: torch 2.11's PyPI build, which runs on the CPU, torchvision,
# onnx, ...; the one tools/gpu_bundle.sh builds in) and the bundle, installed offline by
# gpu_check.sh itself (pip install --no-index --no-deps --target), runs
#   1. bash benchmarks/gpu_check.sh --bundle BUNDLE_DIR --cpu-smoke: every part, on the CPU;
#   2. the tests of the check (tests/test_benchmarks/test_gpu_check.py) with that bundle.
#
#   bash tools/gpu_bundle_selftest.sh BUNDLE_DIR
#
# MMADN_GPU_ENV: the environment (default as in tools/gpu_bundle.sh). Runs with
# OMP_NUM_THREADS=1 (unless set) under nice -n 19. Exit code 0 only if both steps passed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { printf 'gpu_bundle_selftest: %s\n' "$*" >&2; exit 2; }

[ $# -eq 1 ] && [ -n "$1" ] || die "expected one argument, the bundle folder that tools/gpu_bundle.sh wrote (got: ${*:-nothing})"
BUNDLE="$(cd "$1" 2>/dev/null && pwd)" || die "$1: no such folder (make it with: bash tools/gpu_bundle.sh $1)"
[ -f "$BUNDLE/BUNDLE.txt" ] || die "$BUNDLE has no BUNDLE.txt: not a bundle of tools/gpu_bundle.sh"
IMAGE_LIST="$ROOT/tools/gpu_bundle_image.txt"
TORCH_VERSION="$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$IMAGE_LIST" | sed -n 's/^torch==//p')"
ENV_DIR="${MMADN_GPU_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mmadn-gpu-env/py312-torch-$TORCH_VERSION}"
PY="$ENV_DIR/bin/python"
[ -x "$PY" ] || die "no environment at $ENV_DIR (tools/gpu_bundle.sh creates it; or set MMADN_GPU_ENV)"
[ "$(cat "$ENV_DIR/.mmadn-image" 2>/dev/null)" = "$(sha256sum "$IMAGE_LIST" | cut -d' ' -f1)" ] \
    || die "$ENV_DIR does not hold the packages of $IMAGE_LIST as they are now (run tools/gpu_bundle.sh again)"

# the environment must not already have what the bundle brings: then the run below proves
# that the bundle alone supplies it
present="$(cd /tmp && "$PY" - "$BUNDLE" <<'EOF'
import glob, importlib.metadata as md, os, sys
names = {os.path.basename(w).split('-')[0].lower().replace('_', '-')
         for w in glob.glob(os.path.join(sys.argv[1], '*.whl'))}
found = []
for n in sorted(names):
    try:
        md.distribution(n)
        found.append(n)
    except md.PackageNotFoundError:
        pass
print(' '.join(found))
EOF
)"
[ -z "$present" ] || die "$ENV_DIR already has $present: it no longer stands for the GPU machine (remove it; tools/gpu_bundle.sh recreates it)"

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
unset MMADN_GPU_BUNDLE  # the inner pytest must not start this script again
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$ROOT" || exit 2
echo "[selftest] $("$PY" -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")'); bundle $BUNDLE ($(ls "$BUNDLE"/*.whl | wc -l) wheels)"

t0=$SECONDS
echo "[selftest] 1/2 bash benchmarks/gpu_check.sh --bundle $BUNDLE --cpu-smoke"
PYTHON="$PY" nice -n 19 bash benchmarks/gpu_check.sh --bundle "$BUNDLE" --site "$WORK/site" \
    --cpu-smoke --out "$WORK/out" --work-dir "$WORK/runs"
smoke_rc=$?
t1=$SECONDS
echo "[selftest] 2/2 tests/test_benchmarks/test_gpu_check.py with the bundle on the path"
PYTHONPATH="$WORK/site" nice -n 19 "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_benchmarks/test_gpu_check.py
test_rc=$?
t2=$SECONDS
echo "[selftest] smoke run: exit $smoke_rc in $((t1 - t0)) s; tests: exit $test_rc in $((t2 - t1)) s; total $((t2 - t0)) s"
[ "$smoke_rc" = 0 ] && [ "$test_rc" = 0 ]
