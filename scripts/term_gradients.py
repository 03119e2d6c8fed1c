"""Per-term gradient norms of a distillation run's loss terms on its first training batch.

Usage: python scripts/term_gradients.py RUN/config.yaml [TRAINED_RUN]

Builds the run's student fresh (and loads TRAINED_RUN, e.g. its KD counterpart, when given), takes one batch
of its training data and prints, for each loss term, its value and the norm of its gradient over all student
parameters (and over the embeddings alone), plus the student's and the teacher's explanation-map norms.
This is how the explanation term was found to swamp KD on randomly initialised students
(docs/measurements.md, section 4). Word-level (own tokenizer) students only.
"""

from __future__ import annotations

import sys

import torch

from egkd import api
from egkd.cache import build_teacher_cache
from egkd.config import build_config
from egkd.data.tasks import get_task
from egkd.explain import to_words
from egkd.losses.words import shared_words, word_mask
from egkd.models.students import build_student, load_classifier
from egkd.training.loop import forward, get_dataloaders, grad_norm


def main(config: str, trained: str | None = None) -> None:
    cfg = build_config(config)
    task = get_task(cfg.task)
    teacher = load_classifier(cfg.teacher, task, expect_head=True)
    torch.manual_seed(cfg.seed)
    fresh = build_student(cfg.student, teacher, task, texts=api.train_texts(task, cfg))
    train_ds = api.load_tokenized(task, "train", fresh.tokenizer, cfg, cfg.max_train_examples)
    teacher_ds = api.load_tokenized(task, "train", teacher.tokenizer, cfg, cfg.max_train_examples)
    terms = api.build_terms(cfg, fresh, "word")
    caches = {s.family: build_teacher_cache(teacher.model, teacher.tokenizer, teacher_ds, s, cfg.max_seq_length)
              for s in api.cache_specs(cfg, terms, "word")}
    batch = next(iter(get_dataloaders(train_ds, train_ds, fresh.tokenizer, task, cfg)[0]))
    students = [("fresh", fresh.model)] + ([("trained", load_classifier(trained, task).model)] if trained else [])
    for name, model in students:
        model.train()
        out = forward(model, batch, terms, None, caches, False, 1)
        if "student_map" in out.extras:
            smap, cached = out.extras["student_map"].detach(), out.extras["cached"]["gradient"]
            n, width = smap.shape
            sub = {k: batch[k][:n] for k in ("word_ids", "attention_mask")}
            mask = word_mask(shared_words(sub, cached["n_words"][:n]), width)
            s_norm = torch.where(mask, to_words(smap, sub["word_ids"], num_words=width), 0).norm(dim=-1).mean()
            t_norm = torch.where(mask, cached["map"][:n, :width], 0).norm(dim=-1).mean()
            print(f"{name}: map norm student {float(s_norm):.4f}, teacher {float(t_norm):.4f}")
        embeddings = [p for n_, p in model.named_parameters() if "embed" in n_]
        for term in terms:
            model.zero_grad()
            value = term(forward(model, batch, terms, None, caches, False, 1))
            value.backward()
            print(f"  {term.name:12s} loss {float(value.detach()):.4f}  weight {term.weight:.2f}  "
                  f"grad norm {grad_norm(p.grad for p in model.parameters()):.4f}  "
                  f"(embeddings {grad_norm(p.grad for p in embeddings):.4f})")


if __name__ == "__main__":
    main(*sys.argv[1:3])
