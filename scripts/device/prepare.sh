#!/bin/bash
# Fill .gpu/ (git-ignored, carried to the device machine) with what run_grid.sh needs there and cannot fetch:
# all-MiniLM-L6-v2 cast to fp16 (the carry limit is 64 MiB; fp32.py casts it back there), the train/dev TSVs
# of the five grid tasks (9 MB), and wheels of what the device image lacks (datasets, dill, multiprocess; py3.12).
# Usage (repo root, .venv set up): bash scripts/device/prepare.sh [GLUE_DIR]
set -euo pipefail
GLUE=${1:-${GLUE_DIR:-../shared/data/glue}}
grep -qx "/.gpu/" "$(git rev-parse --git-dir)/info/exclude" || echo "/.gpu/" >> "$(git rev-parse --git-dir)/info/exclude"
mkdir -p .gpu/minilm16 .gpu/whl
for task in SST-2 MRPC RTE CoLA STS-B; do
  mkdir -p .gpu/glue/$task && cp "$GLUE"/$task/train.tsv "$GLUE"/$task/dev.tsv .gpu/glue/$task/
done
.venv/bin/python - <<'PY'
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from egkd.models.resolve import bundled_path

src, dst = bundled_path("sentence-transformers/all-MiniLM-L6-v2"), Path(".gpu/minilm16")
for name in ("config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
    shutil.copy(src / name, dst / name)
sd = load_file(src / "model.safetensors")
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
          dst / "model.safetensors", metadata={"format": "pt"})
PY
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
du -sh .gpu
