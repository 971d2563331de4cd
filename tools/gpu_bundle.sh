#!/usr/bin/env bash
# Makes, on this machine, the wheels that benchmarks/gpu_check.sh needs on the project's GPU
# machine (Python 3.12, torch 2.11 + CUDA 13 preinstalled, no package registry): everything
# the check imports that the machine lacks, for CPython 3.12 / x86-64.
#
#   bash tools/gpu_bundle.sh OUT_DIR
#
# - mmcv 2.1.0 is built from source against the machine's torch (tools/gpu_bundle_image.txt),
#   with its CUDA ops for the H100/H200 (sm_90) when CUDA 13's nvcc is here, else with its
#   C++ ops only (then the check's detector parts are skipped there, with one line);
# - mmengine, mmdet, mmpretrain (versions from requirements/pins.txt) and the packages they
#   import that the machine lacks (pinned below) are downloaded as wheels.
# The build runs in a Python 3.12 environment that holds the machine's packages
# (tools/gpu_bundle_image.txt; created on first use, about 5 GB: torch's CUDA build from PyPI,
# which also runs on a CPU). The built mmcv wheel is cached per torch and ops kind, so a
# second run takes seconds. OUT_DIR receives the wheels and BUNDLE.txt (what they were built
# for); an OUT_DIR inside this repository is added to .git/info/exclude so that it is never
# committed. Prints each wheel's size and the total, and fails above MMADN_BUNDLE_MAX_MIB.
#
# Environment:
#   PYTHON312              a CPython 3.12 (default: python3.12 on PATH, else pyenv's newest 3.12)
#   MMADN_GPU_ENV          the build environment (default ~/.cache/mmadn-gpu-env/py312-torch-<v>)
#   MMADN_WHEEL_DIR        cache of built mmcv wheels (default ~/.cache/mmadn-wheels/py312-torch-<v>)
#   MMADN_BUNDLE_CUDA      auto (default: CUDA ops if nvcc 13 is found) | 1 (CUDA ops or fail)
#                          | 0 (C++ ops only)
#   MMADN_BUNDLE_CUDA_TIMEOUT  seconds allowed for the CUDA build (default 5400)
#   MMADN_BUNDLE_MAX_MIB   size limit of the bundle (default 60)
#   CUDA_HOME              CUDA 13 toolkit with bin/nvcc (default /usr/local/cuda)
#   MAX_JOBS               parallel compile jobs (default 2); builds run under nice -n 19
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[gpu_bundle] %s\n' "$*" >&2; }
die() { printf 'gpu_bundle: %s\n' "$*" >&2; exit 2; }

[ $# -eq 1 ] && [ -n "$1" ] && [ "${1#-}" = "$1" ] \
    || die "expected one argument, the output folder (got: ${*:-nothing}); usage: bash tools/gpu_bundle.sh OUT_DIR"
OUT="$1"

IMAGE_LIST="$ROOT/tools/gpu_bundle_image.txt"
PINS="$ROOT/requirements/pins.txt"
pin() {  # "NAME==VERSION" from a requirements file, e.g. pin torch FILE -> torch==2.11.0
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$2" | grep -E "^$1==" | head -n 1
}
TORCH_PIN="$(pin torch "$IMAGE_LIST")"
TORCH_VERSION="${TORCH_PIN#torch==}"
MMCV_PIN="$(pin mmcv "$PINS")"
MMCV_VERSION="${MMCV_PIN#mmcv==}"
[ -n "$TORCH_VERSION" ] || die "$IMAGE_LIST has no torch==VERSION line"
[ -n "$MMCV_VERSION" ] || die "$PINS has no mmcv==VERSION line"
# what the machine lacks and the check imports (mmdet: pycocotools, shapely, terminaltables;
# mmengine: addict, yapf (+ platformdirs), termcolor; mmpretrain: mat4py, model-index
# (+ ordered-set), importlib-metadata (9.1: 10.x needs lazy-importer too)); the rest of their
# requirements is on the machine (tools/gpu_bundle_image.txt)
WHEELS=(
    "$(pin mmengine "$PINS")" "$(pin mmdet "$PINS")" "$(pin mmpretrain "$PINS")"
    pycocotools==2.0.11 shapely==2.2.0 terminaltables==3.1.10
    addict==2.4.0 yapf==0.43.0 platformdirs==4.14.9 termcolor==3.3.0
    mat4py==0.6.0 model-index==0.1.11 ordered-set==4.1.0 importlib-metadata==9.1.0
)
for w in "${WHEELS[@]}"; do
    [ -n "$w" ] || die "$PINS lacks one of mmengine / mmdet / mmpretrain ==VERSION"
done

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}"
ENV_DIR="${MMADN_GPU_ENV:-$CACHE/mmadn-gpu-env/py312-torch-$TORCH_VERSION}"
WHEEL_DIR="${MMADN_WHEEL_DIR:-$CACHE/mmadn-wheels/py312-torch-$TORCH_VERSION}"
CUDA_MODE="${MMADN_BUNDLE_CUDA:-auto}"
CUDA_TIMEOUT="${MMADN_BUNDLE_CUDA_TIMEOUT:-5400}"
MAX_MIB="${MMADN_BUNDLE_MAX_MIB:-60}"
export MAX_JOBS="${MAX_JOBS:-2}"
case "$CUDA_MODE" in auto|0|1) ;;
    *) die "MMADN_BUNDLE_CUDA=$CUDA_MODE: expected auto, 1 (CUDA ops or fail) or 0 (C++ ops only)" ;;
