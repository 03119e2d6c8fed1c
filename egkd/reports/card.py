"""A short model card (README.md) in every run folder, so a student explains where it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from egkd.config import RunConfig
from egkd.data.tasks import get_task
from egkd.reports.tables import metric_rows, to_markdown


def write_model_card(out_dir: Path, cfg: RunConfig, kind: str, metrics: dict[str, Any]) -> None:
    spec = get_task(cfg.task)
    header, rows = metric_rows({out_dir.name: metrics}, spec)
    if kind == "finetune":
        origin = f"`{cfg.model}` fine-tuned on GLUE {spec.name}"
    else:
        origin = f"a `{cfg.student}` student distilled from `{cfg.teacher}` on GLUE {spec.name} with `{cfg.method}`"
    text = f"""---
library_name: transformers
tags: [egkd, knowledge-distillation, glue, {spec.name}]
---
# {out_dir.name}

This is {origin}, made with [egkd](https://pypi.org/project/egkd/) (explanation guided knowledge distillation).

## Results on {metrics.get('split', 'dev')}

{to_markdown(header, rows)}
## Use

```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained("{out_dir.name}")
tokenizer = AutoTokenizer.from_pretrained("{out_dir.name}")
```

## Training

Epochs {cfg.epochs:g}, batch {cfg.batch_size}, learning rate {cfg.learning_rate:g}, max length {cfg.max_seq_length},
seed {cfg.seed}; the full configuration is in `config.yaml`, the dev curve in `train_history.json`, per-example
predictions in `predictions_*.jsonl`.
"""
    (out_dir / "README.md").write_text(text)
