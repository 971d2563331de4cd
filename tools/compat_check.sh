#!/usr/bin/env bash
# Builds (or reuses) a second environment with the oldest supported stack
# (requirements/pins-oldest.txt: torch 2.1.2 + torchvision 0.16.2 + mmcv 2.1.0 built for it +
# the lowest mmengine / mmdet / mmpretrain) and runs the test suite there.
#
#   bash tools/compat_check.sh [pytest args]                   # e.g. -q -x tests/test_models
#   MMADN_COMPAT_VENV=/path/to/venv MMADN_PINS=FILE bash tools/compat_check.sh
#
# The environment is made by tools/bootstrap.sh (the mmcv wheel is built once per torch
# version, about 20 minutes on 2 cores, and cached in ~/.cache/mmadn-wheels/torch-<version>/).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMADN_COMPAT_VENV:-$ROOT/.venv-oldest}"
PINS="${MMADN_PINS:-$ROOT/requirements/pins-oldest.txt}"

MMADN_VENV="$VENV" MMADN_PINS="$PINS" bash "$ROOT/tools/bootstrap.sh"
PY="$VENV/bin/python"
"$PY" - <<'PYEOF'
import importlib
names = ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmdet', 'mmpretrain', 'numpy')
print('[compat] stack: ' + ', '.join(
    f'{n} {importlib.import_module(n).__version__}' for n in names))
PYEOF
cd "$ROOT"
# pytest exits 5 when it collects no test: that is a failure here too
exec "$PY" -m pytest tests "$@"
