"""Explanation metrics: teacher-student consistency, ERASER faithfulness, plausibility against rationales.

The design (DESIGN.md, Evaluation) asks three questions of a distilled student's explanations:

* **consistency** - does the student point at the same units as the teacher? Per-example Spearman rank
  correlation of the two maps and the Jaccard overlap of their top 20 % units, explained for the *same*
  target (the teacher's prediction), so the two maps answer the same question.
* **faithfulness** - does the student's explanation point at what the student actually uses? ERASER
  comprehensiveness and sufficiency (DeYoung et al. 2020), AOPC over 1/5/10/20/50 % of units, each model
  explaining its own prediction. The student's maps are scored beside the same erasure in a random order
  (``random_order``): masking moves some students whatever is masked, and a map is worth its gain over random.
* **plausibility** - does it point at what a human would? Token F1 and AUPRC against human rationales
  (or the planted evidence of :mod:`egkd.data.synthetic`).

Units are token positions with ``word_ids >= 0`` (the explainers' own unit), because teacher and student
share a tokenizer here (a student with its own vocabulary: :mod:`egkd.evaluation.words`); plausibility
works on words because rationales are given per word. Rankings
use the *signed* score by default (high = supports the explained class), which is what erasing "the most
important units" means for a signed map; ``absolute=True`` ranks by magnitude instead. Ties are broken
by position (earlier first) so every number here is deterministic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, f1_score
from torch import Tensor, nn
from torch.utils.data import DataLoader

from egkd.errors import EgkdError
from egkd.explain import Explainer, get_explainer, unit_mask
from egkd.explain.occlusion import with_mask_token
from egkd.explain.random_order import RandomOrder
from egkd.reports.console import track

FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)
ArrayLike = Tensor | np.ndarray
Rows = ArrayLike | Sequence[ArrayLike]

_EPS = 1e-9  # 0.2 * 15 is 3.0000000000000004 in floats; ceil must not turn that into 4


# ------------------------------------------------------------------------------------------------ helpers
def top_k_count(n_units: int, fraction: float) -> int:
    """``ceil(fraction * n_units)``, at least 1 and at most ``n_units`` (0 when there are no units)."""
    if n_units <= 0:
        return 0
    return min(n_units, max(1, math.ceil(fraction * n_units - _EPS)))


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores; a stable sort makes ties go to the earlier position."""
    return np.argsort(-scores, kind="stable")[:k]


def _rows(values: Rows) -> list[np.ndarray]:
    """A ``[N, L]`` tensor/array or a sequence of 1-D rows as a list of float64/int numpy rows."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 2:
            raise ValueError(f"expected a [N, L] array, got shape {values.shape}")
        return list(values)
    return [v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v) for v in values]


def _mean(values: np.ndarray) -> float:
    """Mean over the finite entries (skipped examples are NaN); NaN when none is finite, without a warning."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _on(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _inputs(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Only what a classifier's forward accepts (``labels`` would make Hugging Face compute a loss)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


def _as_explainer(explainer: Explainer | str) -> Explainer:
    return get_explainer(explainer) if isinstance(explainer, str) else explainer


def word_scores(token_map: np.ndarray, word_ids: np.ndarray) -> np.ndarray:
    """Sum one example's token scores into its words (``to_words`` for one numpy row)."""
    valid = word_ids >= 0
    if not valid.any():
        return np.zeros(0)
    ids = word_ids[valid].astype(np.int64)
    return np.bincount(ids, weights=token_map[valid].astype(np.float64), minlength=int(ids.max()) + 1)


