"""The ``egkd`` command line. It only turns flags into calls of :mod:`egkd.api`.

Training flags are generated from :class:`~egkd.config.RunConfig`, so every command spells a setting the same
way as the YAML file and the Python API (``--max-seq-length`` = ``max_seq_length``). A user error prints one
line and exits with status 2; only bugs show a traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from egkd.allocator import tune_malloc
from egkd.config import REFERENCE_MODEL, RunConfig
from egkd.errors import EgkdError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="egkd: compress fine-tuned language models by explanation guided knowledge distillation.",
)

HELP = {
    "task": "GLUE task: sst2, mrpc, rte, cola, stsb, qnli, qqp, mnli, wnli",
    "data_dir": "GLUE folder (SST-2/train.tsv ...); default $GLUE_DIR, ../shared/data/glue, else the hub",
    "out": "run folder to create",
    "model": "model to fine-tune: path, hub id, or config:layers=2,hidden=128 (random init)",
    "teacher": "fine-tuned teacher: a run folder of `egkd finetune`, a path or a hub id",
    "student": "layers:1,3,5 (0-based teacher layers) | depth:N | config:layers=..,hidden=.. | path/hub id",
    "method": "ft (gold labels only) | kd (Hinton) | pkd (patient KD) | egkd (explanation guided) | adkd (AD-KD-style)",
    "max_seq_length": "truncate inputs to this many tokens",
    "max_train_examples": "use only the first N training examples",
    "max_eval_examples": "use only the first N dev examples",
    "epochs": "training epochs (fractions allowed)",
    "batch_size": "training batch size per process",
    "learning_rate": "peak AdamW learning rate (warmup, then linear decay)",
    "alpha": "weight of the KD term; 1-alpha goes to the gold labels",
    "temperature": "KD softmax temperature T (the KL is scaled by T^2)",
    "pkd_weight": "weight of PKD's hidden-state term",
    "pkd_layer_map": "PKD layer map student:teacher, e.g. 0:1,1:3",
    "eval_every": "evaluate every N optimizer steps (0: each epoch)",
    "save_every": "checkpoint every N optimizer steps (0: each epoch only)",
    "mixed_precision": "no | fp16 | bf16",
    "seed": "random seed (data order, init, dropout)",
    "deterministic": "use deterministic algorithms (slower)",
    "overwrite": "replace an existing run folder",
    "resume": "continue an interrupted run from its last checkpoint",
    "log_with": "comma-separated trackers: csv, tensorboard",
    "teacher_cache": "cache the teacher's logits/explanations once instead of running it every step",
    "explainer": "egkd families, combined with '+': gradient | perturbation | selection",
    "explain_target": "class explained: pred (the teacher's prediction) | gold | all (multi-view: every class)",
    "teacher_explainer": "teacher map for gradient/selection: saliency | gxi | ig[:steps=8]",
    "student_explainer": "student map of the gradient family (double backprop): gxi | ig[:steps=2,baseline=pad]; "
                         "ig costs steps x gxi's double backprop",
    "align_loss": "map alignment: mse | cosine | kl | topk (on L2-normalised maps) | rank (Spearman-like)",
    "grad_fraction": "share of each batch given the double-backprop student map",
    "perturb_k": "occluded copies per example and step (each costs a forward+backward)",
    "rationale_budget": "share of units in the teacher's rationale (selection family)",
    "perturb_fraction": "share of each batch given occluded copies",
    "perturb_units": "teacher cache: occlude at most N random units per example (0: all; cheaper on long inputs)",
    "select_fraction": "share of each batch given the rationale-only and complement forwards",
    "explain_warmup": "share of training over which the explanation terms' weights rise from 0 to their value "
                      "(lets a randomly initialised student learn the task first)",
    "explain_decay": "share of training at the end over which the explanation terms' weights fall linearly to 0 "
                     "(the student aligns its maps early and spends the end of training on the task)",
    "explain_project": "remove the component of the explanation gradient that points against the gold+KD gradient "
                       "each step (PCGrad, Yu et al. 2020); costs one extra backward",
    "explain_grad_ratio": "cap the explanation terms' gradient norm at this multiple of the gold+KD gradient "
                          "norm each step (0: off); for randomly initialised students, whose explanation "
                          "gradient is ~25x KD's at the start",
    "augment": "add N teacher-labelled copies of each training example (masked words, n-grams; Tang et al.)",
    "augment_mask": "augmentation: probability of masking each word",
    "augment_ngram": "augmentation: probability of cutting a copy to a random 1-5-gram",
}
COMMON = ["task", "data_dir", "out", "epochs", "batch_size", "learning_rate", "max_seq_length",
          "max_train_examples", "max_eval_examples", "seed", "overwrite", "resume", "eval_batch_size",
          "weight_decay", "warmup_ratio", "max_grad_norm", "grad_accum_steps", "mixed_precision",
          "deterministic", "eval_every", "save_every", "log_with", "log_every", "length_grouping", "keep_best"]
DISTILL = ["teacher", "student", "method", "augment", "augment_mask", "augment_ngram",
           "alpha", "temperature", "pkd_weight", "pkd_layer_map", "teacher_cache",
           "explainer", "explain_target", "teacher_explainer", "student_explainer", "align_loss", "grad_weight",
           "grad_fraction", "grad_every", "perturb_weight", "perturb_k", "perturb_mix", "perturb_fraction",
           "perturb_units", "select_weight", "rationale_budget", "comp_weight", "select_fraction", "adkd_weight",
           "adkd_steps", "adkd_top_k", "explain_warmup", "explain_decay", "explain_project",
           "explain_grad_ratio"]


def _plain_type(tp: Any) -> type:
    """``int | None`` -> int, ``list[str]`` -> str (given comma-separated)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    return str if origin is list else tp


