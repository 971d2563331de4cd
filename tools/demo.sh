#!/usr/bin/env bash
# The demo: set up (or reuse) the environment, generate the demo_shapes data, train the
# small adaptive-depth Mask R-CNN, then evaluate its super-net and base-net side by side.
#   bash tools/demo.sh [extra train.py args, e.g. --cfg-options train_cfg.max_iters=100]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/bootstrap.sh
PY="${MMADN_VENV:-$ROOT/.venv}/bin/python"
CONFIG=configs/demo/mask_rcnn_r18_adn_fpn_demo.py
WORK_DIR=${WORK_DIR:-work_dirs/demo_mask_rcnn_r18_adn}

"$PY" -m mmadn.datasets.demo_shapes --out data/demo_shapes
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
CKPT="$(cat "$WORK_DIR/last_checkpoint")"
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test" \
    --skip all >"$WORK_DIR/test.log" 2>&1 || { tail -n 40 "$WORK_DIR/test.log"; exit 1; }
echo "Demo: adaptive-depth Mask R-CNN (ResNet-18-ADN) on demo_shapes val, every sub-network"
echo "(T = that stage skips its specialized blocks; FFFF = super-net, TTTT = base-net):"
grep -E '^[|+]' "$WORK_DIR/test.log"
echo "Full log: $WORK_DIR/test.log; per-sub-network JSON/CSV under $WORK_DIR/test/"