# ------------------------------------------------------------------------------------------------ consistency
def consistency(teacher_map: ArrayLike, student_map: ArrayLike, mask: ArrayLike, k_frac: float = 0.2,
                absolute: bool = False) -> dict[str, Any]:
    """Per-example Spearman correlation and top-k Jaccard of two ``[B, L]`` maps on the ``mask`` units.

    ``k = ceil(k_frac * n_units)``. Examples with fewer than 2 units or a constant map (Spearman is
    undefined, and a top-k of ties is arbitrary) are skipped: NaN in the per-example arrays, counted in
    ``n_skipped``, left out of the means. Keys: ``spearman``, ``jaccard`` (means), ``n_examples``,
    ``n_scored``, ``n_skipped``, ``spearman_per_example``, ``jaccard_per_example``.
    """
    t_rows, s_rows, m_rows = _rows(teacher_map), _rows(student_map), _rows(mask)
    if not len(t_rows) == len(s_rows) == len(m_rows):
        raise ValueError("teacher_map, student_map and mask must have the same number of examples")
    n = len(t_rows)
    rho = np.full(n, np.nan)
    jac = np.full(n, np.nan)
    for i, (t, s, m) in enumerate(zip(t_rows, s_rows, m_rows, strict=True)):
        m = m.astype(bool)
        tv, sv = t[m].astype(np.float64), s[m].astype(np.float64)
        if tv.size < 2 or np.ptp(tv) == 0 or np.ptp(sv) == 0:
            continue
        rho[i] = float(spearmanr(tv, sv).statistic)
        if absolute:
            tv, sv = np.abs(tv), np.abs(sv)
        k = top_k_count(tv.size, k_frac)
        top_t, top_s = set(_top_k(tv, k).tolist()), set(_top_k(sv, k).tolist())
        jac[i] = len(top_t & top_s) / len(top_t | top_s)
    scored = int(np.isfinite(rho).sum())
    return {"spearman": _mean(rho), "jaccard": _mean(jac), "n_examples": n, "n_scored": scored,
            "n_skipped": n - scored, "spearman_per_example": rho, "jaccard_per_example": jac}


# ----------------------------------------------------------------------------------------------- faithfulness
def _explained_output(model: nn.Module, inputs: Mapping[str, Tensor], target: Tensor | None) -> Tensor:
    """``p_target`` (softmax) for classifiers, the raw output for regression; ``[N]`` float64 on CPU."""
    with torch.no_grad():
        logits = model(**_inputs(inputs)).logits
    if logits.shape[-1] == 1:
        return logits[:, 0].double().cpu()
    assert target is not None
    probs = logits.double().softmax(-1)
    return probs.gather(1, target.reshape(-1, 1).to(probs.device).long()).squeeze(1).cpu()