def config_command(fields: list[str]):
    """Give a ``(config, **options)`` function one typer option per RunConfig field, all defaulting to
    "not given" (None) so that YAML values survive unless a flag overrides them."""
    hints = typing.get_type_hints(RunConfig)
    by_name = {f.name: f for f in dataclasses.fields(RunConfig)}

    def decorate(fn):
        params = [inspect.Parameter(
            "config", inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[Path | None, typer.Option(help="YAML file of options; flags override it")])]
        for name in fields:
            default = by_name[name].default
            shown = "" if default is dataclasses.MISSING or default is None else f" [default: {default}]"
            params.append(inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None,
                annotation=Annotated[_plain_type(hints[name]) | None,
                                     typer.Option(help=HELP.get(name, name.replace("_", " ")) + shown,
                                                  show_default=False)]))

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            return fn(**kwargs)

        wrapper.__signature__ = inspect.Signature(params)
        return wrapper

    return decorate


@app.command()
@config_command(["model", *COMMON])
def finetune(**options: Any) -> None:
    """Fine-tune a pre-trained model on a GLUE task (the teacher)."""
    from egkd import api

    api.finetune(**options)


@app.command()
@config_command([*DISTILL, *COMMON])
def distill(**options: Any) -> None:
    """Distill a fine-tuned teacher into a smaller student."""
    from egkd import api

    api.distill(**options)


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="run folder (or any model folder)")],
    task: Annotated[str | None, typer.Option(help=HELP["task"] + " [default: the run's]")] = None,
    data_dir: Annotated[str | None, typer.Option(help=HELP["data_dir"])] = None,
    split: Annotated[str | None, typer.Option(help="labelled split to score [default: dev]")] = None,
    teacher: Annotated[str | None, typer.Option(help="teacher for fidelity [default: the run's]")] = None,
    max_eval_examples: Annotated[int | None, typer.Option(help=HELP["max_eval_examples"])] = None,
    explanations: Annotated[bool, typer.Option(help="also explanation consistency and faithfulness")] = False,
    explainer: Annotated[str, typer.Option(help="explainer for --explanations: gxi | saliency | ig[:steps=8] | "
                                                           "occlusion (each model with its own [MASK])")] = "gxi",
    rationales: Annotated[str | None, typer.Option(help="JSON lines of human rationales (tokens, rationale)")] = None,
    max_explain_examples: Annotated[int | None, typer.Option(help="explain only the first N dev examples")] = None,
) -> None:
    """Score a run: GLUE metrics, fidelity to the teacher, parameters and throughput; writes metrics.json.
    With --explanations also teacher-student consistency, faithfulness and (with --rationales) plausibility."""
    from egkd import api

    m = api.evaluate(run_dir, task=task, data_dir=data_dir, split=split, teacher=teacher,
                     max_examples=max_eval_examples, explanations=explanations, explainer=explainer,
                     rationale_file=rationales, max_explain_examples=max_explain_examples)
    if explanations:
        from egkd.bench.records import explanations_key
        from egkd.reports.console import console

        e = m[explanations_key(explainer)]
        line = (f"explanations ({explainer}): consistency spearman {e['consistency']['spearman']:.3f}, "
                f"top-20% jaccard {e['consistency']['jaccard']:.3f}" + (" (on words)" if e.get("units") == "word"
                                                                         else ""))
        if "faithfulness" in e:  # a student with its own tokenizer is erased on its own tokens
            own = e["faithfulness"]["student"]
            shuffled = own.get("random_order", {})
            line += (f"; student comprehensiveness {own['comprehensiveness']:.3f}, sufficiency "
                     f"{own['sufficiency']:.3f}")
            if shuffled:  # the same erasure in a random order: what the map's ranking is worth beside it
                line += (f" (random order: {shuffled['comprehensiveness']:.3f}, {shuffled['sufficiency']:.3f})")
        console.print(line)


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="run folder")],
    task: Annotated[str | None, typer.Option(help=HELP["task"] + " [default: the run's]")] = None,
    split: Annotated[str, typer.Option(help="split to predict")] = "test",
    data_dir: Annotated[str | None, typer.Option(help=HELP["data_dir"])] = None,
    out: Annotated[Path | None, typer.Option(help="TSV to write [default: RUN/predictions/<Task>.tsv]")] = None,
) -> None:
    """Write a GLUE submission TSV (index, prediction) for a split."""
    from egkd import api

    api.predict(run_dir, task=task, split=split, data_dir=data_dir, out=out)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo's runs")] = Path("runs/demo"),
    data_dir: Annotated[str | None, typer.Option(help=HELP["data_dir"])] = None,
    train_examples: Annotated[int, typer.Option(help="SST-2 training examples")] = 4000,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier demo")] = False,
) -> None:
    """The whole pipeline on bundled defaults: fine-tune all-MiniLM-L6-v2 on SST-2, distill a 3-layer student,
    evaluate both on the full dev set and print the table."""
    from egkd.demo import run_demo

    run_demo(out=out, data_dir=data_dir, train_examples=train_examples, overwrite=overwrite)


