#!/usr/bin/env bash
# The checks that need one CUDA GPU, in one run of under 8 minutes:
#   1. `tools/train.py --amp` of configs/demo/mask_rcnn_r18_adn_fpn_demo.py and
#      configs/demo/resnet18_adn_demo.py, 20 iterations each: every logged loss finite;
#   2. one AmpOptimWrapper iteration of the tiny classifier with one and with two backwards
#      from the same weights: features fp16, KD losses fp32, the two steps agree;
#   3. benchmarks/bench_train_step.py (plain / one backward / two backwards, with
#      torch.cuda.max_memory_allocated per step kind): ResNet-50 classifier at 224 px batch
#      64, Mask R-CNN R-50-FPN at 800x1333 batch 2;
#   4. tools/analysis_tools/profile_subnets.py on ResNet-50-ADN at batch 64: the latency cut
#      of TTTT against its GFLOPs cut (the paper: 0.97).
# Writes OUT_DIR/gpu_check.json (default work_dirs/gpu_check) and prints a table; the exit
# code is 0 only if every check passed. Without CUDA it refuses with one line (exit code 2).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (PYTHON=... to choose the interpreter)
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        >/dev/null 2>&1; then
    echo "gpu_check: no CUDA device is available here ($PYTHON: torch.cuda.is_available()" \
         "is False or torch does not import); run it on a machine with one CUDA GPU" >&2
    exit 2
fi
cd "$DIR/.." || exit 2
exec env PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" benchmarks/gpu_check.py \
    --out "${1:-work_dirs/gpu_check}"
