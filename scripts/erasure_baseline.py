"""ERASER faithfulness of a grid's students against a random ranking of the same tokens.

Usage: python scripts/erasure_baseline.py RESULTS_DIR [--tasks cola,rte] [--students bilstm,layers:2,5]
       [--methods kd,egkd-gradient,...] [--seeds 42,43,44] [--examples 200] [--explainer gxi]

Why: comprehensiveness (the drop of the predicted class's probability when a map's top tokens are masked) and
sufficiency (the drop when all *but* them are masked) mix two things: how well the map ranks the tokens, and how
much the model reacts to ``[MASK]`` at all. A student that was trained on occluded inputs (the perturbation
family) can score high comprehensiveness *and* high (bad) sufficiency simply because masking anything moves it.
Erasing the same number of tokens in a random order separates the two: the map's ranking is worth what its
scores gain over the random ones (higher comprehensiveness, lower sufficiency).

Each unit is scored on its own tokens with its own ``[MASK]`` (as the grid does), the random order by
:class:`egkd.explain.random_order.RandomOrder` (which the grid's scoring now records as well); only units whose
run folder is on this machine are scored (run folders are not committed). Prints a Markdown table, one row per
(task, student, method), means over the seeds found.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from egkd.bench.glue import is_finished, slug, split_students
from egkd.bench.records import read_results
from egkd.data.tasks import get_task
from egkd.evaluation.words import own_faithfulness
from egkd.explain import get_explainer
from egkd.models.students import load_classifier


def score(run: Path, task: str, examples: int, explainer: str = "gxi") -> dict[str, float]:
    from egkd import api
    from egkd.config import RunConfig

    spec = get_task(task)
    cfg = api.read_run_config(run) or RunConfig(task=task)
    built = load_classifier(str(run), spec, expect_head=True)
    eval_cfg = RunConfig(task=spec.name, data_dir=cfg.data_dir, max_seq_length=cfg.max_seq_length, batch_size=32)
    ds = api.load_tokenized(spec, spec.dev_splits[0], built.tokenizer, eval_cfg, examples, all_processes=False)
    # the model erased on its own tokens with its own [MASK], beside the random order: what the grid's scoring does
    f = own_faithfulness(built, ds, get_explainer(explainer), spec.is_regression)
    return {"comp_map": f["comprehensiveness"], "suff_map": f["sufficiency"],
            "comp_random": f["random_order"]["comprehensiveness"], "suff_random": f["random_order"]["sufficiency"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--tasks", default="cola,rte")
    parser.add_argument("--students", default="bilstm")
    parser.add_argument("--methods", default="kd,ft,egkd-gradient,egkd-perturbation,egkd-selection,egkd-all")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--explainer", default="gxi", help="the student's own map: gxi (the grid's), ig, occlusion, "
                        "saliency, with options as in `egkd evaluate`, e.g. ig:steps=16")
    args = parser.parse_args()
    torch.set_num_threads(1)
    done = read_results(args.results)
    seeds = [int(s) for s in args.seeds.split(",")]
    name = args.explainer.split(":")[0]
    print(f"| task | student | method | seeds | comprehensiveness: {name} | random | {name} - random "
          f"| sufficiency: {name} | random | random - {name} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        for student in split_students(args.students):
            for method in args.methods.split(","):
                rows = []
                for seed in seeds:
                    rec = done.get(f"{task}/{slug(student)}/{method}/seed{seed}")
                    if rec is None or not is_finished(args.results / rec["run"]):
                        continue
                    rows.append(score(args.results / rec["run"], task, args.examples, args.explainer))
                if not rows:
                    continue
                m = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
                print(f"| {task} | {student} | {method} | {len(rows)} | {m['comp_map']:.3f} | {m['comp_random']:.3f} "
                      f"| {m['comp_map'] - m['comp_random']:+.3f} | {m['suff_map']:.3f} | {m['suff_random']:.3f} "
                      f"| {m['suff_random'] - m['suff_map']:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
