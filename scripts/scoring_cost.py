"""What scoring one grid unit costs, part by part: the plain evaluation (dev predictions, fidelity, throughput of
student and teacher) and the explanation metrics with and without the teacher's own ERASER faithfulness.

    python scripts/scoring_cost.py results/teachers/rte rte

The student is `layers:1,3,5` cut from the teacher (untrained: the cost does not depend on training). Before
2026-12-04 the grid evaluated every unit twice (once at the end of training, once more for its explanations) and
scored the teacher's faithfulness each time; now it evaluates once and leaves the teacher's faithfulness out.
Prints a Markdown table; run it beside nothing else, or compare the rows of one run only.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from egkd import api
from egkd.bench.protocol import TASK_PLAN
from egkd.config import RunConfig
from egkd.data.tasks import get_task
from egkd.data.tokenize import Collator
from egkd.evaluation.explanations import explanation_report
from egkd.models.students import build_student, load_classifier
from egkd.reports.tables import to_markdown


def main(teacher_dir: str, task_name: str, n_explain: int = 200) -> None:
    task = get_task(task_name)
    length = TASK_PLAN.get(task.name, {}).get("max_seq_length", 128)  # the grid's length for the task
    teacher = load_classifier(teacher_dir, task, expect_head=True)
    student = build_student("layers:1,3,5", teacher, task)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        student.model.save_pretrained(run)
        student.tokenizer.save_pretrained(run)
        RunConfig(task=task.name, teacher=teacher_dir, max_seq_length=length).save(run / "config.yaml")
        start = time.perf_counter()
        api.evaluate(run, show=False)
        rows.append(["evaluation without explanations (was run twice per unit)", f"{time.perf_counter() - start:.1f}"])
    cfg = RunConfig(task=task.name, max_seq_length=length, batch_size=32)
    ds = api.load_tokenized(task, task.dev_splits[0], student.tokenizer, cfg, None, all_processes=False)
    for with_teacher in (True, False):
        start = time.perf_counter()
        explanation_report(student.model, teacher.model, ds, Collator(student.tokenizer, task.is_regression), "gxi",
                           n_explain, tokenizer=student.tokenizer, teacher_tokenizer=teacher.tokenizer, show=False,
                           teacher_faithfulness=with_teacher)
        what = "with the teacher's faithfulness (before)" if with_teacher else "without it (the grid now)"
        rows.append([f"explanation metrics, {n_explain} dev examples, {what}", f"{time.perf_counter() - start:.1f}"])
    print(to_markdown([f"{task.name}: scoring step", "seconds"], rows))


if __name__ == "__main__":
    main(*sys.argv[1:3], *(int(a) for a in sys.argv[3:4]))
