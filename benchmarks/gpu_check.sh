#!/usr/bin/env bash
# On the GPU machine (see gpu_prepare.sh): install the carried wheels beside its own PyTorch, then
# run every section of gpu_check.py; the report lands in $OUT/gpu_check.md and .json.
set -uo pipefail
if ! ls .gpu/wheels/*.whl >/dev/null 2>&1 || [ ! -d .gpu/data/cifar10 ] || [ ! -d .gpu/models ]; then
    echo "no .gpu/wheels, .gpu/data or .gpu/models: run benchmarks/gpu_prepare.sh here first, then carry .gpu" >&2
    exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 FLEETSIM_CACHE=/tmp/fleetsim-cache \
  FLEETSIM_MODELS="$PWD/.gpu/models"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 benchmarks/gpu_check.py --device cuda --data .gpu/data/cifar10 --out "${OUT:-/tmp}" "$@" \
  2>&1 | tee "${OUT:-/tmp}/gpu_check.log"
