"""The Python API. The CLI only parses flags and calls these functions.

    import egkd
    egkd.finetune(task="mrpc", model="sentence-transformers/all-MiniLM-L6-v2", out="runs/mrpc-teacher")
    egkd.distill(task="mrpc", teacher="runs/mrpc-teacher", student="layers:1,3,5", method="kd",
                 out="runs/mrpc-kd")
    egkd.evaluate("runs/mrpc-kd")

Every keyword is a :class:`~egkd.config.RunConfig` field; ``config=`` names a YAML file whose values the
keywords override.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from egkd.bench.records import explanations_key
from egkd.cache import CacheSpec, build_teacher_cache
from egkd.config import RunConfig, build_config, load_yaml
from egkd.data.augment import augment_split
from egkd.data.glue import load_split
from egkd.data.tasks import TaskSpec, get_task
from egkd.data.tokenize import Collator, tokenize_split
from egkd.errors import EgkdError
from egkd.evaluation.metrics import fidelity, predictions_from_logits, task_metrics
from egkd.explain.base import model_inputs
from egkd.explain.student import student_map_options
from egkd.losses.explanation import ADKDAttribution, GradientAlignment, PerturbationMatching, SelectionConsistency
from egkd.losses.terms import GoldLoss, KDLoss, LossTerm, PKDLoss, parse_layer_map
from egkd.models.students import Built, build_student, count_parameters, load_classifier, needs_texts, uniform_layers
from egkd.models.vocab import same_tokenizer
from egkd.paths import cache_root
from egkd.reports.card import write_model_card
from egkd.reports.console import console
from egkd.training.checkpoint import CHECKPOINTS
from egkd.training.loop import predict_logits, train
from egkd.training.trackers import make_accelerator, process_state

METHODS = ("ft", "kd", "pkd", "egkd", "adkd")
FAMILIES = ("gradient", "perturbation", "selection")
TARGETS = ("pred", "gold", "all")  # explanation targets: teacher's class, gold class, every class (multi-view)
RUN_FILES = ("config.yaml", "metrics.json", CHECKPOINTS, "model.safetensors")


# ----------------------------------------------------------------------------------------------- run folders
def prepare_out_dir(out: str | None, overwrite: bool, resume: bool) -> Path:
    """Create the run folder; refuse to reuse one that holds a run unless told to overwrite or resume."""
    if not out:
        raise EgkdError("no output folder given: pass --out DIR")
    path = Path(out)
    state = process_state()
    holds_run = path.is_dir() and any(path.iterdir())
    if holds_run and not (overwrite or resume):
        raise EgkdError(
            f"output folder {path} already holds a run: pass --overwrite to replace it or --resume to continue it"
        )
    if state.is_main_process:
        if holds_run and overwrite and not resume:
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    return path


def resolve_config(config: str | Path | None, **options: Any) -> RunConfig:
    """Defaults <- YAML <- options; on --resume the run's own saved config.yaml is the YAML layer."""
    out = options.get("out")
    if config is None and options.get("resume") and out and (Path(out) / "config.yaml").is_file():
        config = Path(out) / "config.yaml"
        saved = load_yaml(config)
        saved.pop("resume", None)
        saved.pop("overwrite", None)
        options = {**saved, **{k: v for k, v in options.items() if v is not None}}
        config = None
    return build_config(config, **options)


def crash_hook():
    """For tests: ``EGKD_CRASH_AFTER_CHECKPOINT=N`` kills the process right after its N-th checkpoint,
    exactly as a ``kill -9`` would at that point."""
    limit = int(os.environ.get("EGKD_CRASH_AFTER_CHECKPOINT", "0") or 0)
    if not limit:
        return None
    seen = {"n": 0}

    def hook(step: int) -> None:
        seen["n"] += 1
        if seen["n"] >= limit:
            os._exit(137)

    return hook


# ----------------------------------------------------------------------------------------------------- data
def load_tokenized(task: TaskSpec, split: str, tokenizer, cfg: RunConfig, max_examples: int | None = None,
                   all_processes: bool = True):
    """Read and tokenize one split, cached under the egkd cache (keyed on data, tokenizer and length).

    ``all_processes=False`` for code that runs on the main process only (evaluate): no barrier then, since the
    other processes would never reach it.
    """
    with PartialState().main_process_first() if all_processes else contextlib.nullcontext():
        ds = load_split(task, split, cfg.data_dir, max_examples)
        if split == "train" and cfg.augment:
            ds = augment_split(ds, cfg.augment, p_mask=cfg.augment_mask, p_ngram=cfg.augment_ngram)
        return tokenize_split(ds, tokenizer, task, cfg.max_seq_length, cache_dir=cache_root() / "tokenized")


