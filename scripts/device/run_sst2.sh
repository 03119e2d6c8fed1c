#!/bin/bash
# Device driver: bash scripts/device/run_sst2.sh smoke|real SECONDS. Everything worth keeping is copied to $OUT.
MODE=$1; BUDGET=$2; T0=$(date +%s); OUT=${OUT:-/tmp/out}; mkdir -p $OUT
left() { echo $((T0 + BUDGET - $(date +%s))); }
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ -d .gpu/whl ] && python3 -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 3
else
  export PYTHONPATH=$PWD
fi
nvidia-smi -L 2>/dev/null
python3 scripts/device/fp32.py .gpu/minilm16 /tmp/minilm || exit 4
bench() {  # bench OUTDIR RESERVE ARGS...: start no unit later than RESERVE seconds before the deadline
  local out=$1 reserve=$2; shift 2
  local l=$(left); [ $l -gt $((reserve + 20)) ] || return 0
  timeout $((l - 15)) python3 -c 'from egkd.cli import main; main()' bench glue --tasks sst2 --out $out \
    --data-dir .gpu/glue --teacher-model /tmp/minilm --max-hours $(python3 -c "print(($l - $reserve) / 3600)") "$@" \
    2>&1 | grep -v -E '^\s*$|it/s\]|s/it\]' | tail -c 20000
}
if [ "$MODE" = smoke ]; then
  bench /tmp/smoke 10 --methods egkd-all,pkd,adkd --students 'layers:1,3,5' --seeds sst2=1 --max-train-examples 96 \
    --epochs 0.5 --max-eval-examples 48 --explain-examples 16
  bench /tmp/smoke 5 --methods egkd-all --students 'bilstm:hidden=64' --seeds sst2=1 --max-train-examples 96 \
    --epochs 0.5 --max-eval-examples 48 --explain-examples 16
  R=/tmp/smoke
else
  bench /tmp/res 120 --methods kd,egkd-gradient,egkd-selection,ft,pkd,egkd-perturbation,egkd-all --students 'layers:1,3,5' --seeds sst2=1
  bench /tmp/res 100 --methods kd,egkd-gradient,egkd-selection --students 'layers:1,3,5' --seeds sst2=2
  bench /tmp/res 60 --methods adkd --students 'layers:1,3,5' --seeds sst2=1
  R=/tmp/res
fi
cp $R/results.jsonl $R/grids.json $OUT/ 2>/dev/null
(cd $R && find . -name '*.json' -o -name '*.csv' -o -name '*.yaml' -o -name '*.md' | grep -v checkpoint | tar czf $OUT/runs-small.tgz -T -) 2>/dev/null
ls -la $OUT; echo "left: $(left) s"
