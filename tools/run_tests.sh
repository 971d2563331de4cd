#!/usr/bin/env bash
# Set up (or reuse) the environment and run the test suite: bash tools/run_tests.sh [pytest args]
# The tests run on every core (pytest-xdist: one worker per core, a test file's tests in one
# worker, one torch thread per worker, see tests/conftest.py); MMADN_TEST_WORKERS sets the
# number of workers (0: all in this process, as plain `python -m pytest tests` does).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/bootstrap.sh
PY="${MMADN_VENV:-$ROOT/.venv}/bin/python"
# pytest exits 5 when it collects no test: that is a failure here too
exec "$PY" -m pytest tests -n "${MMADN_TEST_WORKERS:-auto}" --dist loadfile "$@"
