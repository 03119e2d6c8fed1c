"""Explanation metrics for a student whose tokenizer differs from its teacher's (a BiLSTM or CNN with its own
vocabulary).

Consistency: each model explains the teacher's predicted class on its own tokenization of the same rows; both
maps are summed into words (``to_words``) and compared example by example (Spearman and top-k Jaccard, as
:func:`egkd.evaluation.explanations.consistency`) on the words both models saw.

Faithfulness needs no common unit: each model is erased on its own tokens (ERASER comprehensiveness and
sufficiency, :func:`egkd.evaluation.explanations.faithfulness`), masking with its own ``[MASK]`` id, as a
transformer student is. For a word-level vocabulary the tokens are the words.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from egkd.data.tokenize import Collator
from egkd.errors import EgkdError
from egkd.evaluation.explanations import consistency, faithfulness, means_only, to_jsonable
from egkd.explain import get_explainer, to_words
from egkd.explain.base import model_inputs
from egkd.explain.occlusion import with_mask_token


def word_maps(model, ds, tokenizer, explainer, targets: np.ndarray | None, batch_size: int = 32
              ) -> tuple[list[np.ndarray], np.ndarray]:
    """Per example: the word scores of ``model`` for class ``targets`` (its own prediction if None), and
    the model's predictions."""
    device = next(model.parameters()).device
    model.eval()
    own = with_mask_token(explainer, getattr(tokenizer, "mask_token_id", None))  # occlusion with this model's [MASK]
    rows, preds = [], []
    start = 0
    for batch in DataLoader(ds, batch_size=batch_size, collate_fn=Collator(tokenizer)):
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            logits = model(**model_inputs(batch, model)).logits
        pred = logits.argmax(-1) if logits.shape[-1] > 1 else torch.zeros(len(logits), dtype=torch.long)
        b = len(pred)
        target = pred if targets is None else torch.as_tensor(targets[start:start + b], device=device)
        token_map = own.attribute(model, batch, target).detach()
        words = to_words(token_map.float(), batch["word_ids"]).cpu().numpy()
        counts = ((torch.where(batch["attention_mask"] > 0, batch["word_ids"], -1).max(1).values) + 1).cpu()
        rows.extend(words[i, : int(counts[i])] for i in range(b))
        preds.append(pred.cpu().numpy())
        start += b
    return rows, np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def own_faithfulness(built, ds, explainer, is_regression: bool, batch_size: int = 32) -> dict[str, Any]:
    """ERASER scores of ``built`` explaining its own predictions on its own tokens (means only), beside the same
    erasure in a random order (``random_order``)."""
    mask_id = built.tokenizer.mask_token_id
    if mask_id is None:
        raise EgkdError("faithfulness erases tokens with [MASK], but this model's tokenizer has no mask token")
    built.model.eval()
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=Collator(built.tokenizer, is_regression=is_regression))
    report = faithfulness(built.model, loader, with_mask_token(explainer, mask_id), int(mask_id), random_order=True)
    return means_only(report)


def word_explanations(student, teacher, s_ds, t_ds, spec, explainer: str = "gxi", max_examples: int | None = None,
                      teacher_faithfulness: bool = True) -> dict[str, Any]:
    """Word-level consistency (mean Spearman and top-k Jaccard) of the student's and teacher's explanations,
    and each model's faithfulness on its own tokens (``teacher_faithfulness=False`` leaves the teacher's out,
    as :func:`egkd.evaluation.explanations.explanation_report` does)."""
    if max_examples is not None:
        s_ds = s_ds.select(range(min(max_examples, len(s_ds))))
        t_ds = t_ds.select(range(min(max_examples, len(t_ds))))
    exp = get_explainer(explainer)
    t_rows, t_pred = word_maps(teacher.model, t_ds, teacher.tokenizer, exp, None)
    s_rows, _ = word_maps(student.model, s_ds, student.tokenizer, exp, t_pred)
    width = max([len(r) for r in t_rows + s_rows] + [1])
    t_mat, s_mat, mask = (np.zeros((len(t_rows), width)) for _ in range(3))
    for i, (t, s) in enumerate(zip(t_rows, s_rows, strict=True)):
        n = min(len(t), len(s))  # truncation may cut the two tokenizations at different words
        t_mat[i, :n], s_mat[i, :n], mask[i, :n] = t[:n], s[:n], 1
    report = consistency(t_mat, s_mat, mask)
    summary = means_only(report)
    faith = {"student": own_faithfulness(student, s_ds, exp, spec.is_regression)}
    if teacher_faithfulness:
        faith["teacher"] = own_faithfulness(teacher, t_ds, exp, spec.is_regression)
    return to_jsonable({"explainer": explainer, "units": "word", "faithfulness_units": "own tokens",
                        "n_examples": len(t_rows), "consistency": summary, "faithfulness": faith})
