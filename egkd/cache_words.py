"""Teacher-cache rows over *words*, for students whose tokenizer differs from the teacher's.

The teacher reads its own tokenization of the same rows (same ``idx``); its explanations are turned into one
score per word (``word_ids`` of the teacher's tokenizer, which splits words exactly as the student's does, see
:mod:`egkd.models.vocab`). Per-unit tensors are indexed by word and padded to ``max_len`` words:

* ``map [N, W]``: the token map summed into words (:func:`~egkd.explain.base.to_words`);
* ``occluded [N, W, C]``: the teacher's output with the whole word ``w`` masked (``Occlusion(units='word')``);
* ``rationale [N, W]``: the top-r *words* by |score|; ``on_rationale``/``on_complement`` are the teacher's
  outputs on exactly those words' tokens (or all the others');
* ``n_words [N]``: how many words the teacher saw (truncation may cut the two tokenizations at other words).
"""

from __future__ import annotations

import torch
from torch import Tensor

from egkd.explain import get_explainer, rationale_inputs, to_words, top_r_rationale, unit_mask
from egkd.explain.base import model_inputs, resolve_target
from egkd.explain.occlusion import Occlusion


def word_counts(batch: dict[str, Tensor]) -> Tensor:
    """``[B]`` number of words of each example (``max word id + 1`` over its unit positions)."""
    ids = torch.where(unit_mask(batch), batch["word_ids"], torch.full_like(batch["word_ids"], -1))
    return (ids.max(1).values + 1).clamp_min(0)


def words_to_tokens(word_values: Tensor, word_ids: Tensor, n_words: Tensor | None = None) -> Tensor:
    """``[B, W] -> [B, L]``: each token takes its word's value (0 / False at specials, padding and at words
    beyond ``n_words``); maps a word rationale onto either side's tokens."""
    valid = word_ids >= 0
    if n_words is not None:
        valid = valid & (word_ids < n_words.to(word_ids.device).unsqueeze(1))
    valid = valid & (word_ids < word_values.shape[1])
    safe = word_ids.clamp(min=0, max=max(word_values.shape[1] - 1, 0)).long()
    if not word_values.shape[1]:
        return torch.zeros(word_ids.shape, dtype=word_values.dtype, device=word_ids.device)
    values = word_values.gather(1, safe)
    return torch.where(valid, values, torch.zeros_like(values))


def word_outputs(teacher, batch: dict[str, Tensor], spec, pad_id: int, mask_id: int | None,
                 max_len: int) -> dict[str, Tensor]:
    with torch.no_grad():
        logits = teacher(**model_inputs(batch, teacher)).logits.float()
    target = resolve_target(spec.target, logits, batch.get("labels"))
    b = batch["input_ids"].shape[0]
    word_ids = batch["word_ids"]
    out: dict[str, Tensor] = {"logits": logits, "target": target, "idx": batch["idx"],
                              "n_words": word_counts(batch)}

    def pad(t: Tensor) -> Tensor:
        full = t.new_zeros((b, max_len, *t.shape[2:]))
        n = min(max_len, t.shape[1])
        full[:, :n] = t[:, :n]
        return full

    if spec.family == "gradient":
        scores = get_explainer(spec.explainer).attribute(teacher, batch, target).float()
        out["map"] = pad(to_words(scores, word_ids))
    elif spec.family == "perturbation":
        occ = Occlusion(mode="mask", mask_token_id=mask_id, units="word", max_units=spec.max_units)
        scores, occluded = occ.attribute_with_outputs(teacher, batch, target)  # [B, L], [B, W, C]
        out["map"] = pad(to_words(scores.float(), word_ids))
        out["occluded"] = pad(occluded.float())
    elif spec.family == "selection":
        scores = get_explainer(spec.explainer).attribute(teacher, batch, target).float()
        words = to_words(scores, word_ids)  # [B, W]
        present = torch.arange(words.shape[1], device=words.device).unsqueeze(0) < out["n_words"].unsqueeze(1)
        rationale = top_r_rationale(words.abs(), present, spec.budget)  # [B, W] bool
        tokens = words_to_tokens(rationale, word_ids).bool() & unit_mask(batch)
        out["rationale"] = pad(rationale.to(torch.uint8))
        for name, keep in (("on_rationale", True), ("on_complement", False)):
            r_in = rationale_inputs(batch, tokens, keep=keep, pad_token_id=pad_id)
            with torch.no_grad():
                out[name] = teacher(**model_inputs(r_in, teacher)).logits.float()
    return out
