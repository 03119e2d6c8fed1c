"""Teacher-student explanation consistency of a grid's students under several explainers, paired against KD.

Usage: python scripts/consistency_by_explainer.py RESULTS_DIR TASK [--methods kd,egkd-gradient,...]
       [--student layers:1,3,5] [--seed 42] [--explainers gxi,occlusion] [--examples 200] [--work DIR]

Why: the results page scores every student's explanations with gradient x input maps, the map the gradient
family is trained to match. The perturbation family never sees a gradient map: it learns the teacher's
outputs on occluded inputs, so the fair question for it is whether its *occlusion* map (leave one token out)
follows the teacher's. This script asks both questions of the same students.

Each unit's run folder is taken from RESULTS_DIR when it is there; otherwise (teachers and runs are not
committed) the unit is trained again into ``--work`` from its recorded options and used only if it reproduces
the recorded dev predictions (as the grid does for teachers). Then, on the first ``--examples`` dev examples,
per-example Spearman of student vs teacher maps for each explainer (the page's consistency), and each method
minus KD as a paired bootstrap over examples (95 %). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from egkd import api
from egkd.bench.glue import Unit, is_finished
from egkd.bench.records import read_predictions, read_results
from egkd.data.tasks import get_task
from egkd.data.tokenize import Collator
from egkd.evaluation.explanations import explanation_report
from egkd.models.students import load_classifier


def run_folder(results: Path, record: dict, work: Path, teacher: str) -> Path:
    """The unit's trained student: the grid's folder, or a retrained copy that reproduces the record."""
    run = results / record["run"]
    if is_finished(run):
        return run
    out = work / record["key"]
    if not is_finished(out):
        # the same thread count as the recorded run: CPU reductions split differently across threads, and four
        # epochs turn those last-bit differences into different dev predictions
        torch.set_num_threads(record["machine"]["threads"])
        api.distill(**record["options"], teacher=teacher, out=str(out), overwrite=out.is_dir())
    split = get_task(record["task"]).dev_splits[0]
    rows = read_predictions(out, split)
    again = [r["prediction"] for r in rows]
    # 1e-2: a rebuilt teacher that reproduces its record only within the grid's tolerance (STS-B here) gets
    # another cache key, and its students' scores then move in the third decimal; anything more is refused
    if [r["idx"] for r in rows] != record["idx"] or not np.allclose(again, record["predictions"], atol=1e-2):
        raise SystemExit(f"{record['key']} trained again in {out} does not reproduce its recorded dev predictions")
    return out


def paired_ci(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """mean(a - b) over examples both scored, and its 95 % bootstrap interval."""
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n, len(d)))].mean(1)
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("task")
    parser.add_argument("--methods", default="kd,egkd-gradient,egkd-perturbation")
    parser.add_argument("--student", default="layers:1,3,5")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--explainers", default="gxi,occlusion")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("runs/consistency-probe"))
    args = parser.parse_args()

    spec = get_task(args.task)
    done = read_results(args.results)
    teacher_dir = args.results / "teachers" / args.task
    if not is_finished(teacher_dir):
        raise SystemExit(f"no finished teacher in {teacher_dir}: run the grid (it rebuilds and checks it) first")
    teacher = load_classifier(str(teacher_dir), spec, expect_head=True)
    methods = args.methods.split(",")
    per: dict[tuple[str, str], np.ndarray] = {}
    for method in methods:
        record = done.get(Unit(args.task, args.student, method, args.seed).key)
        if record is None:
            raise SystemExit(f"{args.task}/{args.student}/{method}/seed{args.seed} is not in {args.results}")
        record = done.get(record.get("same_as", record["key"]), record)  # a tuning twin stands for the seed
        run = run_folder(args.results, record, args.work, str(teacher_dir))
        student = load_classifier(str(run), spec, expect_head=True)
        cfg = api.read_run_config(run)
        ds = api.load_tokenized(spec, spec.dev_splits[0], student.tokenizer, cfg, args.examples, all_processes=False)
        for explainer in args.explainers.split(","):
            report = explanation_report(student.model, teacher.model, ds,
                                        Collator(student.tokenizer, spec.is_regression), explainer,
                                        tokenizer=student.tokenizer, teacher_tokenizer=teacher.tokenizer, show=False)
            per[(method, explainer)] = np.asarray(report["consistency"]["spearman_per_example"], dtype=float)
    head = " | ".join(f"{e} consistency | {e} vs KD [95% CI]" for e in args.explainers.split(","))
    print(f"\n{args.task}, {args.student}, seed {args.seed}, first {args.examples} dev examples\n")
    print(f"| method | {head} |\n|---|" + "---|---|" * len(args.explainers.split(",")))
    for method in methods:
        cells = []
        for e in args.explainers.split(","):
            rho = per[(method, e)]
            cells.append(f"{np.nanmean(rho):.3f}")
            if method == "kd" or ("kd", e) not in per:
                cells.append("-")
            else:
                m, lo, hi = paired_ci(rho, per[("kd", e)])
                cells.append(f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
