"""The explanation terms on *words*, for students whose tokenizer differs from the teacher's.

The teacher cache then holds word-level rows (:mod:`egkd.cache_words`): maps and occluded outputs indexed by
word, a rationale over words and the teacher's word count. Each term brings the student's side to words too:

* gradient: the student's gradient x input summed into words (``to_words``) is aligned with the cached word map;
* perturbation: whole words are masked in the student's copies (all of a word's tokens) and matched to the
  teacher's output with the same word masked;
* selection: the word rationale is mapped onto the student's tokens.

Only words both models saw are compared (truncation can cut the two tokenizations at different words).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from egkd.cache_words import word_counts, words_to_tokens
from egkd.explain import to_words
from egkd.explain.base import model_inputs
from egkd.losses.explanation import (
    GradientAlignment,
    PerturbationMatching,
    SelectionConsistency,
    computed,
    distribution_loss,
)
from egkd.losses.terms import StepOutputs


def shared_words(batch: dict[str, Tensor], teacher_words: Tensor) -> Tensor:
    """``[B]``: the words both the student (this batch) and the teacher (cache) saw."""
    return torch.minimum(word_counts(batch), teacher_words.to(batch["word_ids"].device).long())


def word_mask(counts: Tensor, width: int) -> Tensor:
    return torch.arange(width, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)


class WordGradientAlignment(GradientAlignment):
    """:class:`GradientAlignment` on words."""

    def __call__(self, out: StepOutputs) -> Tensor:
        smap = out.extras["student_map"]
        n, width = smap.shape
        cached = out.extras["cached"]["gradient"]
        sub = {k: v[:n] for k, v in out.batch.items() if k in ("word_ids", "attention_mask")}
        s_words = to_words(smap, sub["word_ids"], num_words=width)
        t_words = cached["map"][:n, :width]
        mask = word_mask(shared_words(sub, cached["n_words"][:n]), width)
        return self.align(s_words, t_words, mask)


class WordPerturbationMatching(PerturbationMatching):
    """:class:`PerturbationMatching` with whole words occluded on both sides."""

    def sample_words(self, batch: dict[str, Tensor], teacher_map: Tensor, teacher_words: Tensor,
                     occluded: Tensor) -> Tensor:
        counts = shared_words(batch, teacher_words)
        u_max = max(1, int(counts.max()))
        importance = teacher_map[:, :u_max]
        if importance.shape[1] < u_max:
            importance = torch.nn.functional.pad(importance, (0, u_max - importance.shape[1]))
        return self.draw(importance, word_mask(counts, u_max) & computed(occluded, u_max), counts)

    def augment(self, batch: dict[str, Tensor], cached: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
        n = max(1, math.ceil(self.fraction * batch["input_ids"].shape[0]))
        batch = {k: v[:n] for k, v in batch.items()}
        rows = {k: v[:n] for k, v in cached["perturbation"].items()}
        units = self.sample_words(batch, rows["map"], rows["n_words"], rows["occluded"])  # [n, k] word numbers
        copies = {k: v.repeat_interleave(self.k, 0) for k, v in model_inputs(batch).items()}
        word_ids = batch["word_ids"].repeat_interleave(self.k, 0)
        hit = (word_ids == units.reshape(-1).unsqueeze(1)) & (word_ids >= 0)
        copies["input_ids"] = copies["input_ids"].masked_fill(hit, self.mask_token_id)
        self._last_units = units
        return copies

    def __call__(self, out: StepOutputs) -> Tensor:
        logits = out.extras["aug_logits"][self.name]
        occluded = out.extras["cached"]["perturbation"]["occluded"]  # [B, W, C]
        units = self._last_units
        rows = torch.arange(units.shape[0], device=units.device).repeat_interleave(self.k)
        return distribution_loss(logits, occluded[rows, units.reshape(-1)], self.temperature)


class WordSelectionConsistency(SelectionConsistency):
    """:class:`SelectionConsistency` with the teacher's word rationale mapped onto the student's tokens."""

    def __call__(self, out: StepOutputs) -> Tensor:
        cached = dict(out.extras["cached"]["selection"])
        tokens = words_to_tokens(cached["rationale"].long(), out.batch["word_ids"].long(), cached["n_words"])
        cached["rationale"] = tokens.to(torch.uint8)
        extras = {**out.extras, "cached": {**out.extras["cached"], "selection": cached}}
        return super().__call__(StepOutputs(batch=out.batch, student_logits=out.student_logits,
                                            teacher_logits=out.teacher_logits, extras=extras))


WORD_TERMS = {"gradient": WordGradientAlignment, "perturbation": WordPerturbationMatching,
              "selection": WordSelectionConsistency}
