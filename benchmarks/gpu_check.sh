#!/usr/bin/env bash
# The checks that need one CUDA GPU, in one run of under 8 minutes (--budget, default 450 s for
# the parts; the bundle install before them takes seconds), each part in its own process,
# stopped at its own time limit. Classifier parts first:
#   amp_train_cls  `tools/train.py --amp configs/demo/resnet18_adn_demo.py`, 20 iterations on
#                  small generated data: every logged loss finite;
#   amp_step       one AmpOptimWrapper iteration of the tiny classifier with one and with two
#                  backwards from the same weights: features fp16, KD losses fp32, the two
#                  steps agree;
#   bench_cls      benchmarks/bench_train_step.py (plain / one backward / two backwards, with
#                  torch.cuda.max_memory_allocated per step kind): ResNet-50, 224 px, batch 64;
#   profile_r50    tools/analysis_tools/profile_subnets.py on ResNet-50-ADN at batch 64: the
#                  latency cut of TTTT against its GFLOPs cut (the paper: 0.97);
#   bench_compile  `benchmarks/bench_compile.py --device cuda --part cls --batch 8 --rounds 3`:
#                  ResNet-50-ADN compiled once (inductor) for all 16 depths, compiled / eager
#                  per depth, graphs and eager fallbacks (--cpu-smoke: on the CPU at 64 px);
# then the detector parts, which need mmcv's ops on the GPU (probe_ops runs nms and RoIAlign
# there; without them every detector part is skipped with one line that says why):
#   amp_train_det  `tools/train.py --amp configs/demo/mask_rcnn_r18_adn_fpn_demo.py`, 20
#                  iterations;
#   bench_det      bench_train_step.py on Mask R-CNN R-50-FPN, 800x1333, batch 2;
#   nccl_step      the demo detector under torchrun, 2 ranks, NCCL (needs 2 GPUs; skipped
#                  with one line on a machine with one).
# Writes gpu_check.json and gpu_check.md (the table) into --out (default $OUT if set, else
# work_dirs/gpu_check) and prints the table; the runs go to --work-dir (work_dirs/gpu_check).
# Exit code 0 when every part that ran passed, 1 otherwise, 2 when it could not start
# (without CUDA it refuses with one line, unless --cpu-smoke).
#
#   bash benchmarks/gpu_check.sh [--bundle DIR] [--site DIR] [--out DIR] [--work-dir DIR]
#                                [--budget SECONDS] [--cpu-smoke]
#   (PYTHON=... chooses the interpreter, default python3; a first argument without '--' is
#   taken as --out)
#
# --bundle DIR: the wheels made by `bash tools/gpu_bundle.sh DIR` (for the project's GPU
# machine: Python 3.12 with torch 2.11, no OpenMMLab packages, no registry). They are
# installed offline into --site (default ${TMPDIR:-/tmp}/mmadn-gpu-site, emptied first) with
# `pip install --no-index --no-deps --target`, which then goes on PYTHONPATH before the
# repository; the interpreter's own torch is used.
#
# On the project's GPU machine, from the repository root, after `bash tools/gpu_bundle.sh
# .gpu_bundle` here (the device tool's `run`, timeout_s 540, carry [".gpu_bundle"]):
#   set -o pipefail; PYTHONUNBUFFERED=1 bash benchmarks/gpu_check.sh --bundle .gpu_bundle --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
set -uo pipefail
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python3}
say() { echo "gpu_check: $*" >&2; }

BUNDLE="" SITE="${TMPDIR:-/tmp}/mmadn-gpu-site" SMOKE=0
ARGS=()
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then ARGS+=(--out "$1"); shift; fi
while [ $# -gt 0 ]; do
    case "$1" in
        --bundle|--site)
            [ $# -ge 2 ] && [ -n "$2" ] || { say "$1 needs a folder (e.g. $1 .gpu_bundle)"; exit 2; }
            if [ "$1" = --bundle ]; then BUNDLE="$2"; else SITE="$2"; fi
            shift 2 ;;
        --cpu-smoke) SMOKE=1; ARGS+=("$1"); shift ;;
        *) ARGS+=("$1"); shift ;;
    esac
done

cd "$DIR/.." || exit 2
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    say "no interpreter '$PYTHON' here; set PYTHON=/path/to/python"
    exit 2
fi
if [ -n "$BUNDLE" ]; then
    if [ ! -f "$BUNDLE/BUNDLE.txt" ] || ! ls "$BUNDLE"/*.whl >/dev/null 2>&1; then
        say "--bundle $BUNDLE: no wheel bundle there (expected the *.whl and BUNDLE.txt that" \
            "'bash tools/gpu_bundle.sh $BUNDLE' writes; on the device machine name it in carry)"
        exit 2
    fi
    want_py="$(sed -n 's/^python=//p' "$BUNDLE/BUNDLE.txt")"
    have_py="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"
    if [ "$want_py" != "$have_py" ]; then
        say "--bundle $BUNDLE holds wheels for Python $want_py, but $PYTHON is Python" \
            "${have_py:-?}; run it with a Python $want_py (PYTHON=...)"
        exit 2
    fi
fi
if [ "$SMOKE" = 0 ] && ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        >/dev/null 2>&1; then
    say "no CUDA device is available here ($PYTHON: torch.cuda.is_available()" \
        "is False or torch does not import); run it on a machine with one CUDA GPU"
    exit 2
fi
if [ -n "$BUNDLE" ]; then
    # the site folder is emptied first: only one that this script made (or an empty one)
    if [ -d "$SITE" ] && [ ! -f "$SITE/.mmadn-gpu-site" ] && [ -n "$(ls -A "$SITE")" ]; then
        say "--site $SITE holds files this script did not install (no .mmadn-gpu-site in it);" \
            "give a new or empty folder"
        exit 2
    fi
    rm -rf "$SITE"
    t0=$SECONDS
    if ! "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps \
            --no-compile --target "$SITE" "$BUNDLE"/*.whl >"${SITE%/}.pip.log" 2>&1; then
        say "installing the bundle $BUNDLE into $SITE failed: $(grep -m 1 -iE 'error' "${SITE%/}.pip.log")"
        exit 2
    fi
    touch "$SITE/.mmadn-gpu-site"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    want_torch="$(sed -n 's/^torch=//p' "$BUNDLE/BUNDLE.txt")"
    have_torch="$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
    echo "[gpu_check] bundle $BUNDLE installed into $SITE in $((SECONDS - t0)) s" \
         "($(ls "$BUNDLE"/*.whl | wc -l) wheels; $(grep '^mmcv_ops=' "$BUNDLE/BUNDLE.txt"))"
    if [ "${want_torch%%+*}" != "${have_torch%%+*}" ]; then
        say "warning: the bundle's mmcv was built for torch $want_torch, $PYTHON has torch" \
            "${have_torch:-?}: mmcv's ops may not load (rebuild the bundle against this torch)"
    fi
fi
exec env PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" benchmarks/gpu_check.py "${ARGS[@]}"