@app.command()
def cache(
    task: Annotated[str, typer.Option(help=HELP["task"])],
    teacher: Annotated[str, typer.Option(help=HELP["teacher"])],
    explainer: Annotated[str, typer.Option(help="gradient:gxi | gradient:ig | gradient:saliency | perturbation | "
                                           "selection[:gxi] | logits")] = "gradient:gxi",
    data_dir: Annotated[str | None, typer.Option(help=HELP["data_dir"])] = None,
    split: Annotated[str, typer.Option(help="split to explain")] = "train",
    max_seq_length: Annotated[int, typer.Option(help=HELP["max_seq_length"])] = 128,
    max_train_examples: Annotated[int | None, typer.Option(help=HELP["max_train_examples"])] = None,
    explain_target: Annotated[str, typer.Option(help=HELP["explain_target"])] = "pred",
    rationale_budget: Annotated[float, typer.Option(help=HELP["rationale_budget"])] = 0.2,
) -> None:
    """Precompute the teacher's outputs and explanations once (distill reuses them; resumable)."""
    from egkd import api

    path = api.cache(task, teacher, explainer, data_dir=data_dir, split=split, max_seq_length=max_seq_length,
                     max_examples=max_train_examples, target=explain_target, rationale_budget=rationale_budget)
    print(path)