esac
[[ "$CUDA_TIMEOUT" =~ ^[1-9][0-9]*$ ]] \
    || die "MMADN_BUNDLE_CUDA_TIMEOUT=$CUDA_TIMEOUT: expected a whole number of seconds"
[[ "$MAX_MIB" =~ ^[1-9][0-9]*$ ]] || die "MMADN_BUNDLE_MAX_MIB=$MAX_MIB: expected a whole number"
[ "$(uname -m)" = x86_64 ] || die "this machine is $(uname -m); the GPU machine is x86_64: build the bundle on an x86_64 machine"

# 1. a CPython 3.12
is_cpython312() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12) or sys.implementation.name != "cpython")' \
        >/dev/null 2>&1
}
if [ -n "${PYTHON312:-}" ]; then
    is_cpython312 "$PYTHON312" || die "PYTHON312=$PYTHON312 is not CPython 3.12 ($("$PYTHON312" -c 'import sys; print(sys.version.split()[0])' 2>&1 | head -n 1)); the GPU machine runs CPython 3.12"
    PY312="$PYTHON312"
else
    PY312=""
    # python3.12 on PATH (a pyenv shim of an inactive version does not run), then pyenv's own
    for p in "$(command -v python3.12 || true)" $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12.*/bin/python 2>/dev/null | sort -rV); do
        if [ -n "$p" ] && is_cpython312 "$p"; then PY312="$p"; break; fi
    done
    [ -n "$PY312" ] || die "no CPython 3.12 found (python3.12 on PATH, ~/.pyenv/versions/3.12.*); set PYTHON312=/path/to/python3.12"
fi

# 2. the build environment: the GPU machine's packages (torch first), nothing else
PY="$ENV_DIR/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
image_stamp="$(sha256sum "$IMAGE_LIST" | cut -d' ' -f1)"
if [ ! -x "$PY" ]; then
    log "creating the Python 3.12 environment $ENV_DIR"
    mkdir -p "$(dirname "$ENV_DIR")"
    "$PY312" -m venv "$ENV_DIR"
fi
if [ "$(cat "$ENV_DIR/.mmadn-image" 2>/dev/null)" != "$image_stamp" ]; then
    log "installing the GPU machine's packages into it (tools/gpu_bundle_image.txt; torch $TORCH_VERSION is about 5 GB the first time)"
    nice -n 19 "${PIP[@]}" -r "$IMAGE_LIST"
    echo "$image_stamp" >"$ENV_DIR/.mmadn-image"
fi
TORCH_FULL="$("$PY" -c 'import torch; print(torch.__version__)')"
[ "${TORCH_FULL%%+*}" = "$TORCH_VERSION" ] \
    || die "$ENV_DIR has torch $TORCH_FULL, expected $TORCH_VERSION (remove $ENV_DIR to recreate it)"
TORCH_CUDA="$("$PY" -c 'import torch; print(torch.version.cuda or "")')"

STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT

# 3. the wheels that exist as such, for CPython 3.12 on x86-64 Linux
log "downloading ${#WHEELS[@]} wheels"
"$PY" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$STAGE" "${WHEELS[@]}" 2>&1 \
    | grep -v 'is ignored: it is neither a file nor a directory' >&2 || true
[ "$(ls "$STAGE"/*.whl 2>/dev/null | wc -l)" -eq "${#WHEELS[@]}" ] \
    || die "pip download returned $(ls "$STAGE"/*.whl 2>/dev/null | wc -l) of ${#WHEELS[@]} wheels (${WHEELS[*]})"

