#!/bin/bash
# Run `egkd bench glue` stages on the device machine inside a time budget; what is worth keeping goes to $OUT.
#   bash scripts/device/run_grid.sh PLAN SECONDS [RESULTS]
# PLAN: one stage per line, "RESERVE bench-glue-arguments...": the stage starts no unit later than RESERVE
# seconds before the deadline (so a unit is not killed half-way); blank lines and # comments are skipped.
# Needs .gpu/ from scripts/device/prepare.sh, carried with the call (run's carry: [".gpu"]).
# WORKERS=N (default 1) starts N processes on each stage: a 3-layer student is kernel-launch bound on one GPU, so
# several processes sharing the results folder (egkd.locks) keep it busier; each line is tagged [wN].
# RESUME=FOLDER (a results folder of the repo, e.g. results-adkd-h200) starts from its results.jsonl and
# grids.json, so a grid begun in an earlier session goes on: its teachers are trained again on the machine and
# the runner checks them against their records (GPU teachers have reproduced there; else it refuses in one line).
PLAN=$1; BUDGET=$2; RES=${3:-/tmp/res}; T0=$(date +%s); OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -n "$RESUME" ] && [ ! -f "$RES/results.jsonl" ]; then
  mkdir -p "$RES" && cp "$RESUME"/results.jsonl "$RESUME"/grids.json "$RES"/ || exit 5
fi
left() { echo $((T0 + BUDGET - $(date +%s))); }
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if python3 -c 'import datasets' 2>/dev/null; then
  export PYTHONPATH=$PWD
else  # the device image lacks datasets (and dill, multiprocess): install the carried wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 3
fi
nvidia-smi -L 2>/dev/null
[ -f /tmp/minilm/model.safetensors ] || python3 scripts/device/fp32.py .gpu/minilm16 /tmp/minilm || exit 4
while read -r reserve args; do
  [[ -z "$reserve" || "$reserve" == \#* ]] && continue
  l=$(left); [ "$l" -gt $((reserve + 20)) ] || break
  eval "set -- $args"
  hours=$(python3 -c "print(($l - $reserve) / 3600)")
  for w in $(seq 1 "${WORKERS:-1}"); do
    timeout $((l - 15)) python3 -c 'from egkd.cli import main; main()' bench glue --out "$RES" --data-dir .gpu/glue \
      --teacher-model /tmp/minilm --max-hours "$hours" "$@" 2>&1 \
      | grep --line-buffered -v -E '^\s*$|it/s\]|s/it\]' | sed -u "s/^/[w$w] /" | tee -a "$OUT/log.txt" &
    sleep 3  # the first takes the first teacher's lock; the next ones go on to other tasks' teachers
  done
  wait
done < "$PLAN"
cp "$RES"/results.jsonl "$RES"/grids.json "$RES"/failures.jsonl "$OUT"/ 2>/dev/null
ls -la "$OUT"; echo "left: $(left) s"