@app.command()
def explain(
    runs: Annotated[list[Path], typer.Argument(help="the teacher's run folder, then the students'")],
    task: Annotated[str | None, typer.Option(help=HELP["task"] + " [default: the teacher run's]")] = None,
    n: Annotated[int, typer.Option(help="number of dev examples")] = 20,
    out: Annotated[Path, typer.Option(help="folder for index.html and the PNGs")] = Path("views"),
    data_dir: Annotated[str | None, typer.Option(help=HELP["data_dir"])] = None,
    explainer: Annotated[str, typer.Option(help="gxi | saliency | ig[:steps=8] | occlusion")] = "gxi",
) -> None:
    """Write an HTML page (and PNGs) with teacher and student token heatmaps side by side."""
    from egkd import api

    api.explain(runs, task=task, out=out, n=n, data_dir=data_dir, explainer=explainer)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="results folder(s) of `egkd bench glue` (several are merged into "
                                                    "one page), or one folder of finished runs")],
    out: Annotated[Path | None, typer.Option(help="Markdown file to write (CSV and PNG files are written beside it)")]
    = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples for the intervals vs KD")] = 2000,
    data_dir: Annotated[str | None, typer.Option(help=HELP["data_dir"] + " (dev labels for the intervals)")] = None,
    versus: Annotated[list[str] | None, typer.Option(help="A:B, e.g. egkd-gradient-ig-warmup:egkd-gradient-ig: also "
                                                          "compare method A with B directly (paired bootstrap over "
                                                          "the seeds both ran); repeatable")] = None,
) -> None:
    """Render results: the GLUE comparison page (seeds, bootstrap vs KD, targets, plots) for a `bench glue`
    folder, else one table of every finished run under the folder."""
    pairs = [tuple(v.split(":")) for v in versus or []]
    bad = [v for v, pair in zip(versus or [], pairs, strict=True) if len(pair) != 2 or not all(pair)]
    if bad:
        raise EgkdError(f"--versus takes METHOD:METHOD (e.g. egkd-gradient:kd), not {bad[0]!r}")
    if all((r / "results.jsonl").is_file() for r in runs):
        from egkd.reports.glue import render

        print(render(runs, out, n_resamples=resamples, data_dir=data_dir, pairs=pairs))
        return
    if pairs:
        raise EgkdError("--versus needs `egkd bench glue` results (a folder with results.jsonl)")
    if len(runs) > 1:
        lacking = next(r for r in runs if not (r / "results.jsonl").is_file())
        raise EgkdError(f"{lacking} has no results.jsonl: several folders can only be `egkd bench glue` results")
    from egkd.reports.summary import summarize

    print(summarize(runs[0], out))


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print tables of ratios.")
app.add_typer(bench_app, name="bench")


@bench_app.command("cost")
def bench_cost(
    teacher: Annotated[str, typer.Option(help="teacher run folder (or a model: cost does not depend on weights)")]
    = REFERENCE_MODEL,
    student: Annotated[str, typer.Option(help=HELP["student"])] = "layers:1,3,5",
    task: Annotated[str, typer.Option(help=HELP["task"])] = "sst2",
    methods: Annotated[str, typer.Option(help="comma-separated; default all")] = "",
    batch_size: Annotated[int, typer.Option(help="examples per step")] = 32,
    max_seq_length: Annotated[int, typer.Option(help="tokens per example (every batch is exactly this long)")] = 32,
    steps: Annotated[int, typer.Option(help="timed steps per method")] = 10,
    data_dir: Annotated[str | None, typer.Option(help=HELP["data_dir"])] = None,
    out: Annotated[Path | None, typer.Option(help="folder for cost.md/.csv/.json")] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads")] = None,
) -> None:
    """Time training steps of every method on the same batches; print each as a ratio to vanilla KD."""
    from egkd.bench.cost import bench_cost as run

    run(teacher, student=student, task=task, methods=[m for m in methods.split(",") if m] or None,
        batch_size=batch_size, max_seq_length=max_seq_length, steps=steps, data_dir=data_dir, out=out,
        threads=threads)