def predict_targets(model: nn.Module, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``(logits, target)`` on CPU: the model's predicted class (zeros for regression, whose target is ignored)."""
    with torch.no_grad():
        logits = model(**_inputs(_on(batch, _device(model)))).logits.detach().cpu()
    if logits.shape[-1] == 1:
        return logits, torch.zeros(logits.shape[0], dtype=torch.long)
    return logits, logits.argmax(-1)


def erasure_scores(model: nn.Module, batch: Mapping[str, Tensor], attr_map: Tensor, target: Tensor,
                   mask_token_id: int, fractions: Sequence[float] = FRACTIONS,
                   absolute: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Comprehensiveness and sufficiency ``[B, F]`` of one batch for a given map and target.

    For each fraction the top ``k = ceil(f * n_units)`` units (at least one) are replaced by
    ``mask_token_id`` (comprehensiveness: ``p(x) - p(x without top)``), or every *other* unit is
    (sufficiency: ``p(x) - p(only top)``); special tokens and padding are never touched. Masking keeps
    the length and positions, so the difference measures the units' content, not the input's length.
    Examples without units get NaN.
    """
    mask = unit_mask(batch).cpu()
    scores = attr_map.detach().cpu().double()
    if absolute:
        scores = scores.abs()
    scores = scores.masked_fill(~mask, float("-inf"))
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    n_units = mask.sum(1)
    device = _device(model)
    batch_dev = _on(batch, device)
    ids = batch_dev["input_ids"]
    mask_dev = mask.to(device)
    full = _explained_output(model, batch_dev, target)
    comp = np.full((len(n_units), len(fractions)), np.nan)
    suff = np.full_like(comp, np.nan)
    for j, frac in enumerate(fractions):
        k = torch.tensor([top_k_count(int(n), frac) for n in n_units])
        top = ((rank < k.unsqueeze(1)) & mask).to(device)
        without = torch.where(top, torch.full_like(ids, mask_token_id), ids)
        only = torch.where(mask_dev & ~top, torch.full_like(ids, mask_token_id), ids)
        both = {key: torch.cat([value, value]) for key, value in _inputs(batch_dev).items()}
        both["input_ids"] = torch.cat([without, only])
        out = _explained_output(model, both, torch.cat([target, target]))
        b = ids.shape[0]
        comp[:, j] = (full - out[:b]).numpy()
        suff[:, j] = (full - out[b:]).numpy()
    empty = (n_units == 0).numpy()
    comp[empty], suff[empty] = np.nan, np.nan
    return comp, suff


def _faithfulness_summary(comp: np.ndarray, suff: np.ndarray, fractions: Sequence[float]) -> dict[str, Any]:
    comp_aopc, suff_aopc = comp.mean(1), suff.mean(1)  # NaN rows (no units) stay NaN
    scored = int(np.isfinite(comp_aopc).sum())
    return {
        "comprehensiveness": _mean(comp_aopc),
        "sufficiency": _mean(suff_aopc),
        "fractions": [float(f) for f in fractions],
        "comprehensiveness_by_fraction": {str(f): _mean(comp[:, j]) for j, f in enumerate(fractions)},
        "sufficiency_by_fraction": {str(f): _mean(suff[:, j]) for j, f in enumerate(fractions)},
        "n_examples": len(comp_aopc), "n_scored": scored, "n_skipped": len(comp_aopc) - scored,
        "comprehensiveness_per_example": comp_aopc, "sufficiency_per_example": suff_aopc,
    }


def random_order_summary(comp: np.ndarray, suff: np.ndarray) -> dict[str, float]:
    """AOPC means of an erasure in random order (:class:`~egkd.explain.random_order.RandomOrder`)."""
    return {"comprehensiveness": _mean(comp.mean(1)), "sufficiency": _mean(suff.mean(1))}


def faithfulness(model: nn.Module, batch_iter: Iterable[Mapping[str, Tensor]], explainer: Explainer | str,
                 mask_token_id: int, fractions: Sequence[float] = FRACTIONS,
                 absolute: bool = False, random_order: bool = False) -> dict[str, Any]:
    """ERASER comprehensiveness and sufficiency (AOPC = mean over ``fractions``) of the model's own story.

    Each model explains its *own* predicted class with ``explainer``, and probabilities of that class are
    compared (regression: raw output differences). Higher comprehensiveness and lower sufficiency are more
    faithful. Keys: ``comprehensiveness``, ``sufficiency`` (AOPC means), ``*_by_fraction``, ``n_*`` and the
    per-example AOPC arrays ``*_per_example``; with ``random_order`` also ``random_order``, the same erasure in a
    random order. The model's train/eval mode is left to the caller.
    """
    explainer = _as_explainer(explainer)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"map": [], "random": []}
    for batch in batch_iter:
        _, target = predict_targets(model, batch)
        attr = explainer.attribute(model, _on(batch, _device(model)), target.to(_device(model)))
        parts["map"].append(erasure_scores(model, batch, attr, target, mask_token_id, fractions, absolute))
        if random_order:
            shuffled = RandomOrder().attribute(model, batch)
            parts["random"].append(erasure_scores(model, batch, shuffled, target, mask_token_id, fractions))
    (comp, suff), (r_comp, r_suff) = (_stack(parts[k], len(fractions)) for k in ("map", "random"))
    report = _faithfulness_summary(comp, suff, fractions)
    if random_order:
        report["random_order"] = random_order_summary(r_comp, r_suff)
    return report


def _stack(parts: list[tuple[np.ndarray, np.ndarray]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Comprehensiveness and sufficiency ``[N, F]`` of a list of per-batch ``erasure_scores``."""
    if not parts:
        return np.zeros((0, width)), np.zeros((0, width))
    return np.concatenate([c for c, _ in parts]), np.concatenate([s for _, s in parts])


# ----------------------------------------------------------------------------------------------- plausibility
def read_rationales(path: str | Path) -> dict[int, dict[str, Any]]:
    """A JSON-lines rationale file as ``{idx: {'tokens': [...], 'rationale': [...]}}``.

    A line's ``idx`` field is used when present, else its line number, which is the dataset ``idx`` of
    single-file GLUE splits without an index column (SST-2, synth).
    """
    path = Path(path)
    if not path.is_file():
        raise EgkdError(f"rationale file {path} not found")
    out: dict[int, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                tokens, rationale = list(row["tokens"]), [int(r) for r in row["rationale"]]
            except (ValueError, KeyError, TypeError) as err:
                raise EgkdError(f"{path}, line {line_no + 1}: expected JSON with 'tokens' and 'rationale' "
                                f"({type(err).__name__}: {err})") from None
            if len(tokens) != len(rationale):
                raise EgkdError(f"{path}, line {line_no + 1}: {len(tokens)} tokens but {len(rationale)} "
                                "rationale flags")
            out[int(row.get("idx", line_no))] = {"tokens": tokens, "rationale": rationale}
    return out


def plausibility(maps: Rows, word_ids: Rows, rationale_jsonl: str | Path | Mapping[int, Mapping[str, Any]],
                 idx: Sequence[int] | Tensor | None = None, absolute: bool = False) -> dict[str, Any]:
    """Token F1 (top-k words, ``k`` = number of rationale words) and AUPRC against human rationales.

    Token maps are summed into words with ``word_ids``; the i-th word of an example is the i-th entry of
    its ``tokens``. Example ``i`` is matched to the rationale with dataset index ``idx[i]`` (default ``i``).
    Examples whose word count differs from the rationale's (truncated, or the tokenizer splits punctuation
    the file did not) are counted in ``n_misaligned`` and skipped, as are examples with no rationale word
    (AUPRC is undefined) and examples missing from the file. Keys: ``token_f1``, ``auprc`` (means),
    ``n_*`` counts and the per-example arrays.
    """
    rationales = read_rationales(rationale_jsonl) if isinstance(rationale_jsonl, (str, Path)) else rationale_jsonl
    map_rows, id_rows = _rows(maps), _rows(word_ids)
    if len(map_rows) != len(id_rows):
        raise ValueError("maps and word_ids must have the same number of examples")
    keys = list(range(len(map_rows))) if idx is None else [int(i) for i in _rows_1d(idx)]
    n = len(map_rows)
    f1 = np.full(n, np.nan)
    ap = np.full(n, np.nan)
    counts = {"n_misaligned": 0, "n_without_rationale": 0, "n_missing": 0}
    for i, (m, w, key) in enumerate(zip(map_rows, id_rows, keys, strict=True)):
        if key not in rationales:
            counts["n_missing"] += 1
            continue
        gold = np.asarray(rationales[key]["rationale"], dtype=np.int64)
        scores = word_scores(np.asarray(m), np.asarray(w))
        if scores.size != gold.size:
            counts["n_misaligned"] += 1
            continue
        k = int(gold.sum())
        if k == 0:
            counts["n_without_rationale"] += 1
            continue
        if absolute:
            scores = np.abs(scores)
        predicted = np.zeros_like(gold)
        predicted[_top_k(scores, k)] = 1
        f1[i] = float(f1_score(gold, predicted, zero_division=0.0))
        ap[i] = float(average_precision_score(gold, scores))
    scored = int(np.isfinite(f1).sum())
    return {"token_f1": _mean(f1), "auprc": _mean(ap), "n_examples": n, "n_scored": scored, **counts,
            "token_f1_per_example": f1, "auprc_per_example": ap}


def _rows_1d(values: Sequence[int] | Tensor) -> list[int]:
    if isinstance(values, Tensor):
        return values.detach().cpu().reshape(-1).tolist()
    return list(values)


def evidence_mass(maps: Rows, word_ids: Rows, evidence_word_ids: Sequence[Sequence[int]]) -> float:
    """Mean share of absolute attribution mass on the evidence words (word indices per example).

    ``sum |a_t|`` over the tokens of the evidence words divided by ``sum |a_t|`` over all unit tokens,
    averaged over examples (examples with an all-zero map are skipped). Absolute values because mass
    that argues *against* the class is still attention paid to a word. On the synthetic task a model that
    solved it the intended way puts most of its mass on the one or two planted words.
    """
    map_rows, id_rows = _rows(maps), _rows(word_ids)
    if not len(map_rows) == len(id_rows) == len(evidence_word_ids):
        raise ValueError("maps, word_ids and evidence_word_ids must have the same number of examples")
    shares = []
    for m, w, evidence in zip(map_rows, id_rows, evidence_word_ids, strict=True):
        m, w = np.abs(np.asarray(m, dtype=np.float64)), np.asarray(w)
        total = m[w >= 0].sum()
        if total <= 0:
            continue
        shares.append(m[np.isin(w, np.asarray(list(evidence), dtype=np.int64)) & (w >= 0)].sum() / total)
    return float(np.mean(shares)) if shares else float("nan")


# ------------------------------------------------------------------------------------------------------ report
def _check_shared_tokenizer(student: nn.Module, teacher: nn.Module, student_tokenizer: Any,
                            teacher_tokenizer: Any) -> None:
    """Token-level comparison needs one tokenizer; compare vocabularies when given, else configs."""
    message = ("teacher and student tokenizers differ, and this report compares token maps: use the word-level "
               "egkd.evaluation.words.word_explanations (egkd evaluate --explanations picks it)")
    if student_tokenizer is not None and teacher_tokenizer is not None:
        if student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
            raise EgkdError(message)
        return
    s_cfg, t_cfg = getattr(student, "config", None), getattr(teacher, "config", None)
    for key in ("vocab_size", "pad_token_id"):
        if getattr(s_cfg, key, None) != getattr(t_cfg, key, None):
            raise EgkdError(f"{message} ({key}: {getattr(s_cfg, key, None)} vs {getattr(t_cfg, key, None)})")


def _mask_token_id(mask_token_id: int | None, tokenizer: Any, model: nn.Module) -> int:
    for candidate in (mask_token_id, getattr(tokenizer, "mask_token_id", None),
                      getattr(getattr(model, "config", None), "mask_token_id", None)):
        if candidate is not None:
            return int(candidate)
    raise EgkdError("faithfulness needs a [MASK] token id: pass tokenizer= or mask_token_id=")


def explanation_report(student_model: nn.Module, teacher_model: nn.Module, dataset: Any, collator: Any,
                       explainer_spec: str | Explainer = "gxi", max_examples: int | None = None,
                       rationale_file: str | Path | None = None, *, tokenizer: Any = None,
                       teacher_tokenizer: Any = None, mask_token_id: int | None = None, batch_size: int = 32,
                       fractions: Sequence[float] = FRACTIONS, show: bool = True,
                       teacher_faithfulness: bool = True) -> dict[str, Any]:
    """All explanation metrics of a student against its teacher over a tokenized dev set, in one pass.

    Consistency explains the teacher's predicted class with both models; faithfulness lets each model
    explain its own prediction; plausibility and evidence mass (with ``rationale_file``) use those
    own-prediction maps, matched to rationale lines by the dataset's ``idx``. ``tokenizer`` (the
    student's) supplies ``[MASK]`` and, with ``teacher_tokenizer``, the shared-vocabulary check; without
    them the models' configs are compared. Both models are put in eval mode. Per-example arrays are numpy;
    :func:`to_jsonable` turns the result into something ``json.dump`` accepts.

    ``teacher_faithfulness=False`` leaves out the teacher's ERASER scores: they are the same for every student
    of a teacher, and erasing with the six-layer teacher is about half of this function's time, so a grid that
    scores hundreds of students of one teacher (``egkd bench glue``) skips them.
    """
    _check_shared_tokenizer(student_model, teacher_model, tokenizer, teacher_tokenizer)
    mask_id = _mask_token_id(mask_token_id, tokenizer, student_model)
    # BERT configs carry no mask_token_id: occlude with the tokenizer's [MASK], as the perturbation cache does
    explainer = with_mask_token(_as_explainer(explainer_spec), mask_id)
    if max_examples is not None:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    student_model.eval()
    teacher_model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
    s_dev, t_dev = _device(student_model), _device(teacher_model)
    cons: list[dict[str, Any]] = []
    faith: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"student": [], "student_random": []}
    if teacher_faithfulness:
        faith["teacher"] = []
    kept: dict[str, list[np.ndarray]] = {"student": [], "teacher": [], "word_ids": [], "idx": []}
    for batch in track(loader, "explaining", total=len(loader), enabled=show):
        _, t_target = predict_targets(teacher_model, batch)
        _, s_target = predict_targets(student_model, batch)
        t_map = explainer.attribute(teacher_model, _on(batch, t_dev), t_target.to(t_dev)).detach().cpu()
        s_map_t = explainer.attribute(student_model, _on(batch, s_dev), t_target.to(s_dev)).detach().cpu()
        if bool((s_target == t_target).all()):
            s_map_own = s_map_t
        else:
            s_map_own = explainer.attribute(student_model, _on(batch, s_dev), s_target.to(s_dev)).detach().cpu()
        mask = unit_mask(batch).cpu()
        cons.append(consistency(t_map, s_map_t, mask))
        if teacher_faithfulness:
            faith["teacher"].append(erasure_scores(teacher_model, batch, t_map, t_target, mask_id, fractions))
        faith["student"].append(erasure_scores(student_model, batch, s_map_own, s_target, mask_id, fractions))
        shuffled = RandomOrder().attribute(student_model, batch)
        faith["student_random"].append(erasure_scores(student_model, batch, shuffled, s_target, mask_id, fractions))
        lengths = batch["attention_mask"].sum(1).tolist() if "attention_mask" in batch else None
        for i in range(batch["input_ids"].shape[0]):
            end = int(lengths[i]) if lengths else batch["input_ids"].shape[1]
            kept["teacher"].append(t_map[i, :end].numpy())
            kept["student"].append(s_map_own[i, :end].numpy())
            kept["word_ids"].append(batch["word_ids"][i, :end].cpu().numpy())
        kept["idx"].extend(batch["idx"].tolist() if "idx" in batch else [len(kept["idx"]) + j for j in
                                                                           range(batch["input_ids"].shape[0])])
    rho = np.concatenate([c["spearman_per_example"] for c in cons]) if cons else np.zeros(0)
    jac = np.concatenate([c["jaccard_per_example"] for c in cons]) if cons else np.zeros(0)
    scored = int(np.isfinite(rho).sum())
    report: dict[str, Any] = {
        "explainer": repr(explainer),
        "n_examples": len(rho),
        "consistency": {"spearman": _mean(rho), "jaccard": _mean(jac), "n_examples": len(rho), "n_scored": scored,
                        "n_skipped": len(rho) - scored, "spearman_per_example": rho, "jaccard_per_example": jac},
        "faithfulness": {},
    }
    for name in ("student", "teacher"):
        if name in faith:
            report["faithfulness"][name] = _faithfulness_summary(*_stack(faith[name], len(fractions)), fractions)
    report["faithfulness"]["student"]["random_order"] = random_order_summary(
        *_stack(faith["student_random"], len(fractions)))
    if rationale_file is not None:
        rationales = read_rationales(rationale_file)
        # evidence mass only where the rationale lines up with the example's words (as plausibility does)
        rows = [i for i, k in enumerate(kept["idx"])
                if k in rationales and word_scores(kept["teacher"][i], kept["word_ids"][i]).size
                == len(rationales[k]["rationale"])]
        evidence = [[w for w, r in enumerate(rationales[kept["idx"][i]]["rationale"]) if r] for i in rows]
        report["plausibility"] = {
            name: plausibility(kept[name], kept["word_ids"], rationales, idx=kept["idx"])
            for name in ("student", "teacher")
        }
        report["evidence_mass"] = {
            name: evidence_mass([kept[name][i] for i in rows], [kept["word_ids"][i] for i in rows], evidence)
            for name in ("student", "teacher")
        }
    return report


def means_only(report: Any) -> Any:
    """``report`` without its ``*per_example`` arrays, recursively: what metrics.json keeps (the means), small."""
    if isinstance(report, Mapping):
        return {k: means_only(v) for k, v in report.items() if not str(k).endswith("per_example")}
    return report


def to_jsonable(value: Any) -> Any:
    """Numpy arrays to lists and NaN to ``None``, recursively, so a report can be written as JSON."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
