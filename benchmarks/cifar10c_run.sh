#!/usr/bin/env bash
# Regenerates benchmarks/cifar10c.md's numbers (2 CPU cores; see the .md for the wall times).
#   bash benchmarks/cifar10c_run.sh [SEEDS] [SEVERITY]      (defaults: 3 seeds, severity 5)
# Every step resumes: finished runs are skipped, so an interrupted script can be re-run as is.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-3}
SEV=${2:-5}
FS=${FLEETSIM:-.venv/bin/fleetsim}
OUT=runs/c10c_continual_s${SEV}

# 1. every method of the comparison (source, BN adapt, Tent, EATA, upload-all, CEMA), continual
"$FS" sweep scenarios/cifar10c_continual.yaml --out "$OUT" --seeds "$SEEDS" \
    --set stream.severity="$SEV" --jobs 2 --no-progress
# 2. random upload at the byte budget CEMA's runs measured
P=$("$FS" match-budget "$OUT" --method cema/cema --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["p"])')
"$FS" sweep scenarios/cifar10c_continual.yaml --out "${OUT}_random" --seeds "$SEEDS" \
    --set stream.severity="$SEV" --set policy.random.p="$P" \
    --zip cloud.adapter=cema --zip policy.name=random --jobs 2 --no-progress
# 3. the table (Markdown + LaTeX)
"$FS" table "$OUT" "${OUT}_random" --out "benchmarks/figures/cifar10c_continual_s${SEV}" \
    --label 'cema/random=Random (CEMA bytes)' --no-corruption-ci