@bench_app.command("glue")
def bench_glue(
    tasks: Annotated[str, typer.Option(help="comma-separated GLUE tasks (run cheapest first)")]
    = "rte,mrpc,stsb,cola,sst2",
    methods: Annotated[str, typer.Option(help="comma-separated: ft, kd, pkd, adkd, egkd-gradient, "
                                        "egkd-gradient-ig, egkd-gradient-ig-lite, egkd-gradient-ig-warmup, "
                                        "egkd-perturbation, egkd-selection, egkd-all")]
    = "ft,kd,pkd,egkd-gradient",
    students: Annotated[str, typer.Option(help="students, e.g. 'layers:1,3,5,layers:2,5,bilstm' (';' also separates)")]
    = "layers:1,3,5",
    seeds: Annotated[str, typer.Option(help="seeds per task: N for all, or N,sst2=1 (task=N overrides)")] = "5,sst2=1",
    out: Annotated[Path, typer.Option(help="results folder: results.jsonl, runs/, teachers/")] = Path("results"),
    tune: Annotated[bool, typer.Option(help="tune each method's weight (KD: temperature; alpha on STS-B) on dev "
                                        "with the first seed")] = False,
    tune_alpha: Annotated[bool, typer.Option(help="with --tune: cross each method's three tries with KD's weight "
                                              "alpha (0.5, 0.9, 1.0): nine tries each (KD on STS-B: alpha x "
                                              "learning rate; ft: learning rate x weight decay)")] = False,
    tune_lr: Annotated[bool, typer.Option(help="with --tune: cross each method's three tries with the student's "
                                           "learning rate (0.5, 1, 2x): nine tries each (KD on STS-B: alpha x "
                                           "learning rate; ft: learning rate x weight decay)")] = False,
    teachers: Annotated[str, typer.Option(help="existing teacher runs, task=DIR,... (default: trained here)")] = "",
    data_dir: Annotated[str | None, typer.Option(help=HELP["data_dir"])] = None,
    max_hours: Annotated[float | None, typer.Option(help="start no new unit after this many hours")] = None,
    max_train_examples: Annotated[int | None, typer.Option(help="cap every task's training set (quick trials)")]
    = None,
    epochs: Annotated[float | None, typer.Option(help="override every run's epochs (quick trials)")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="every student's peak learning rate (default: 1e-4, "
                                                             "1e-3 from scratch; ft's tuning tries set their own)")]
    = None,
    explain_examples: Annotated[int, typer.Option(help="dev examples for consistency and faithfulness")] = 200,
    teacher_model: Annotated[str, typer.Option(help="model every task's teacher is fine-tuned from")]
    = REFERENCE_MODEL,
    max_seq_length: Annotated[int | None, typer.Option(help="override every task's max length (quick trials)")]
    = None,
    max_eval_examples: Annotated[int | None, typer.Option(help="first N dev examples only (quick trials)")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the plan (done / resumable / pending) and the hours of "
                                             "training left, and stop")] = False,
    rerun_stale: Annotated[bool, typer.Option(help="rerun finished units whose settings the grid has changed "
                                                   "(their records move to stale.jsonl)")] = False,
    wait: Annotated[bool, typer.Option(help="when another process sharing --out runs units this one needs, wait for "
                                            "them and go on (--no-wait: skip them and stop)")] = True,
    rescore: Annotated[bool, typer.Option(help="train nothing: score the explanations of finished units recorded "
                                               "without faithfulness or its random-order baseline, keeping "
                                               "their training and predictions")]
    = False,
    rescore_explainer: Annotated[str, typer.Option(help="with --rescore: gxi (the grid's own scoring) or ig, which "
                                                        "adds integrated-gradient columns (consistency_ig, ...) to "
                                                        "every finished unit that lacks them")] = "gxi",
) -> None:
    """Run the GLUE grid (task x student x method x seed), resumably; `egkd report OUT` renders it."""
    from egkd.bench.glue import Grid, rescore_grid, run_grid, split_students

    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    default, per_task = 1, {}
    for part in (p.strip() for p in seeds.split(",") if p.strip()):
        name, _, n = part.rpartition("=")
        if not n.isdigit() or int(n) < 1:
            raise EgkdError(f"--seeds takes N or task=N with N >= 1, got {part!r}")
        if name:
            per_task[name] = int(n)
        else:
            default = int(n)
    team = dict(p.split("=", 1) for p in teachers.split(",") if "=" in p)
    grid = Grid(out=out, tasks=task_list, methods=[m.strip() for m in methods.split(",") if m.strip()],
                students=split_students(students), seeds={t: per_task.get(t, default) for t in task_list},
                tune=tune, data_dir=data_dir, teachers=team, explain_examples=explain_examples,
                max_train_examples=max_train_examples, epochs=epochs, teacher_model=teacher_model,
                max_seq_length=max_seq_length, max_eval_examples=max_eval_examples, learning_rate=learning_rate,
                tune_alpha=tune_alpha, tune_lr=tune_lr)
    if rescore:
        rescore_grid(grid, explainer=rescore_explainer)
        print(f"render with: egkd report {out} --out docs/results.md")
        return
    left, failed = run_grid(grid, max_hours=max_hours, dry_run=dry_run, rerun_stale=rerun_stale, wait=wait)
    if not dry_run:
        print(f"{left} unit(s) left; render with: egkd report {out} --out docs/results.md")
    if failed:  # the grid went on with the other units; a script or CI calling it must still see the failure
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    tune_malloc()  # IG and occlusion caches: big buffers stay in the heap between batches, not faulted in anew
    try:
        app(args=argv, standalone_mode=True)
    except EgkdError as e:
        print(f"egkd: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
