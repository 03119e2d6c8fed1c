#!/usr/bin/env bash
# The reference runs of docs/measurements.md: one all-MiniLM-L6-v2 teacher per task and its 3-layer students.
# Finished runs (metrics.json present) are skipped; interrupted ones resume from their last checkpoint.
#   bash scripts/reference_runs.sh                 # every task
#   bash scripts/reference_runs.sh mrpc rte        # some tasks
set -euo pipefail
cd "$(dirname "$0")/.."
EGKD=${EGKD:-.venv/bin/egkd}
tasks=("$@"); [ ${#tasks[@]} -gt 0 ] || tasks=(mrpc rte stsb cola sst2)

run() {  # run KIND OUT ARGS...: finetune/distill unless OUT already holds a finished run
  local kind=$1 out=$2; shift 2
  if [ -f "$out/metrics.json" ]; then echo "done: $out"; return; fi
  local resume=()
  if [ -d "$out/checkpoints/last" ]; then resume=(--resume); elif [ -d "$out" ]; then resume=(--overwrite); fi
  $EGKD "$kind" --out "$out" "${resume[@]}" "$@"
}

for t in "${tasks[@]}"; do
  run finetune "runs/ref/$t-teacher" --config "configs/$t-teacher.yaml"
  run distill "runs/ref/$t-kd" --config "configs/$t-kd.yaml"
  if [ "$t" = mrpc ] || [ "$t" = sst2 ]; then   # issue 3: KD versus each EGKD family on MRPC and SST-2
    for fam in gradient perturbation selection; do
      run distill "runs/ref/$t-egkd-$fam" --config "configs/$t-kd.yaml" --method egkd --explainer "$fam"
    done
  fi
done