def train_texts(task: TaskSpec, cfg: RunConfig) -> list[str]:
    """The training split's text (both sides of a pair): what a student's own tokenizer is trained on."""
    ds = load_split(task, "train", cfg.data_dir, cfg.max_train_examples)
    cols = [c for c in ("text_a", "text_b") if c in ds.column_names]
    return [t for c in cols for t in ds[c] if t]


# --------------------------------------------------------------------------------------------------- losses
def build_terms(cfg: RunConfig, student: Built, units: str = "token") -> list[LossTerm]:
    """A method is a list of weighted loss terms; ``units='word'`` for a student with another tokenizer
    (explanation terms on words, see :mod:`egkd.losses.words`)."""
    if cfg.method == "ft":
        return [GoldLoss(1.0)]
    if units == "word" and cfg.method in ("pkd", "adkd"):
        raise EgkdError(f"--method {cfg.method} runs the teacher on the student's inputs, which needs the same "
                        "tokenizer; this student has its own: use ft, kd or egkd")
    families = {"gradient": GradientAlignment, "perturbation": PerturbationMatching,
                "selection": SelectionConsistency}
    if units == "word":
        from egkd.losses.words import WORD_TERMS as families
    if cfg.method in METHODS:
        terms: list[LossTerm] = [GoldLoss(1.0 - cfg.alpha), KDLoss(cfg.alpha, cfg.temperature)]
        if cfg.method == "pkd":
            terms.append(PKDLoss(cfg.pkd_weight, pkd_layer_map(cfg, student)))
        if cfg.method == "adkd":
            terms.append(ADKDAttribution(cfg.adkd_weight, steps=cfg.adkd_steps, top_k=cfg.adkd_top_k))
        if cfg.method == "egkd":
            tok = student.tokenizer
            for family in explainer_families(cfg.explainer):
                if family == "gradient":
                    steps, baseline = student_map_options(cfg.student_explainer)
                    if steps > 1 and cfg.explain_target == "all":
                        raise EgkdError("--student-explainer ig is single-class; use --explain-target pred or gold, "
                                        "or --student-explainer gxi for the multi-view maps")
                    terms.append(families["gradient"](cfg.grad_weight, kind=cfg.align_loss, fraction=cfg.grad_fraction,
                                                      steps=steps, baseline=baseline))
                    terms[-1].every = max(1, cfg.grad_every)
                elif family == "perturbation":
                    terms.append(families["perturbation"](cfg.perturb_weight, k=cfg.perturb_k, mix=cfg.perturb_mix,
                                                      temperature=cfg.temperature,
                                                      mask_token_id=tok.mask_token_id, seed=cfg.seed,
                                                      fraction=cfg.perturb_fraction))
                else:
                    terms.append(families["selection"](cfg.select_weight, comprehensiveness=cfg.comp_weight,
                                                      temperature=cfg.temperature,
                                                      pad_token_id=tok.pad_token_id or 0,
                                                      fraction=cfg.select_fraction))
        return terms
    raise EgkdError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")


def explainer_families(text: str) -> list[str]:
    """``"gradient+perturbation"`` -> ["gradient", "perturbation"], checked."""
    families = [f.strip() for f in text.split("+") if f.strip()]
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise EgkdError(f"unknown explainer family {bad or text!r}; combine {', '.join(FAMILIES)} with '+'")
    return families


