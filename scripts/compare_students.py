"""Paired bootstrap between two *students* of a grid (the results page compares methods within one student).

Usage: python scripts/compare_students.py RESULTS_DIR STUDENT_A STUDENT_B [--tasks rte,mrpc] [--methods kd,...]

For each task and method, student A minus student B on the task's main metric, over the seeds both ran
(examples resampled once per draw for every seed, as on the page), as a Markdown table. Students are named as
on the page (``layers:0,2,5``). Example (docs/measurements.md section 8):

    python scripts/compare_students.py results layers:0,2,5 layers:1,3,5 --tasks rte,mrpc --methods kd,egkd-gradient
"""

from __future__ import annotations

import argparse
from pathlib import Path

from egkd.bench.records import read_results
from egkd.data.tasks import get_task
from egkd.reports.glue import DevLabels, groups_of, versus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a bench glue --out folder (holds results.jsonl)")
    parser.add_argument("student_a")
    parser.add_argument("student_b")
    parser.add_argument("--tasks", default="rte,mrpc,stsb,cola,sst2")
    parser.add_argument("--methods", default="kd,egkd-gradient")
    parser.add_argument("--data-dir", default=None, help="GLUE folder (default: egkd's usual lookup)")
    args = parser.parse_args()

    _, groups = groups_of(read_results(Path(args.results)))  # the page's grouping: seed units, no tuning tries
    labels = DevLabels(args.data_dir)
    print(f"| task | method | seeds | {args.student_a} − {args.student_b} [95% CI] |")
    print("|---|---|---|---|")
    for task in args.tasks.split(","):
        metric = get_task(task).main_metric
        for method in args.methods.split(","):
            a, b = (groups.get((task, s, method), []) for s in (args.student_a, args.student_b))
            diff = versus(a, b, metric, labels) if a and b else None
            cell = "no shared seeds" if diff is None else f"{diff.delta:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"
            print(f"| {task} ({metric}) | {method} | {0 if diff is None else diff.n_seeds} | {cell} |")


if __name__ == "__main__":
    main()
