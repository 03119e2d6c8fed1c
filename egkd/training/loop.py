"""The one training loop: fine-tuning and every distillation method run through it.

A method is only a list of loss terms (:mod:`egkd.losses.terms`). The loop reads like the algorithm:

    for each epoch:                       # data order = f(seed, epoch), so a resumed run sees the same batches
        for each batch:
            outputs = student(batch) [+ teacher(batch) if a term needs it]
            loss = sum(w * term(outputs))
            backward, clip, AdamW, warmup/linear decay
            every N steps / each epoch: evaluate on dev, keep the best, write an atomic checkpoint

Distribution and mixed precision come from Hugging Face Accelerate, so the same code runs on one CPU, one GPU
or under ``accelerate launch --num_processes 2 --cpu``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import Tensor
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from egkd.config import RunConfig
from egkd.data.tasks import TaskSpec
from egkd.data.tokenize import Collator, LengthGroupedBatchSampler
from egkd.errors import EgkdError
from egkd.evaluation.metrics import predictions_from_logits, task_metrics
from egkd.explain.base import model_inputs
from egkd.explain.student import student_gradient_map, student_gradient_maps_all_classes
from egkd.losses.terms import LossTerm, StepOutputs, split_loss
from egkd.reports.console import Bar, console
from egkd.training.checkpoint import checkpoint_dir, load_checkpoint, save_checkpoint
from egkd.training.trackers import make_accelerator


@dataclass
class TrainResult:
    best_metric: float | None
    best_step: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds_per_epoch: float = 0.0
    train_seconds: float = 0.0
    # CPU seconds of this process per epoch: unlike wall time it does not grow when other processes share the
    # cores, so per-epoch cost ratios stay comparable across a grid that runs several units at once
    cpu_seconds_per_epoch: float = 0.0


def run_key(cfg: RunConfig) -> str:
    """What a checkpoint must match to be resumed: every setting that changes the training trajectory."""
    ignore = {"resume", "overwrite", "out", "log_with", "log_every", "eval_batch_size", "data_dir"}
    items = {k: v for k, v in sorted(cfg.to_dict().items()) if k not in ignore}
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def get_dataloaders(train_ds, dev_ds, tokenizer, task: TaskSpec, cfg: RunConfig) -> tuple[DataLoader, DataLoader]:
    """Length-grouped shuffled batches for training; dev batches in file order (predictions keep their rows)."""
    collate = Collator(tokenizer, is_regression=task.is_regression)
    # equal lengths make the grouped sampler a plain seeded shuffle
    lengths = [len(x) if cfg.length_grouping else 0 for x in train_ds["input_ids"]]
    sampler = LengthGroupedBatchSampler(lengths, cfg.batch_size, seed=cfg.seed, shuffle=True)
    # Own generators: starting a DataLoader iterator otherwise draws from the global torch RNG, so a run resumed
    # mid-epoch (one iterator start fewer) or evaluated more often would see other dropout masks.
    train_dl = DataLoader(train_ds, batch_sampler=sampler, collate_fn=collate,
                          generator=torch.Generator().manual_seed(cfg.seed))
    dev_dl = DataLoader(dev_ds, batch_size=cfg.eval_batch_size, shuffle=False, collate_fn=collate,
                        generator=torch.Generator().manual_seed(cfg.seed))
    return train_dl, dev_dl


@torch.no_grad()
def predict_logits(model: torch.nn.Module, dl: DataLoader, accelerator: Accelerator | None = None,
                   desc: str = "evaluating", show: bool = True) -> np.ndarray:
    """Logits for every example of ``dl`` in order (gathered across processes under accelerate)."""
    was_training = model.training
    model.eval()
    device = accelerator.device if accelerator else next(model.parameters()).device
    chunks = []
    bar = Bar(desc, total=len(dl), enabled=show and (accelerator is None or accelerator.is_main_process))
    for batch in dl:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**model_inputs(batch, model)).logits.float()
        if accelerator is not None:
            logits = accelerator.gather_for_metrics(logits)
        chunks.append(logits.cpu())
        bar.update()
    bar.close()
    model.train(was_training)
    return torch.cat(chunks).numpy()


class Teacher:
    """A frozen teacher queried live; it never trains, so it lives outside ``accelerator.prepare``."""

    def __init__(self, model: PreTrainedModel, device: torch.device) -> None:
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor], hidden: bool = False):
        return self.model(**model_inputs(batch, self.model), output_hidden_states=hidden)


def train(
    cfg: RunConfig,
    task: TaskSpec,
    model: PreTrainedModel,
    tokenizer,
    train_ds,
    dev_ds,
    terms: list[LossTerm],
    out_dir: Path,
    teacher: PreTrainedModel | None = None,
    accelerator: Accelerator | None = None,
    on_checkpoint: Callable[[int], None] | None = None,
    caches: dict | None = None,
) -> tuple[PreTrainedModel, TrainResult]:
    """Train ``model`` with ``terms``; return the best model (by the task's main dev metric) and a summary."""
    accelerator = accelerator or make_accelerator(cfg, out_dir)
    set_seed(cfg.seed, deterministic=cfg.deterministic)
    main = accelerator.is_main_process
    need_teacher = any(t.needs_teacher and t.weight for t in terms)
    need_hidden = any(t.needs_hidden and t.weight for t in terms)
    caches = caches or {}
    if need_teacher and teacher is None and not caches:
        raise EgkdError("this method needs a teacher: pass --teacher")
    live_teacher = Teacher(teacher, accelerator.device) if need_teacher and teacher is not None else None

    train_dl, dev_dl = get_dataloaders(train_ds, dev_ds, tokenizer, task, cfg)
    updates_per_epoch = math.ceil(len(train_dl) / cfg.grad_accum_steps)
    total_updates = max(1, math.ceil(updates_per_epoch * cfg.epochs))
    for term in terms:
        if term.explanation:
            term.ramp_steps = int(cfg.explain_warmup * total_updates)
            term.decay_steps, term.total_steps = int(cfg.explain_decay * total_updates), total_updates
    split_grads = bool(cfg.explain_grad_ratio or cfg.explain_project)
    if split_grads and accelerator.num_processes > 1:
        raise EgkdError("--explain-grad-ratio and --explain-project split the gradients outside DDP's all-reduce: "
                        "run them in one process")
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    # fused AdamW: ~10x faster optimizer step than foreach on CPU (DESIGN.md, measured pitfalls)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        fused=True,
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * total_updates), total_updates
    )
    model, optimizer, train_dl, dev_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, dev_dl, scheduler)
    accelerator.gradient_accumulation_steps = cfg.grad_accum_steps

    ckpt_dir = checkpoint_dir(out_dir)
    key = run_key(cfg)
    state: dict[str, Any] = {"key": key, "epoch": 0, "batch_in_epoch": 0, "step": 0,
                             "best_metric": None, "best_step": -1, "history": [], "train_seconds": 0.0}
    if cfg.resume:
        loaded = load_checkpoint(ckpt_dir, model=accelerator.unwrap_model(model), optimizer=optimizer,
                                 scheduler=scheduler, key=key, rank=accelerator.process_index)
        if loaded is not None:
            state = loaded
            if main:
                console.print(f"resuming from step {state['step']} (epoch {state['epoch']})")

    def checkpoint() -> None:
        save_checkpoint(ckpt_dir, model=accelerator.unwrap_model(model), optimizer=optimizer, scheduler=scheduler,
                        state=state, is_main=main, rank=accelerator.process_index,
                        barrier=accelerator.wait_for_everyone)
        if on_checkpoint is not None:
            on_checkpoint(state["step"])

    def evaluate_and_keep_best() -> None:
        logits = predict_logits(model, dev_dl, accelerator, desc="dev", show=False)
        labels = np.asarray(dev_ds["labels"])
        metrics = task_metrics(predictions_from_logits(logits, task), labels, task)
        value = metrics[task.main_metric]
        record = {"step": state["step"], "epoch": state["epoch"], **{f"dev_{k}": v for k, v in metrics.items()}}
        state["history"].append(record)
        accelerator.log(record, step=state["step"])
        improved = state["best_metric"] is None or value > state["best_metric"]
        if improved or not cfg.keep_best:
            state["best_metric"], state["best_step"] = value, state["step"]
            if main:
                accelerator.unwrap_model(model).save_pretrained(out_dir / "best")
            accelerator.wait_for_everyone()
        if main:
            console.print(f"step {state['step']}: dev {task.main_metric} {value:.2f}"
                          f" (best {state['best_metric']:.2f} at step {state['best_step']})")

    model.train()
    n_epochs = math.ceil(cfg.epochs)
    bar = Bar("training", total=total_updates, enabled=main, completed=state["step"])
    epoch_times, epoch_cpu = [], []
    while state["step"] < total_updates and state["epoch"] < n_epochs:
        epoch_start, cpu_start = time.perf_counter(), time.process_time()
        train_dl.set_epoch(state["epoch"])
        skip = state["batch_in_epoch"]
        batches = accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        for batch in batches:
            with accelerator.accumulate(model):
                out = forward(model, batch, terms, live_teacher, caches, need_hidden, state["step"])
                task_loss, explanation_loss, parts = split_loss(terms, out)
                loss = task_loss + explanation_loss
                if not torch.isfinite(loss):
                    raise EgkdError(
                        f"the loss became {loss.item()} at step {state['step']} ({parts}); lower --learning-rate "
                        f"or the loss weights; the last good checkpoint is in {ckpt_dir} (--resume)"
                    )
                if split_grads and explanation_loss.requires_grad:
                    parts.update(balanced_backward(model, task_loss / cfg.grad_accum_steps,
                                                   explanation_loss / cfg.grad_accum_steps,
                                                   cfg.explain_grad_ratio, project=cfg.explain_project))
                else:
                    accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state["batch_in_epoch"] += 1
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            bar.update(info=f"loss {loss.item():.4f}")
            if state["step"] % cfg.log_every == 0:
                accelerator.log({"loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                                 **{f"loss_{k}": v for k, v in parts.items()}}, step=state["step"])
            if cfg.eval_every and state["step"] % cfg.eval_every == 0:
                evaluate_and_keep_best()
            if cfg.save_every and state["step"] % cfg.save_every == 0:
                checkpoint()
            if state["step"] >= total_updates:
                break
        epoch_times.append(time.perf_counter() - epoch_start)
        epoch_cpu.append(time.process_time() - cpu_start)
        state["train_seconds"] += epoch_times[-1]
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        if not cfg.eval_every or state["step"] % cfg.eval_every:
            evaluate_and_keep_best()
        checkpoint()
    bar.close()
    for tracker in accelerator.trackers:  # not end_training(): that destroys the process group the caller needs
        tracker.finish()

    best = accelerator.unwrap_model(model)
    if cfg.keep_best and (out_dir / "best").is_dir() and main:
        best = type(best).from_pretrained(out_dir / "best")
    result = TrainResult(
        best_metric=state["best_metric"],
        best_step=state["best_step"],
        steps=state["step"],
        history=state["history"],
        seconds_per_epoch=float(np.mean(epoch_times)) if epoch_times else 0.0,
        train_seconds=state["train_seconds"],
        cpu_seconds_per_epoch=float(np.mean(epoch_cpu)) if epoch_cpu else 0.0,
    )
    return best, result


def grad_dot(xs: Iterable[Tensor | None], ys: Iterable[Tensor | None]) -> float:
    """The dot product of two sets of gradients taken as one vector each (``None``: a parameter a loss does not
    reach, which adds nothing)."""
    return float(sum(((a.float() * b.float()).sum() for a, b in zip(xs, ys, strict=True)
                      if a is not None and b is not None), torch.zeros(())))


def grad_norm(grads: Iterable[Tensor | None]) -> float:
    """The global L2 norm of a set of gradients (``None`` for a parameter the loss does not reach)."""
    grads = list(grads)
    return math.sqrt(grad_dot(grads, grads))


def balanced_backward(model: torch.nn.Module, task_loss: Tensor, explanation_loss: Tensor, ratio: float = 0.0,
                      project: bool = False) -> dict[str, float]:
    """Accumulate ``grad(task) + s * g_e`` into ``.grad``, where ``g_e`` is the explanation terms' gradient.

    ``project`` (PCGrad, Yu et al. 2020): where the two gradients conflict (negative dot product), ``g_e`` loses
    its component along the task gradient, ``g_e - (g_e . g_t / |g_t|^2) g_t``, so the explanation terms may
    move the student only in directions that do not, to first order, undo the task's step. Tried where the
    term costs accuracy (STS-B, measurements 28), it changed nothing: there the two gradients are nearly
    orthogonal (mean cosine 0.04), so there is little to remove.

    ``ratio`` > 0 caps the (projected) norm: ``s = min(1, ratio * |g_t| / |g_e|)``. Why: on a randomly
    initialised student the explanation terms' gradient is ~25x the gold+KD gradient (measured on a BiLSTM,
    SST-2); under clipping and Adam it then decides every update and the student never learns the task.

    Both are over the global gradient (all parameters as one vector), and cost one extra backward through the
    shared graph. Returns what the loop logs: ``explain_cos`` (the cosine between the two gradients before any
    change) and ``explain_scale`` (``s``).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    g_task = torch.autograd.grad(task_loss, params, retain_graph=True, allow_unused=True)
    g_expl = list(torch.autograd.grad(explanation_loss, params, allow_unused=True))

    n_task, n_expl = grad_norm(g_task), grad_norm(g_expl)
    dot = grad_dot(g_task, g_expl)
    cos = dot / (n_task * n_expl) if n_task > 0 and n_expl > 0 else 0.0
    if project and dot < 0 and n_task > 0:
        c = dot / n_task**2
        g_expl = [b if a is None else (-c * a if b is None else b - c * a) for a, b in zip(g_task, g_expl, strict=True)]
        n_expl = grad_norm(g_expl)
    scale = min(1.0, ratio * n_task / n_expl) if ratio and n_expl > 0 else 1.0
    for p, a, b in zip(params, g_task, g_expl, strict=True):
        parts = [g for g in (a, None if b is None else scale * b) if g is not None]
        if parts:
            g = sum(parts[1:], parts[0])
            p.grad = g if p.grad is None else p.grad + g
    return {"explain_cos": cos, "explain_scale": scale}


def forward(model, batch, terms: list[LossTerm], teacher: Teacher | None, caches: dict, need_hidden: bool,
            step: int) -> StepOutputs:
    """One student forward, shaped by the terms, into the outputs the loss terms read.

    * cached teacher rows (logits, maps, occluded outputs, rationales) are looked up by the batch's ``idx``;
    * terms with ``augment`` (perturbation) append their occluded copies to the *same* batched forward;
    * a term with ``student_map`` (gradient) gets the student's gradient x input map on the first rows of the
      batch from a forward through the embeddings with ``create_graph=True``; the other rows take the plain path.
    """
    active = [t for t in terms if t.weight and t.active(step)]
    cached = {fam: c.rows(batch, tuple(c.tensors)) for fam, c in caches.items()}
    extras: dict[str, Any] = {"cached": cached, "model": model, "aug_logits": {}, "step": step}
    augmenting = [t for t in active if hasattr(t, "augment")]
    copies = [(t, t.augment(batch, cached)) for t in augmenting]
    map_term = next((t for t in active if getattr(t, "student_map", False)), None)
    clean = model_inputs(batch, model)
    b = batch["input_ids"].shape[0]
    rows = {k: torch.cat([v, *(c[k] for _, c in copies)]) for k, v in clean.items()} if copies else clean
    hidden = None
    if map_term is not None:
        if need_hidden:
            raise EgkdError("the gradient family cannot be combined with PKD hidden-state matching")
        n = map_term.rows(b)
        sub = {k: v[:n] for k, v in batch.items()}
        if cached[map_term.cache_family]["map"].dim() == 3:  # multi-view cache: a map per class
            logits_map, extras["student_map"] = student_gradient_maps_all_classes(_unwrap(model), sub)
        else:
            target = cached[map_term.cache_family]["target"][:n]
            logits_map, extras["student_map"] = student_gradient_map(_unwrap(model), sub, target,
                                                                     steps=map_term.steps, baseline=map_term.baseline)
        rest = {k: v[n:] for k, v in rows.items()}
        parts = [logits_map]
        if rest["input_ids"].shape[0]:
            parts.append(model(**rest).logits)
        logits = torch.cat(parts)
    else:
        s = model(**rows, output_hidden_states=need_hidden)
        logits = s.logits
        if need_hidden:
            hidden = tuple(h[:b] for h in s.hidden_states)
    start = b
    for t, c in copies:
        n_rows = c["input_ids"].shape[0]
        extras["aug_logits"][t.name] = logits[start:start + n_rows]
        start += n_rows
    out = StepOutputs(batch=batch, student_logits=logits[:b], student_hidden=hidden, extras=extras)
    if caches:
        out.teacher_logits = next(iter(cached.values()))["logits"]
    if teacher is not None and (need_hidden or not caches or any(t.needs_teacher_model for t in active)):
        t_out = teacher(batch, hidden=need_hidden)
        out.teacher_logits = t_out.logits
        out.teacher_hidden = t_out.hidden_states if need_hidden else None
        extras["teacher_model"] = teacher.model
    return out


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model: double backprop goes around DDP, which does not support it (refused upstream)."""
    return getattr(model, "module", model)
