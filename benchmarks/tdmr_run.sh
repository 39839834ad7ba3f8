#!/usr/bin/env bash
# TDMR against CEMA on CIFAR-10-C (benchmarks/tdmr.md), scenarios/tdmr.yaml.
#   bash benchmarks/tdmr_run.sh                  (run what is missing, record, draw)
#   STAGE=figures bash benchmarks/tdmr_run.sh    (only redraw from the committed record)
#   1. main: the scenario's sweep, 3 uplink budgets x {TDMR, CEMA, upload-all} x 3 seeds  -> runs/tdmr/main
#   2. ablation at 1 Mbit/s: TDMR without the proxy space, without progressive distillation,
#      and plain KD, 3 seeds each (TDMR itself is main's 1 Mbit/s run)                -> runs/tdmr/ablation
#   3. reference points without a cloud model: source and BN adapt (edge-only), 3 seeds  -> runs/tdmr/edge_only
#   4. the record: summary.json, config.yaml, run.json of every run (+ events.parquet of seed 0
#      at 1 Mbit/s), committed under benchmarks/tdmr/{main,ablation}; a fresh clone resumes from it
#   5. figures and tables into benchmarks/figures/tdmr
# Every step resumes: finished runs are skipped, so an interrupted script can be re-run as is.
set -euo pipefail
cd "$(dirname "$0")/.."
FS=${FLEETSIM:-.venv/bin/fleetsim}
JOBS=${JOBS:-2}
STAGE=${STAGE:-all}
SCENARIO=scenarios/tdmr.yaml
RECORD=benchmarks/tdmr
FIGURES=benchmarks/figures/tdmr

record() {  # copy the small files of every finished run of $1 into $2
    local src=$1 dst=$2
    mkdir -p "$dst"
    [ -f "$src/sweep.json" ] && cp "$src/sweep.json" "$dst/"
    for run in "$src"/*/; do
        [ -f "$run/summary.json" ] || continue
        local name; name=$(basename "$run")
        mkdir -p "$dst/$name"
        cp "$run/summary.json" "$run/config.yaml" "$dst/$name/"
        [ -f "$run/run.json" ] && cp "$run/run.json" "$dst/$name/"
        case "$name" in
            *"uplink_mbps=1__"*seed=0) cp "$run/events.parquet" "$dst/$name/" ;;
        esac
    done
}

if [ "$STAGE" = all ]; then
    for PART in main ablation edge_only; do  # 0. resume from the record
        [ -d "$RECORD/$PART" ] || continue
        for run in "$RECORD/$PART"/*/; do
            [ -d "runs/tdmr/$PART/$(basename "$run")" ] || { mkdir -p "runs/tdmr/$PART"; cp -r "$run" "runs/tdmr/$PART/"; }
        done
    done
    "$FS" sweep "$SCENARIO" --out runs/tdmr/main --jobs "$JOBS" --no-progress
    record runs/tdmr/main "$RECORD/main"
    "$FS" sweep "$SCENARIO" --out runs/tdmr/ablation --jobs "$JOBS" --no-progress \
        --grid network.uplink_mbps=1 \
        --zip cloud.adapter=tdmr,tdmr,tdmr --zip policy.name=cema,cema,cema \
        --zip cloud.tdmr.variant=no_proxy,no_progressive,plain_kd
    record runs/tdmr/ablation "$RECORD/ablation"
    "$FS" sweep "$SCENARIO" --out runs/tdmr/edge_only --jobs "$JOBS" --no-progress \
        --grid network.uplink_mbps=1 --zip cloud.adapter=none,bn_stats --zip policy.name=none,none
    record runs/tdmr/edge_only "$RECORD/edge_only"
fi
R=("$RECORD/main" "$RECORD/ablation" "$RECORD/edge_only")
mkdir -p "$FIGURES"
LABEL=(--label 'tdmr/cema=TDMR' --label 'cema/all=Upload-all' --label 'none/none=Source' --label 'bn_stats/none=BN adapt')
"$FS" plot "$RECORD/main" --kind sweep --x network.uplink_mbps --metric accuracy "${LABEL[@]}" --out "$FIGURES"
"$FS" plot "$RECORD/main" --kind sweep --x network.uplink_mbps --metric download_bytes "${LABEL[@]}" --out "$FIGURES"
"$FS" plot "$RECORD/main" --kind pareto "${LABEL[@]}" --out "$FIGURES"
"$FS" table "$RECORD/main" "$RECORD/edge_only" --by method --by network.uplink_mbps --out "$FIGURES/table" "${LABEL[@]}" --no-corruption-ci
# the ablation: TDMR and its three variants at 1 Mbit/s (TDMR's own runs come from main)
"$FS" table "$RECORD/ablation" "$RECORD/main"/*"uplink_mbps=1__cloud.adapter=tdmr__"* \
    --by cloud.tdmr.variant --out "$FIGURES/ablation" --no-corruption-ci
"$FS" report "${R[@]}" --out "$FIGURES/report"
"$FS" compare "$RECORD/main" --a TDMR --b CEMA --by network.uplink_mbps "${LABEL[@]}" > "$FIGURES/compare_tdmr_cema.txt"
