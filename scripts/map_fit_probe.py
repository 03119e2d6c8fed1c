"""Why does the gradient family's consistency stop near 0.4? Two measurements on a token-level (cut) student.

Usage: python scripts/map_fit_probe.py RUN/config.yaml [--steps 60] [--lr 1e-4 1e-3] [--examples 32]

1. **Balance**: on one batch of the run's training data, the gradient norm of the task loss (gold + KD, as the
   run weighs them) and of the explanation loss (normalised-MSE map alignment, weight 1) over the student's
   parameters, in train and eval mode. Adam and gradient clipping turn the sum into a step whose direction is
   set by the larger of the two; if the explanation term is many times the task term, every weight of the
   tuning grid lets it decide the update, which is why the weight barely moves consistency.
2. **Fit**: a fresh student trained on the explanation loss *alone* (eval mode, AdamW) on ``--examples``
   training examples; every 15 steps the loss on those examples and on the next ``--examples`` (held out).
   A student that can drive the first to ~0 while the second stays put memorises per-example maps rather than
   learning something that carries to new sentences: the limit is what generalises, not capacity.

The teacher maps are gradient x input on the teacher's predicted class, as the grid's caches hold them;
nothing is written to disk. Token-level students only (``layers:``/``depth:``); BiLSTM/CNN students:
``scripts/term_gradients.py``.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from egkd import api
from egkd.config import build_config
from egkd.data.tasks import get_task
from egkd.data.tokenize import Collator
from egkd.explain import alignment_loss, unit_mask
from egkd.explain.base import model_inputs
from egkd.explain.student import student_gradient_map
from egkd.losses.terms import kd_loss
from egkd.models.students import build_student, load_classifier
from egkd.training.loop import grad_norm


def teacher_maps(teacher, batch):
    """The teacher's logits, predicted class and (detached) gradient x input map on ``batch``."""
    with torch.no_grad():
        logits = teacher(**model_inputs(batch, teacher)).logits
    target = logits.argmax(-1) if logits.shape[-1] > 1 else None
    _, tmap = student_gradient_map(teacher, batch, target, create_graph=False)
    return logits, target, tmap


def balance(student, batch, t_logits, target, tmap, alpha: float, temperature: float, regression: bool) -> None:
    params = [p for p in student.parameters() if p.requires_grad]
    print("| mode | task loss | explanation loss | task grad norm | explanation grad norm | ratio |")
    print("|---|---|---|---|---|---|")
    for mode in ("train", "eval"):
        student.train(mode == "train")
        logits, smap = student_gradient_map(student, batch, target)
        if regression:
            task_loss = F.mse_loss(logits.view(-1), batch["labels"].float())
            task_loss = (1 - alpha) * task_loss + alpha * F.mse_loss(logits.view(-1), t_logits.view(-1))
        else:
            task_loss = (1 - alpha) * F.cross_entropy(logits, batch["labels"]) + alpha * kd_loss(
                logits, t_logits, temperature)
        expl = alignment_loss(smap, tmap, unit_mask(batch))
        g_task = grad_norm(torch.autograd.grad(task_loss, params, retain_graph=True, allow_unused=True))
        g_expl = grad_norm(torch.autograd.grad(expl, params, allow_unused=True))
        print(f"| {mode} | {task_loss.item():.3f} | {expl.item():.3f} | {g_task:.4f} | {g_expl:.4f} | "
              f"{g_expl / g_task:.1f}x |")


def fit(make_student, seen, held, lr: float, steps: int) -> None:
    student = make_student().eval()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=lr)
    start = time.time()
    for step in range(steps + 1):
        _, smap = student_gradient_map(student, seen["batch"], seen["target"])
        loss = alignment_loss(smap, seen["map"], unit_mask(seen["batch"]))
        if step % 15 == 0:
            _, hmap = student_gradient_map(student, held["batch"], held["target"], create_graph=False)
            held_loss = alignment_loss(hmap, held["map"], unit_mask(held["batch"])).item()
            print(f"| {lr:g} | {step} | {loss.item():.3f} | {held_loss:.3f} | {time.time() - start:.0f} |", flush=True)
        if step < steps:
            opt.zero_grad()
            loss.backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", help="a gradient-family run's config.yaml (e.g. results/runs/.../config.yaml)")
    parser.add_argument("--examples", type=int, default=32, help="training examples fitted (and as many held out)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-4, 1e-3])
    args = parser.parse_args()
    cfg = build_config(args.config)
    task = get_task(cfg.task)
    teacher = load_classifier(cfg.teacher, task, expect_head=True)
    teacher.model.eval()

    def make_student():
        torch.manual_seed(cfg.seed)
        return build_student(cfg.student, teacher, task).model

    if cfg.student.split(":")[0] not in ("layers", "depth"):
        raise SystemExit(f"{cfg.student}: token-level (layers:/depth:) students only; see scripts/term_gradients.py")
    tokenizer = teacher.tokenizer  # a student cut from the teacher reads the teacher's tokens
    ds = api.load_tokenized(task, "train", tokenizer, cfg, 2 * args.examples)
    collate = Collator(tokenizer, is_regression=task.is_regression)
    parts = []
    for rows in (range(args.examples), range(args.examples, 2 * args.examples)):
        batch = collate([ds[i] for i in rows])
        logits, target, tmap = teacher_maps(teacher.model, batch)
        parts.append({"batch": batch, "logits": logits, "target": target, "map": tmap})
    seen, held = parts
    print(f"## Balance ({cfg.task}, {cfg.student}, {args.examples} training examples, alpha {cfg.alpha}, "
          f"T {cfg.temperature})\n")
    balance(make_student(), seen["batch"], seen["logits"], seen["target"], seen["map"], cfg.alpha, cfg.temperature,
            task.is_regression)
    print(f"\n## Fit: explanation loss alone on {args.examples} examples vs the next {args.examples} (held out)\n")
    print("| lr | step | loss on fitted examples | loss on held-out examples | seconds |")
    print("|---|---|---|---|---|")
    for lr in args.lr:
        fit(make_student, seen, held, lr, args.steps)


if __name__ == "__main__":
    main()