def cache_specs(cfg: RunConfig, terms: list[LossTerm], units: str = "token") -> list[CacheSpec]:
    """The teacher-cache entries a run needs: one per explanation family, else the logits alone for KD.

    With ``units='word'`` (a student with another tokenizer) the entries hold word-level maps and the logits
    are always cached: the teacher cannot read the student's tokens.
    """
    specs = []
    if cfg.explain_target not in TARGETS:
        raise EgkdError(f"--explain-target must be one of {', '.join(TARGETS)}, not {cfg.explain_target!r}")
    if cfg.explain_target == "all" and units == "word":
        raise EgkdError("--explain-target all (multi-view) needs a student that shares the teacher's tokenizer; "
                        "use pred or gold for word-level students")
    # multi-view concerns the gradient maps; the perturbation and selection terms already match the teacher's
    # whole output distribution, and their maps (sampling, rationale) follow the teacher's prediction
    single = "pred" if cfg.explain_target == "all" else cfg.explain_target
    for t in terms:
        if t.cache_family == "gradient":
            specs.append(CacheSpec("gradient", explainer=cfg.teacher_explainer, target=cfg.explain_target,
                                   units=units))
        elif t.cache_family == "perturbation":
            specs.append(CacheSpec("perturbation", target=single, units=units, max_units=cfg.perturb_units))
        elif t.cache_family == "selection":
            specs.append(CacheSpec("selection", explainer=cfg.teacher_explainer, target=single,
                                   budget=cfg.rationale_budget, units=units))
    needs_live = any(t.needs_hidden or t.needs_teacher_model for t in terms)
    cache_logits = cfg.teacher_cache or units == "word"
    if not specs and cache_logits and not needs_live and any(t.needs_teacher for t in terms):
        specs.append(CacheSpec("logits", units=units))
    return specs


def pkd_layer_map(cfg: RunConfig, student: Built) -> dict[int, int]:
    """Student layer -> teacher layer: given, else the layers the student was cut from, else uniform."""
    if cfg.pkd_layer_map:
        return parse_layer_map(cfg.pkd_layer_map)
    n_student = student.model.config.num_hidden_layers
    layers = student.teacher_layers
    if not layers:
        raise EgkdError("PKD needs --pkd-layer-map for a student that was not cut from the teacher")
    if len(layers) != n_student:
        layers = uniform_layers(max(layers) + 1, n_student)
    # the top student layer feeds the classifier, which KD already trains; PKD matches the ones below it
    return {s: t for s, t in enumerate(layers) if s < n_student - 1} or {0: layers[0]}


