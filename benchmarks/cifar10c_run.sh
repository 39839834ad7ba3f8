#!/usr/bin/env bash
# Regenerates benchmarks/cifar10c.md's numbers (2 CPU cores; see the .md for the wall times).
#   bash benchmarks/cifar10c_run.sh [SEEDS] [SEVERITY] [PER_CORRUPTION]
# defaults: 3 seeds, severity 5, 256 samples per corruption (2 devices x 128); PER_CORRUPTION 1024
# is the long stream (runs/c10c_continual_s${SEV}_1024*, about 4x the time).
# Every step resumes: finished runs are skipped, so an interrupted script can be re-run as is.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-3}
SEV=${2:-5}
PER=${3:-256}
FS=${FLEETSIM:-.venv/bin/fleetsim}
OUT=runs/c10c_continual_s${SEV}
FIG=benchmarks/figures/cifar10c_continual_s${SEV}
LEN=()
if [ "$PER" != 256 ]; then
    if [ $((PER % 2)) -ne 0 ]; then echo "PER_CORRUPTION must be even (2 devices), got $PER" >&2; exit 2; fi
    LEN=(--set stream.samples_per_device=$((PER * 15 / 2)) --set stream.segment_samples=$((PER / 2)))
    OUT=${OUT}_${PER}
    FIG=${FIG}_${PER}
fi

# 1. every method of the comparison (source, BN adapt, Tent, EATA, upload-all, CEMA), continual
"$FS" sweep scenarios/cifar10c_continual.yaml --out "$OUT" --seeds "$SEEDS" \
    --set stream.severity="$SEV" "${LEN[@]}" --jobs 2 --no-progress
# 2. random upload at the byte budget CEMA's runs measured
P=$("$FS" match-budget "$OUT" --method cema/cema --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["p"])')
"$FS" sweep scenarios/cifar10c_continual.yaml --out "${OUT}_random" --seeds "$SEEDS" \
    --set stream.severity="$SEV" "${LEN[@]}" --set policy.random.p="$P" \
    --zip cloud.adapter=cema --zip policy.name=random --jobs 2 --no-progress
# 3. the table (Markdown + LaTeX)
"$FS" table "$OUT" "${OUT}_random" --out "$FIG" \
    --label 'cema/random=Random (CEMA bytes)' --no-corruption-ci
