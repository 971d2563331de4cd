#!/usr/bin/env bash
# The demo, the paper's pipeline in miniature: set up (or reuse) the environment, generate
# the demo data, pretrain a ResNet-18-ADN classifier on generated shapes, train the small
# adaptive-depth Mask R-CNN from it, evaluate every sub-network and draw one validation
# image detected at two depths.
#   bash tools/demo.sh [extra detector train.py args, e.g. --cfg-options train_cfg.max_iters=100]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/bootstrap.sh
PY="${MMADN_VENV:-$ROOT/.venv}/bin/python"
CLS_CONFIG=configs/demo/resnet18_adn_demo.py
DET_CONFIG=configs/demo/mask_rcnn_r18_adn_fpn_demo.py
WORK_DIR=${WORK_DIR:-work_dirs/demo}
PRETRAINED="$WORK_DIR/resnet18_adn_cls.pth"
START=$SECONDS

step() { printf '\n[demo %s, %d s] %s\n' "$1" $((SECONDS - START)) "$2"; }
quiet() {  # run a step, keep its log, show its tail only if it fails
    local log=$1; shift
    "$@" >"$log" 2>&1 || { tail -n 40 "$log"; echo "failed; full log: $log"; exit 1; }
}
if [ -e "$WORK_DIR" ]; then  # a new run each time; the previous one is kept beside it
    rm -rf "$WORK_DIR.prev" && mv "$WORK_DIR" "$WORK_DIR.prev"
    echo "[demo] the previous run is now in $WORK_DIR.prev"
fi
mkdir -p "$WORK_DIR"

step 1/5 "generating data/demo_shapes (detection) and data/demo_shapes_cls (classification)"
"$PY" -W ignore::RuntimeWarning -m mmadn.datasets.demo_shapes --out data/demo_shapes
"$PY" -W ignore::RuntimeWarning -m mmadn.datasets.demo_shapes --cls --out data/demo_shapes_cls

step 2/5 "pretraining the ResNet-18-ADN classifier (super-net + base-net, KD) on shapes"
quiet "$WORK_DIR/cls.log" "$PY" tools/train.py "$CLS_CONFIG" --work-dir "$WORK_DIR/cls"
grep -E 'accuracy/top1' "$WORK_DIR/cls.log" | tail -n 1 | sed 's/^.*Iter(val)/  classifier val/'
cp "$(cat "$WORK_DIR/cls/last_checkpoint")" "$PRETRAINED"

step 3/5 "training the adaptive-depth Mask R-CNN from it (log: $WORK_DIR/det.log)"
quiet "$WORK_DIR/det.log" "$PY" tools/train.py "$DET_CONFIG" --work-dir "$WORK_DIR/det" \
    --cfg-options "model.backbone.init_cfg.checkpoint=$PRETRAINED" "$@"
CKPT="$(cat "$WORK_DIR/det/last_checkpoint")"

step 4/5 "evaluating all 16 sub-networks from the one checkpoint (log: $WORK_DIR/test.log)"
quiet "$WORK_DIR/test.log" "$PY" tools/test.py "$DET_CONFIG" "$CKPT" \
    --work-dir "$WORK_DIR/test" --skip all

step 5/5 "one validation image at the super-net and the base-net depth"
RESULTS="$(ls -t "$WORK_DIR"/test/*/subnet_results.json | head -n 1)"
quiet "$WORK_DIR/picture.log" "$PY" demo/adaptive_depth_demo.py "$DET_CONFIG" "$CKPT" \
    data/demo_shapes/val/000001.png --skips FFFF,TTTT --out "$WORK_DIR/depths.png" \
    --results "$RESULTS" --device cpu

echo
echo "Demo: adaptive-depth Mask R-CNN (ResNet-18-ADN) on demo_shapes val, every sub-network"
echo "(T = that stage skips its specialized blocks; FFFF = super-net, TTTT = base-net):"
grep -E '^[|+]' "$WORK_DIR/test.log"
echo "Picture (same image, two depths): $WORK_DIR/depths.png"
echo "Logs: $WORK_DIR/{cls,det,test}.log; per-sub-network JSON/CSV under $WORK_DIR/test/"
echo "Total: $((SECONDS - START)) s"
