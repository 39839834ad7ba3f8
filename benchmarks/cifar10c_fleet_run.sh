#!/usr/bin/env bash
# The headline study (benchmarks/cifar10c_fleet.md): upload policies under bandwidth budgets on
# real CIFAR-10-C images and real 5G/4G uplink traces, 16 devices, scenarios/cifar10c_fleet.yaml.
#   bash benchmarks/cifar10c_fleet_run.sh [CONDITION ...]     (default: weather staggered)
#   STAGE=figures bash benchmarks/cifar10c_fleet_run.sh       (only redraw from the committed record)
# weather: the whole fleet meets each corruption at once; staggered: each device's corruption order
# is rotated (stream.stagger). Per condition:
#   1. the scenario's sweep: 5 uplink scales x 7 methods x 3 seeds          -> runs/cifar10c_fleet/C
#   2. random upload at CEMA's measured bytes, per uplink scale, 3 seeds    -> runs/cifar10c_fleet/C_random
#   3. the record: summary.json, config.yaml, run.json of every run (+ events.parquet of the runs the
#      timelines draw), committed under benchmarks/cifar10c_fleet/C[_random], so the figures and
#      tables can be redrawn (and the study resumed) without the run folders;
#   4. figures and tables from the record into benchmarks/figures/cifar10c_fleet/C (report/: every
#      run's numbers and the per-budget means of the network and cloud metrics).
# Every step resumes: finished runs are skipped, so an interrupted script can be re-run as is.
set -euo pipefail
cd "$(dirname "$0")/.."
FS=${FLEETSIM:-.venv/bin/fleetsim}
PY=${PYTHON:-.venv/bin/python}
JOBS=${JOBS:-2}
STAGE=${STAGE:-all}
SCENARIO=scenarios/cifar10c_fleet.yaml
RECORD=benchmarks/cifar10c_fleet
FIGURES=benchmarks/figures/cifar10c_fleet
LEVELS=$("$PY" -c 'import sys,yaml; print(" ".join(str(v) for v in yaml.safe_load(open(sys.argv[1]))["sweep"]["grid"]["network.uplink_scale"]))' "$SCENARIO")
STARVED=0.0001
AMPLE=1
CONDITIONS=("$@")
[ ${#CONDITIONS[@]} -gt 0 ] || CONDITIONS=(weather staggered)

fmt() {  # a level as sweep folder names write it (1.0 -> 1)
    "$PY" -c 'import sys; v=float(sys.argv[1]); print(int(v) if v.is_integer() else v)' "$1"
}

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
        case "$name" in  # the timelines' runs keep their events (seed 0, starved and ample)
            *"uplink_scale=$(fmt $STARVED)__"*seed=0|*"uplink_scale=$(fmt $AMPLE)__"*seed=0)
                cp "$run/events.parquet" "$dst/$name/" ;;
        esac
    done
}

for COND in "${CONDITIONS[@]}"; do
    case "$COND" in
        weather) STAGGER=false ;;
        staggered) STAGGER=true ;;
        *) echo "CONDITION must be weather or staggered, got '$COND'" >&2; exit 2 ;;
    esac
    OUT=runs/cifar10c_fleet/$COND
    if [ "$STAGE" = all ]; then
        # 0. resume from the record: its runs (summary.json + run.json with the config hash)
        #    count as finished, so a fresh clone continues where the committed study stopped
        for SRC in "$RECORD/$COND" "$RECORD/${COND}_random"; do
            [ -d "$SRC" ] || continue
            DST=runs/cifar10c_fleet/$(basename "$SRC")
            for run in "$SRC"/*/; do
                [ -d "$DST/$(basename "$run")" ] || { mkdir -p "$DST"; cp -r "$run" "$DST/"; }
            done
        done
        # 1. every method at every budget
        "$FS" sweep "$SCENARIO" --out "$OUT" --set stream.stagger=$STAGGER --jobs "$JOBS" --no-progress
        # 2. random upload at the bytes CEMA sent at each budget
        SCALES=() PS=()
        for L in $LEVELS; do
            P=$("$FS" match-budget "$OUT"/*"uplink_scale=$(fmt "$L")__"* --method cema/cema --json \
                | "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["p"], 4))')
            SCALES+=("$L") PS+=("$P")
        done
        "$FS" sweep "$SCENARIO" --out "${OUT}_random" --set stream.stagger=$STAGGER \
            --zip "network.uplink_scale=$(IFS=,; echo "${SCALES[*]}")" \
            --zip "policy.random.p=$(IFS=,; echo "${PS[*]}")" \
            --zip "cloud.adapter=$(printf 'cema,%.0s' $LEVELS | sed 's/,$//')" \
            --zip "policy.name=$(printf 'random,%.0s' $LEVELS | sed 's/,$//')" \
            --jobs "$JOBS" --no-progress
        # 3. the record
        record "$OUT" "$RECORD/$COND"
        record "${OUT}_random" "$RECORD/${COND}_random"
    fi
    # 4. figures and tables, from the record
    R=("$RECORD/$COND" "$RECORD/${COND}_random")
    F=$FIGURES/$COND
    mkdir -p "$F"
    LABEL=(--label 'cema/random=Random (CEMA bytes)' --label 'cema/budget=CEMA + budget')
    SWEEP=(--kind sweep --x network.uplink_scale "${LABEL[@]}" --out "$F")
    UPLOADING=(--method Upload-all --method EATA --method Uncertain --method CEMA
               --method 'CEMA + budget' --method 'Random (CEMA bytes)')
    # the headline figure: each uploading method's accuracy gain over edge-only BN adaptation,
    # paired per seed (the same streams), against the budget
    "$FS" plot "${R[@]}" "${SWEEP[@]}" --metric accuracy --relative-to 'BN adapt' "${UPLOADING[@]}"
    "$FS" plot "${R[@]}" "${SWEEP[@]}" --metric accuracy
    "$FS" plot "${R[@]}" "${SWEEP[@]}" --metric upload_bytes "${UPLOADING[@]}"
    "$FS" plot "${R[@]}" "${SWEEP[@]}" --metric state_staleness_mean_s "${UPLOADING[@]}"
    "$FS" plot "${R[@]}" --kind pareto "${LABEL[@]}" --out "$F"
    for L in $STARVED $AMPLE; do
        "$FS" plot "$RECORD/$COND"/*"uplink_scale=$(fmt "$L")__"*seed=0 --kind timeline "${LABEL[@]}" --out "$F/timeline_$(fmt "$L")"
    done
    "$FS" table "${R[@]}" --by method --by network.uplink_scale --out "$F/table" "${LABEL[@]}" --no-corruption-ci
    # every run's numbers and the per-budget means of the network and cloud metrics (dropped
    # uploads, updates, age of the state in use) in report/aggregate.md
    "$FS" report "${R[@]}" --out "$F/report"
    "$FS" compare "${R[@]}" --a CEMA --b 'Random (CEMA bytes)' --by network.uplink_scale "${LABEL[@]}" \
        > "$F/compare_cema_random.txt"
done
