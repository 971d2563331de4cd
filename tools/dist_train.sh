#!/usr/bin/env bash
# tools/dist_train.sh CONFIG GPUS [train.py args...]  (on a machine without CUDA: gloo on CPU)
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}

# a port held by another run would make torch.distributed.run fail with a long traceback
if [ "$NODE_RANK" = "0" ]; then
    "$PYTHON" "$DIR/misc/check_port.py" "$PORT" "$MASTER_ADDR" "tools/dist_train.sh" || exit 1
fi

PYTHONPATH="$DIR/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes=$NNODES --node_rank=$NODE_RANK --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS --master_port=$PORT \
    "$DIR/train.py" "$CONFIG" --launcher pytorch "${@:3}"