# -------------------------------------------------------------------------------------------------- running
def _train_run(cfg: RunConfig, kind: str, evaluate_options: dict[str, Any] | None = None) -> dict[str, Any]:
    task = get_task(cfg.task)
    if kind == "distill" and not cfg.teacher:
        raise EgkdError("distill needs a teacher: pass --teacher RUN_DIR (a fine-tuned model)")
    if cfg.method not in METHODS:
        raise EgkdError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    if cfg.augment and (kind == "finetune" or cfg.method == "ft"):
        raise EgkdError("--augment adds copies without gold labels that only a teacher can label: use it with "
                        "--method kd, pkd, egkd or adkd")
    out_dir = prepare_out_dir(cfg.out, cfg.overwrite, cfg.resume)
    state = PartialState()
    # a resumed run keeps its config.yaml until its checkpoint has accepted the settings (a refused resume
    # must not leave settings behind that the next plain --resume would pick up)
    if state.is_main_process and not (cfg.resume and (out_dir / "config.yaml").is_file()):
        cfg.save(out_dir / "config.yaml")

    # before any model is built: --seed fixes the init of scratch models (config:...) and new heads too, not
    # only what train() draws; without it the init depended on whatever had used the global RNG before
    set_seed(cfg.seed)
    teacher = None
    if kind == "finetune":
        built = load_classifier(cfg.model, task)
    else:
        teacher = load_classifier(cfg.teacher, task, expect_head=True)
        texts = train_texts(task, cfg) if needs_texts(cfg.student) else None
        built = build_student(cfg.student, teacher, task, texts=texts)
    train_ds = load_tokenized(task, "train", built.tokenizer, cfg, cfg.max_train_examples)
    dev_ds = load_tokenized(task, task.dev_splits[0], built.tokenizer, cfg, cfg.max_eval_examples)
    # a student with its own tokenizer: the teacher reads its own tokenization of the same rows (same idx)
    units = "token" if teacher is None or same_tokenizer(teacher.tokenizer, built.tokenizer) else "word"
    teacher_ds = train_ds if units == "token" else load_tokenized(task, "train", teacher.tokenizer, cfg,
                                                                   cfg.max_train_examples)
    terms = build_terms(cfg, built, units)
    if state.is_main_process:
        what = f"fine-tuning {cfg.model}" if kind == "finetune" else f"distilling {cfg.teacher} -> {cfg.student}"
        console.print(f"[bold]{what}[/] on {task.name} ({len(train_ds)} train, {len(dev_ds)} dev) "
                      f"with {', '.join(map(repr, terms))}")

    accelerator = make_accelerator(cfg, out_dir)
    caches = {}
    if teacher is not None:
        if any(t.cache_family == "gradient" for t in terms) and accelerator.num_processes > 1:
            raise EgkdError("the gradient family needs double backprop, which DDP does not support: run it in one "
                            "process (or use the perturbation/selection families under accelerate launch)")
        teacher.model.to(accelerator.device)
        cache_tokenizer = built.tokenizer if units == "token" else teacher.tokenizer
        for spec in cache_specs(cfg, terms, units):
            caches[spec.family] = build_teacher_cache(teacher.model, cache_tokenizer, teacher_ds, spec,
                                                      cfg.max_seq_length, batch_size=cfg.eval_batch_size)
    model, result = train(cfg, task, built.model, built.tokenizer, train_ds, dev_ds, terms, out_dir,
                          teacher=teacher.model if teacher else None, accelerator=accelerator,
                          on_checkpoint=crash_hook(), caches=caches)
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process:
        cfg.save(out_dir / "config.yaml")
        model.save_pretrained(out_dir)
        built.tokenizer.save_pretrained(out_dir)
        shutil.rmtree(out_dir / "best", ignore_errors=True)
        (out_dir / "train_history.json").write_text(json.dumps(result.history, indent=2))
        train_info = {"steps": result.steps, "best_step": result.best_step,
                      "seconds_per_epoch": result.seconds_per_epoch, "train_seconds": result.train_seconds,
                      "cpu_seconds_per_epoch": result.cpu_seconds_per_epoch,
                      # the one-off cost of each teacher cache this run used (built now or by an earlier run)
                      "teacher_caches": {fam: c.info() for fam, c in caches.items()}}
        metrics = evaluate(out_dir, task=task.name, data_dir=cfg.data_dir, extra={"training": train_info},
                           show=True, max_examples=cfg.max_eval_examples, **(evaluate_options or {}))
        write_model_card(out_dir, cfg, kind, metrics)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # here, not in train(): it destroys the process group the barriers above need
    return metrics


