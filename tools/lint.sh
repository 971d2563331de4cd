#!/usr/bin/env bash
# Lint as OpenMMLab projects do: flake8's checks (by ruff, ruff.toml), import order (isort,
# .isort.cfg) and layout (yapf, .style.yapf). Sets up (or reuses) the environment first.
#   bash tools/lint.sh          # check: what CI runs (.ci/run)
#   bash tools/lint.sh --fix    # sort the imports and format, then check
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/bootstrap.sh
BIN="${MMADN_VENV:-$ROOT/.venv}/bin"
# the project's Python files (git's view: tracked and untracked-not-ignored)
mapfile -t FILES < <(git ls-files --cached --others --exclude-standard '*.py')
if [ "${1:-}" = "--fix" ]; then
    "$BIN/isort" -q "${FILES[@]}"
    "$BIN/yapf" -i "${FILES[@]}"
fi
"$BIN/ruff" check "${FILES[@]}"
"$BIN/isort" --check-only --diff -q "${FILES[@]}"
if ! "$BIN/yapf" --diff "${FILES[@]}"; then
    echo "lint: yapf would reformat the files above (bash tools/lint.sh --fix)" >&2
    exit 1
fi
