#!/usr/bin/env bash
# Sets up (or reuses) the project's virtual environment in .venv and installs mmadn into it.
#
#   bash tools/bootstrap.sh            # idempotent: quick when everything is already there
#   PYTHON=python3.11 bash tools/bootstrap.sh
#   MMADN_VENV=/path/to/venv bash tools/bootstrap.sh
#   MMADN_VENV=/tmp/old MMADN_PINS=requirements/pins-oldest.txt bash tools/bootstrap.sh
#
# The exact versions come from a pins file (default requirements/pins.txt), used as pip
# constraints; torch, torchvision, mmcv and setuptools are read from it (MMADN_TORCH_SPEC
# overrides the torch line, e.g. "torch==2.3.1 torchvision==0.18.1").
# A user with a CUDA torch/torchvision of their own can create the venv with
# --system-site-packages (or point MMADN_VENV at an existing one): torch is then reused.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMADN_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
PINS="$(realpath "${MMADN_PINS:-$ROOT/requirements/pins.txt}")"
pin() {  # the specifier lines of the pins file for one package, e.g. "torch==2.14.1"
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$PINS" | grep -E "^$1([<>=!~;]|$)" | tr '\n' ' '
}
TORCH_SPEC="${MMADN_TORCH_SPEC:-$(pin torch) $(pin torchvision)}"
MMCV_VERSION="$(pin mmcv | sed -n 's/^mmcv==\([^ ]*\).*/\1/p')"
SETUPTOOLS_SPEC="$(pin setuptools)"
[ -n "$MMCV_VERSION" ] || { echo "[bootstrap] $PINS has no mmcv==VERSION line" >&2; exit 2; }
[ -n "${TORCH_SPEC// /}" ] || { echo "[bootstrap] $PINS has no torch line" >&2; exit 2; }

log() { printf '[bootstrap] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment at $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check)
# the pins without torch / torchvision: a torch kept from before must not be replaced later
CONSTRAINTS="$VENV/.mmadn-constraints.txt"
grep -v -E '^[[:space:]]*(torch|torchvision)([<>=!~; ]|$)' "$PINS" >"$CONSTRAINTS"

# Fast path: everything imports and the requirement files did not change since the last run.
STAMP="$VENV/.mmadn-bootstrap"
want_stamp="$( (cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$PINS"; echo "$TORCH_SPEC") \
    | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ] \
   && "$PY" -c "import mmcv.ops, mmdet, mmpretrain, mmadn" >/dev/null 2>&1; then
    exit 0
fi

# 1. torch + torchvision (mmpretrain imports torchvision). An importable pair is kept as is.
if ! "$PY" -c "import torch, torchvision; torchvision.ops.nms" >/dev/null 2>&1; then
    log "installing $TORCH_SPEC"
    # shellcheck disable=SC2086
    "${PIP[@]}" $TORCH_SPEC
fi

# 2. build tools for mmcv's C++ ops (its setup.py imports pkg_resources: setuptools < 82).
"${PIP[@]}" -q -c "$CONSTRAINTS" "setuptools<82" $SETUPTOOLS_SPEC wheel ninja numpy packaging

# 3. mmcv built from source with its ops, against the torch installed above.
if ! "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'; \
import torch; from mmcv.ops import nms; nms(torch.rand(2, 4), torch.rand(2), 0.5)" >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION with its C++ ops (about 20 minutes on 2 cores; pip caches the wheel)"
    # torch >= 2.14 headers need C++20 while mmcv 2.1.0 asks for -std=c++17: a compiler
    # wrapper puts -std=c++20 last so that it wins. Older torch (2.1: C++17) builds as is.
    torch_dir="$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
    BUILD_CXX="${CXX:-g++}"
    if grep -qs "C++20 or later compatible compiler is required" "$torch_dir/include/ATen/ATen.h"; then
        BUILD_CXX="$VENV/bin/mmadn-cxx20"
        printf '#!/bin/sh\nexec %s "$@" -std=c++20\n' "${CXX:-g++}" >"$BUILD_CXX"
        chmod +x "$BUILD_CXX"
    fi
    torch_ver="$("$PY" -c 'import torch; print(torch.__version__)')"
    cached=()
    # pip's wheel cache does not know which torch a wheel was built for: key it ourselves.
    WHEELS="${MMADN_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mmadn-wheels/torch-$torch_ver}"
    mkdir -p "$WHEELS"
    if ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
        log "reusing the mmcv wheel built for torch $torch_ver in $WHEELS"
    else
        MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" CXX="$BUILD_CXX" \
            "$PY" -m pip wheel --no-deps --no-build-isolation --no-cache-dir \
            -w "$WHEELS" "mmcv==$MMCV_VERSION"
    fi
    "${PIP[@]}" --no-deps --force-reinstall "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl
fi

# 4. the rest of the stack and mmadn itself (editable), with the test tools and openmim
#    (without its dependencies: see requirements/mim.txt).
"${PIP[@]}" -q -c "$CONSTRAINTS" -r "$ROOT/requirements/runtime.txt" \
    -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" -q --no-deps -c "$CONSTRAINTS" -r "$ROOT/requirements/mim.txt"
"${PIP[@]}" -q --no-deps --no-build-isolation -e "$ROOT"
"$PY" -c "import mmcv.ops, mmdet, mmpretrain, mmadn" || { log "import check failed"; exit 1; }
echo "$want_stamp" >"$STAMP"
log "environment ready: $VENV"