def finetune(config: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Fine-tune ``model`` on ``task`` (the teacher); returns the run's metrics."""
    options.setdefault("method", "ft")
    cfg = resolve_config(config, **options)
    cfg.method = "ft"
    return _train_run(cfg, "finetune")


def distill(config: str | Path | None = None, evaluate_options: dict[str, Any] | None = None,
            **options: Any) -> dict[str, Any]:
    """Distill ``teacher`` into ``student`` with ``method``; returns the run's metrics.

    ``evaluate_options`` are :func:`evaluate`'s keywords for the evaluation that ends the run, e.g.
    ``{"explanations": True}``: scoring explanations there saves evaluating the run a second time.
    """
    cfg = resolve_config(config, **options)
    return _train_run(cfg, "distill", evaluate_options)


# ------------------------------------------------------------------------------------------------ evaluation
def read_run_config(run_dir: Path) -> RunConfig | None:
    path = run_dir / "config.yaml"
    return build_config(path) if path.is_file() else None


def throughput(model: torch.nn.Module, dl: DataLoader, max_batches: int = 20) -> float:
    """Examples per second of plain inference (one warm-up batch, then up to ``max_batches``)."""
    model.eval()
    batches = [b for _, b in zip(range(max_batches + 1), dl, strict=False)]
    with torch.inference_mode():
        model(**model_inputs(batches[0], model))
        start, n = time.perf_counter(), 0
        for b in batches[1:] or batches:
            model(**model_inputs(b, model))
            n += len(b["input_ids"])
        return n / max(time.perf_counter() - start, 1e-9)


def evaluate(run_dir: str | Path, task: str | None = None, data_dir: str | None = None, split: str | None = None,
             teacher: str | None = None, extra: dict[str, Any] | None = None, show: bool = True,
             max_examples: int | None = None, explanations: bool = False, explainer: str = "gxi",
             rationale_file: str | None = None, max_explain_examples: int | None = None,
             teacher_faithfulness: bool = True) -> dict[str, Any]:
    """Score a run folder (or any model folder) on a labelled split and write ``metrics.json`` there.

    Reports the task's GLUE metrics, and, when the run has a teacher, fidelity to it, both models' parameter
    counts and their inference throughput measured in this process on the same batches (batch 32). Explanation
    metrics go under ``explanations`` for gxi and ``explanations_<name>`` for another explainer; re-evaluating
    keeps the training record and, on the same split, the other explainers' metrics (the weights are the same).
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise EgkdError(f"run folder {run} does not exist")
    cfg = read_run_config(run) or RunConfig()
    task_name = task or cfg.task
    spec = get_task(task_name)
    data_dir = data_dir or cfg.data_dir
    teacher = teacher or cfg.teacher
    split = split or spec.dev_splits[0]
    built = load_classifier(str(run), spec, expect_head=True)
    eval_cfg = RunConfig(task=spec.name, data_dir=data_dir, max_seq_length=cfg.max_seq_length, batch_size=32)
    ds, dl = _eval_split(built, spec, split, eval_cfg, max_examples)
    labels = np.asarray(ds["labels"])
    if (labels < 0).all():
        raise EgkdError(f"split {split} of {spec.name} has no labels; use `egkd predict` for test sets")
    logits = predict_logits(built.model, dl, desc=f"evaluating {run.name}", show=show)
    preds = predictions_from_logits(logits, spec)
    metrics: dict[str, Any] = {"task": spec.name, "split": split, "n_examples": len(ds),
                               **task_metrics(preds, labels, spec)}
    metrics["parameters"] = count_parameters(built.model)
    metrics["throughput"] = throughput(built.model, dl)
    records = [{"idx": int(i), "label": float(y) if spec.is_regression else int(y),
                "prediction": float(p) if spec.is_regression else int(p)}
               for i, y, p in zip(ds["idx"], labels, preds, strict=True)]
    if teacher:
        t = load_classifier(teacher, spec, expect_head=True)
        t_ds, t_dl = _teacher_split(t, built, spec, split, eval_cfg, max_examples, ds, dl)
        t_preds = predictions_from_logits(predict_logits(t.model, t_dl, desc="teacher", show=show), spec)
        metrics.update(fidelity(preds, t_preds, spec))
        metrics["teacher"] = {**task_metrics(t_preds, labels, spec), "parameters": count_parameters(t.model),
                              "throughput": throughput(t.model, t_dl)}
        metrics["compression"] = metrics["teacher"]["parameters"] / metrics["parameters"]
        metrics["speedup"] = metrics["throughput"] / metrics["teacher"]["throughput"]
        for r, tp in zip(records, t_preds, strict=True):
            r["teacher_prediction"] = float(tp) if spec.is_regression else int(tp)
        if explanations:  # gxi's under "explanations", another explainer's beside it ("explanations_ig")
            metrics[explanations_key(explainer)] = explanation_metrics(
                built, t, ds, t_ds, spec, explainer, rationale_file, max_explain_examples, show, teacher_faithfulness)
    elif explanations:
        raise EgkdError("--explanations compares a student with its teacher: this run has none, pass --teacher")
    previous = run / "metrics.json"
    if previous.is_file() and "training" not in (extra or {}):  # re-evaluating keeps the training record
        old = json.loads(previous.read_text())
        if old.get("training"):
            metrics["training"] = old["training"]
        if old.get("split") == split:  # the same weights on the same split: other explainers' scores still hold
            metrics.update({k: v for k, v in old.items() if k.startswith("explanations") and k not in metrics})
    if extra:
        metrics.update(extra)
    previous.write_text(json.dumps(metrics, indent=2))
    with (run / f"predictions_{split}.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    if show:
        from egkd.reports.tables import metrics_table

        console.print(metrics_table({run.name: metrics}, spec))
    return metrics


def _eval_split(built: Built, spec: TaskSpec, split: str, eval_cfg: RunConfig, max_examples: int | None):
    """The split tokenized by ``built``'s tokenizer, and its batch-32 loader."""
    ds = load_tokenized(spec, split, built.tokenizer, eval_cfg, max_examples, all_processes=False)
    return ds, DataLoader(ds, batch_size=32, collate_fn=Collator(built.tokenizer, is_regression=spec.is_regression))


def _teacher_split(teacher: Built, student: Built, spec: TaskSpec, split: str, eval_cfg: RunConfig,
                   max_examples: int | None, ds, dl):
    """The split as the teacher reads it: the student's own ``(ds, dl)`` when they share a tokenizer, else the
    teacher's tokenization of the same rows (explanations are then compared on words)."""
    if same_tokenizer(teacher.tokenizer, student.tokenizer):
        return ds, dl
    t_ds, t_dl = _eval_split(teacher, spec, split, eval_cfg, max_examples)
    if list(t_ds["idx"]) != list(ds["idx"]):
        raise EgkdError("the teacher's and the student's tokenized splits hold different rows")
    return t_ds, t_dl


def explanation_metrics(student: Built, teacher: Built, ds, t_ds, spec: TaskSpec, explainer: str,
                        rationale_file: str | None, max_examples: int | None, show: bool,
                        teacher_faithfulness: bool = True) -> dict[str, Any]:
    """Consistency, faithfulness (and plausibility with rationales), means only; per-example values are
    summarised by their mean so metrics.json stays small. ``t_ds`` is the teacher's tokenization of ``ds``'s rows:
    when it is another dataset (the student has its own vocabulary), consistency is measured on words."""
    if t_ds is not ds:
        from egkd.evaluation.words import word_explanations

        if rationale_file is not None:
            raise EgkdError("--rationales needs a student that shares the teacher's tokenizer (plausibility is "
                            "measured on its token maps); leave it out for a student with its own vocabulary")
        return word_explanations(student, teacher, ds, t_ds, spec, explainer, max_examples, teacher_faithfulness)
    from egkd.evaluation.explanations import explanation_report, means_only, to_jsonable

    report = explanation_report(student.model, teacher.model, ds, Collator(student.tokenizer, spec.is_regression),
                                explainer, max_examples, rationale_file, tokenizer=student.tokenizer,
                                teacher_tokenizer=teacher.tokenizer, show=show,
                                teacher_faithfulness=teacher_faithfulness)
    return to_jsonable(means_only(report))


def rescore_explanations(run_dir: str | Path, teacher: str | None = None, explainer: str = "gxi",
                         max_explain_examples: int | None = None, teacher_faithfulness: bool = True,
                         max_examples: int | None = None, show: bool = True) -> dict[str, Any]:
    """Score only the explanations of a finished run against its teacher and update ``metrics.json``.

    Why not :func:`evaluate`: it also re-measures throughput (and so the speed-up recorded beside the run's
    training), which a grid that gains a new explanation metric must not change; the dev predictions and every
    other metric are left as they are. ``teacher`` defaults to the run's own. gxi's metrics replace
    ``explanations``; another explainer's go beside them (``explanations_ig``). Returns the updated metrics.
    """
    run = Path(run_dir)
    path = run / "metrics.json"
    cfg = read_run_config(run)
    if cfg is None or not path.is_file():
        raise EgkdError(f"{run} is not a finished run (config.yaml and metrics.json): train it first")
    teacher = teacher or cfg.teacher
    if not teacher:
        raise EgkdError(f"{run} has no teacher to compare explanations with: pass teacher=")
    spec = get_task(cfg.task)
    metrics = json.loads(path.read_text())
    split = metrics.get("split", spec.dev_splits[0])
    built = load_classifier(str(run), spec, expect_head=True)
    t = load_classifier(teacher, spec, expect_head=True)
    eval_cfg = RunConfig(task=spec.name, data_dir=cfg.data_dir, max_seq_length=cfg.max_seq_length, batch_size=32)
    ds, dl = _eval_split(built, spec, split, eval_cfg, max_examples)
    t_ds, _ = _teacher_split(t, built, spec, split, eval_cfg, max_examples, ds, dl)
    metrics[explanations_key(explainer)] = explanation_metrics(built, t, ds, t_ds, spec, explainer, None,
                                                               max_explain_examples, show, teacher_faithfulness)
    path.write_text(json.dumps(metrics, indent=2))
    return metrics


# --------------------------------------------------------------------------------------------------- predict
SUBMISSION_NAMES = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "cola": "CoLA", "stsb": "STS-B",
                    "qnli": "QNLI", "qqp": "QQP", "mnli": "MNLI-m", "wnli": "WNLI"}


