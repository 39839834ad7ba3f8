#!/usr/bin/env bash
# Regenerates benchmarks/cifar10c.md's numbers (2 CPU cores; see the .md for the wall times).
#   bash benchmarks/cifar10c_run.sh [SEEDS] [SEVERITY] [PER_CORRUPTION] [PROTOCOL]
# defaults: 3 seeds, severity 5, 256 samples per corruption (2 devices x 128), continual.
# PER_CORRUPTION 1024 is the long stream (about 4x the time); PROTOCOL reset runs each corruption
# alone from the source model (scenarios/cifar10c_reset.yaml; random upload then gets CEMA's
# measured budget per corruption). Runs go to runs/c10c_${PROTOCOL}_s${SEV}[_${PER}], the table to
# benchmarks/figures/cifar10c_${PROTOCOL}_s${SEV}[_${PER}].md/.tex.
# Every step resumes: finished runs are skipped, so an interrupted script can be re-run as is.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${1:-3}
SEV=${2:-5}
PER=${3:-256}
PROTOCOL=${4:-continual}
FS=${FLEETSIM:-.venv/bin/fleetsim}
case "$PROTOCOL" in
    continual) SEGMENTS=15 ;;
    reset) SEGMENTS=1 ;;
    *) echo "PROTOCOL must be continual or reset, got '$PROTOCOL'" >&2; exit 2 ;;
esac
if [ $((PER % 2)) -ne 0 ] || [ "$PER" -le 0 ]; then
    echo "PER_CORRUPTION must be a positive even number (2 devices), got $PER" >&2; exit 2
fi
SCENARIO=scenarios/cifar10c_${PROTOCOL}.yaml
OUT=runs/c10c_${PROTOCOL}_s${SEV}
FIG=benchmarks/figures/cifar10c_${PROTOCOL}_s${SEV}
LEN=()
if [ "$PER" != 256 ]; then
    LEN=(--set stream.samples_per_device=$((PER * SEGMENTS / 2)) --set stream.segment_samples=$((PER / 2)))
    OUT=${OUT}_${PER}
    FIG=${FIG}_${PER}
fi

# 1. every method of the comparison (source, BN adapt, Tent, EATA, upload-all, CEMA)
"$FS" sweep "$SCENARIO" --out "$OUT" --seeds "$SEEDS" \
    --set stream.severity="$SEV" "${LEN[@]}" --jobs 2 --no-progress
# 2. random upload at the byte budget CEMA's runs measured (per corruption for reset)
BUDGET=$("$FS" match-budget "$OUT" --method cema/cema --json)
if [ "$PROTOCOL" = continual ]; then
    P=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["p"])' <<<"$BUDGET")
    "$FS" sweep "$SCENARIO" --out "${OUT}_random" --seeds "$SEEDS" \
        --set stream.severity="$SEV" "${LEN[@]}" --set policy.random.p="$P" \
        --zip cloud.adapter=cema --zip policy.name=random --jobs 2 --no-progress
else
    # the scenario's own sweep block would multiply the zip below: run a copy without it
    BASE=$(mktemp --suffix=.yaml)
    trap 'rm -f "$BASE"' EXIT
    sed '/^sweep:/,$d' "$SCENARIO" >"$BASE"
    mapfile -t ZIP < <(python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["zip_args"]))' <<<"$BUDGET")
    "$FS" sweep "$BASE" --out "${OUT}_random" --seeds "$SEEDS" \
        --set stream.severity="$SEV" "${LEN[@]}" --set cloud.adapter=cema "${ZIP[@]}" \
        --jobs 2 --no-progress
fi
# 3. the table (Markdown + LaTeX)
"$FS" table "$OUT" "${OUT}_random" --out "$FIG" \
    --label 'cema/random=Random (CEMA bytes)' --no-corruption-ci
