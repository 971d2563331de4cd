#!/usr/bin/env bash
# Set up (or reuse) the environment and run the test suite: bash tools/run_tests.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/bootstrap.sh
PY="${MMADN_VENV:-$ROOT/.venv}/bin/python"
# pytest exits 5 when it collects no test: that is a failure here too
exec "$PY" -m pytest tests "$@"