# 4. mmcv with its ops, built against this torch (cached per torch version and ops kind)
mmcv_ops_kind() {  # "cuda 13.0" or "cpu": the ops of the mmcv wheel among the wheels in $1
    local tmp kind
    tmp="$(mktemp -d)"
    "$PY" -m pip install --disable-pip-version-check -q --no-index --no-deps --no-compile \
        --target "$tmp" "$1"/*.whl >&2
    kind="$(cd /tmp && PYTHONPATH="$tmp" "$PY" -c '
import torch, mmcv.ops
v = mmcv.ops.get_compiling_cuda_version()
print("cpu" if v == "not available" else "cuda " + v)')" || kind="broken"
    rm -rf "$tmp"
    echo "$kind"
}
build_mmcv() {  # build_mmcv DEST_DIR LOG cuda|cpu
    local dest=$1 logf=$2 kind=$3
    # mmcv's source, unpacked once into the cache and built in place: a build stopped by its
    # time limit (or anything else) continues where it stopped on the next run (ninja keeps
    # the objects it finished); removed once the wheel is built
    local src="$WHEEL_DIR/build-$kind/mmcv-$MMCV_VERSION"
    mkdir -p "$dest" "$(dirname "$src")"
    : >"$logf"
    if [ ! -f "$src/setup.py" ]; then
        rm -rf "$src" "$src.download"
        "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
            --no-build-isolation -d "$src.download" "$MMCV_PIN" >>"$logf" 2>&1 || return 1
        mkdir -p "$src"
        tar xzf "$src.download"/mmcv-"$MMCV_VERSION".tar.gz -C "$src" --strip-components 1 \
            || return 1
        rm -rf "$src.download"
    fi
    # without debug information (a wheel several times smaller): setuptools' CFLAGS from the
    # environment replace Python's "-DNDEBUG -g -O3 -Wall" for the C++ files
    local env=(MMCV_WITH_OPS=1 MAX_JOBS="$MAX_JOBS" CFLAGS="-DNDEBUG -O3 -g0${CFLAGS:+ $CFLAGS}")
    local site
    site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    if [ "$kind" = cuda ]; then
        # cublas/cusparse/cusolver headers (included by ATen's CUDA headers) come with torch's
        # nvidia-* wheels
        env+=(FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 CUDA_HOME="$CUDA_DIR"
              PATH="$CUDA_DIR/bin:$PATH" CPATH="$site/nvidia/cu13/include${CPATH:+:$CPATH}")
    else
        env+=(FORCE_CUDA=0 CUDA_HOME=/nonexistent)
    fi
    env "${env[@]}" PATH="$ENV_DIR/bin:$PATH" nice -n 19 "$PY" -m pip wheel \
        --disable-pip-version-check --no-deps --no-build-isolation --no-cache-dir \
        -w "$dest" "$src" >>"$logf" 2>&1 || return 1
    rm -rf "$(dirname "$src")"
}
cached_mmcv() { ls "$1"/mmcv-"$MMCV_VERSION"-cp312-*.whl 2>/dev/null | head -n 1 || true; }

CUDA_DIR="${CUDA_HOME:-/usr/local/cuda}"
CUDA_CACHE="$WHEEL_DIR/cuda-sm_90"
CPU_CACHE="$WHEEL_DIR/cpu"
MMCV_WHEEL=""
NOTE=""
if [ "$CUDA_MODE" != 0 ]; then
    MMCV_WHEEL="$(cached_mmcv "$CUDA_CACHE")"
    if [ -n "$MMCV_WHEEL" ]; then
        log "reusing $MMCV_WHEEL"
    else
        nvcc_release="$("$CUDA_DIR/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
        if [ -z "$nvcc_release" ]; then
            NOTE="no nvcc at $CUDA_DIR/bin/nvcc (set CUDA_HOME to a CUDA ${TORCH_CUDA:-13} toolkit)"
        elif [ "${nvcc_release%%.*}" != "${TORCH_CUDA%%.*}" ]; then
            NOTE="nvcc at $CUDA_DIR is CUDA $nvcc_release, torch $TORCH_FULL was built with CUDA $TORCH_CUDA (the major versions must match)"
        else
            logf="$WHEEL_DIR/build-cuda.log"
            mkdir -p "$WHEEL_DIR"
            log "building mmcv $MMCV_VERSION with its CUDA ops for sm_90 (nvcc $nvcc_release, $MAX_JOBS jobs, at most $CUDA_TIMEOUT s; log: $logf)"
            t0=$SECONDS
            # timeout ends the whole build (pip, ninja, nvcc): it signals its process group
            export -f build_mmcv
            export PY ENV_DIR CUDA_DIR MMCV_PIN MMCV_VERSION WHEEL_DIR
            if timeout --kill-after=30 "$CUDA_TIMEOUT" \
                    bash -c 'build_mmcv "$@"' _ "$STAGE/mmcv-cuda" "$logf" cuda; then
                mkdir -p "$CUDA_CACHE"
                cp "$STAGE"/mmcv-cuda/mmcv-*.whl "$CUDA_CACHE/"
                MMCV_WHEEL="$(cached_mmcv "$CUDA_CACHE")"
                log "built in $((SECONDS - t0)) s: $MMCV_WHEEL"
            else
                rc=$?
                if [ "$rc" -ge 124 ]; then
                    NOTE="the CUDA build did not finish within MMADN_BUNDLE_CUDA_TIMEOUT=$CUDA_TIMEOUT s (run the script again: it continues from $WHEEL_DIR/build-cuda)"
                else
                    NOTE="the CUDA build failed (exit $rc): $(grep -m 3 -E '(^|[^-])[Ee]rror[: ]' "$logf" | tr '\n' ' ' | cut -c1-400)"
                fi
                NOTE="$NOTE; log: $logf"
            fi
        fi
        if [ -z "$MMCV_WHEEL" ]; then
            [ "$CUDA_MODE" = 1 ] && die "mmcv with CUDA ops: $NOTE"
            log "mmcv's CUDA ops: $NOTE; building its C++ ops only"
        fi
    fi
fi
if [ -z "$MMCV_WHEEL" ]; then
    MMCV_WHEEL="$(cached_mmcv "$CPU_CACHE")"
    if [ -n "$MMCV_WHEEL" ]; then
        log "reusing $MMCV_WHEEL"
    else
        logf="$WHEEL_DIR/build-cpu.log"
        mkdir -p "$WHEEL_DIR"
        log "building mmcv $MMCV_VERSION with its C++ ops ($MAX_JOBS jobs; log: $logf)"
        t0=$SECONDS
        build_mmcv "$STAGE/mmcv-cpu" "$logf" cpu \
            || die "building mmcv failed: $(grep -m 3 -E '(^|[^-])[Ee]rror[: ]' "$logf" | tr '\n' ' ' | cut -c1-400); log: $logf"
        mkdir -p "$CPU_CACHE"
        cp "$STAGE"/mmcv-cpu/mmcv-*.whl "$CPU_CACHE/"
        MMCV_WHEEL="$(cached_mmcv "$CPU_CACHE")"
        log "built in $((SECONDS - t0)) s: $MMCV_WHEEL"
    fi
fi
cp "$MMCV_WHEEL" "$STAGE/"
OPS_KIND="$(mmcv_ops_kind "$STAGE")"
[ "$OPS_KIND" != broken ] || die "$MMCV_WHEEL does not import with torch $TORCH_FULL (remove it to rebuild)"

# 5. the bundle: these wheels and BUNDLE.txt, nothing else
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 && [ "${OUT#"$ROOT"/}" != "$OUT" ]; then
    rel="${OUT#"$ROOT"/}"
    if ! git -C "$ROOT" check-ignore -q "$rel/BUNDLE.txt"; then
        exclude="$(git -C "$ROOT" rev-parse --git-path info/exclude)"
        case "$exclude" in /*) ;; *) exclude="$ROOT/$exclude" ;; esac
        mkdir -p "$(dirname "$exclude")"
        echo "/$rel/" >>"$exclude"
        log "added /$rel/ to $exclude (the bundle is never committed)"
    fi
fi
rm -f "$OUT"/*.whl "$OUT/BUNDLE.txt"
cp "$STAGE"/*.whl "$OUT/"
{
    echo "python=3.12"
    echo "torch=$TORCH_FULL"
    if [ "${OPS_KIND%% *}" = cuda ]; then echo "mmcv_ops=${OPS_KIND} sm_90"; else echo "mmcv_ops=cpu"; fi
    [ -z "$NOTE" ] || echo "mmcv_cuda_note=$NOTE"
} >"$OUT/BUNDLE.txt"

# 6. it installs offline and imports, as on the GPU machine
check="$(mktemp -d)"
"$PY" -m pip install --disable-pip-version-check -q --no-index --no-deps --no-compile \
    --target "$check" "$OUT"/*.whl
(cd /tmp && PYTHONPATH="$check" "$PY" -c 'import mmcv.ops, mmengine, mmdet, mmpretrain, pycocotools.coco, shapely, mat4py, modelindex, terminaltables') \
    || { rm -rf "$check"; die "the bundle in $OUT does not import in $ENV_DIR"; }
rm -rf "$check"

total=0
while read -r bytes name; do
    printf '  %8.2f MiB  %s\n' "$(awk "BEGIN {print $bytes / 1048576}")" "$name"
    total=$((total + bytes))
done < <(cd "$OUT" && stat -c '%s %n' *.whl | sort -rn)
printf '  %8.2f MiB  total, %d wheels in %s (mmcv ops: %s)\n' \
    "$(awk "BEGIN {print $total / 1048576}")" "$(ls "$OUT"/*.whl | wc -l)" "$OUT" "$OPS_KIND"
[ "$total" -le $((MAX_MIB * 1048576)) ] \
    || die "the bundle is $((total / 1048576)) MiB, above MMADN_BUNDLE_MAX_MIB=$MAX_MIB"