def predict(run_dir: str | Path, task: str | None = None, split: str = "test", data_dir: str | None = None,
            out: str | Path | None = None) -> Path:
    """Write a GLUE submission TSV (``index<TAB>prediction``) for ``split``; returns its path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise EgkdError(f"run folder {run} does not exist")
    cfg = read_run_config(run) or RunConfig()
    spec = get_task(task or cfg.task)
    built = load_classifier(str(run), spec, expect_head=True)
    eval_cfg = RunConfig(task=spec.name, data_dir=data_dir or cfg.data_dir, max_seq_length=cfg.max_seq_length)
    ds = load_tokenized(spec, split, built.tokenizer, eval_cfg)
    dl = DataLoader(ds, batch_size=64, collate_fn=Collator(built.tokenizer, is_regression=spec.is_regression))
    preds = predictions_from_logits(predict_logits(built.model, dl, desc=f"predicting {split}"), spec)
    name = SUBMISSION_NAMES.get(spec.name, spec.name)
    if spec.name == "mnli" and "mismatched" in split:
        name = "MNLI-mm"
    out_path = Path(out) if out else run / "predictions" / f"{name}.tsv"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as f:
        f.write("index\tprediction\n")
        for i, p in zip(ds["idx"], preds, strict=True):
            if spec.is_regression:
                value = f"{min(5.0, max(0.0, float(p))):.3f}"
            elif spec.tsv_label_format == "name":  # GLUE writes these tasks' labels as names (entailment, ...)
                value = spec.label_names[int(p)]
            else:
                value = str(int(p))
            f.write(f"{i}\t{value}\n")
    console.print(f"wrote {len(preds)} predictions to {out_path}")
    return out_path


# ------------------------------------------------------------------------------------------- cache, explain
def cache(task: str, teacher: str, explainer: str = "gradient:gxi", data_dir: str | None = None,
          split: str = "train", max_seq_length: int = 128, max_examples: int | None = None,
          target: str = "pred", rationale_budget: float = 0.2, batch_size: int = 64) -> Path:
    """Precompute one teacher-cache entry explicitly (``distill`` builds missing ones itself).

    ``explainer`` is ``family[:method]``: ``gradient:gxi``, ``gradient:ig``, ``gradient:saliency``,
    ``perturbation``, ``selection[:gxi]`` or ``logits``.
    """
    from egkd.cache import FAMILIES as CACHE_FAMILIES

    spec = get_task(task)
    family, _, method = explainer.partition(":")
    if family not in CACHE_FAMILIES:
        raise EgkdError(f"unknown cache family {family!r}; use one of {', '.join(CACHE_FAMILIES)}")
    t = load_classifier(teacher, spec, expect_head=True)
    cfg = RunConfig(task=spec.name, data_dir=data_dir, max_seq_length=max_seq_length)
    ds = load_tokenized(spec, split, t.tokenizer, cfg, max_examples)
    cspec = CacheSpec(family, explainer=method or "gxi", target=target, budget=rationale_budget)
    return build_teacher_cache(t.model, t.tokenizer, ds, cspec, max_seq_length, batch_size=batch_size).path


def explain(runs: list[str | Path], task: str | None = None, out: str | Path = "views", n: int = 20,
            data_dir: str | None = None, split: str | None = None, explainer: str = "gxi") -> Path:
    """Write the side-by-side explanation page of a teacher (first run) and its students."""
    from egkd.reports.views import write_explanation_page

    if not runs:
        raise EgkdError("give the teacher's run folder first, then one or more students")
    first = read_run_config(Path(runs[0])) or RunConfig()
    spec = get_task(task or first.task)
    models, tokenizer = {}, None
    for r in runs:
        built = load_classifier(str(r), spec, expect_head=True)
        models[Path(r).name] = built.model.eval()
        tokenizer = tokenizer or built.tokenizer
    examples = load_split(spec, split or spec.dev_splits[0], data_dir or first.data_dir, n)
    page = write_explanation_page(out, spec, list(examples), models, tokenizer, explainer_spec=explainer,
                                  max_seq_length=first.max_seq_length)
    console.print(f"wrote {page}")
    return page
