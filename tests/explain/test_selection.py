"""Top-r rationales, short rationale/complement inputs, and the amortized selector."""

from __future__ import annotations

import torch

from egkd.explain.base import unit_mask
from egkd.explain.selection import AmortizedSelector, rationale_inputs, top_r_rationale, train_selector

from .conftest import CLS, PAD, SEP, LinearToy, make_batch


def test_top_r_picks_the_highest_units():
    scores = torch.tensor([[9.0, 0.1, 0.5, 0.3, 0.9, 0.2, 5.0], [9.0, 1.0, 2.0, 9.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[False, True, True, True, True, True, False], [False, True, True, False, False, False, False]])
    got = top_r_rationale(scores, mask, budget=0.4)
    # Row 0: ceil(0.4 * 5) = 2 units -> scores 0.9 and 0.5; row 1: ceil(0.8) = 1 unit -> 2.0.
    assert got.tolist() == [
        [False, False, True, False, True, False, False],
        [False, False, True, False, False, False, False],
    ]
    assert top_r_rationale(scores, mask, budget=0.0).sum(1).tolist() == [1, 1]  # at least one
    assert top_r_rationale(scores, mask, budget=1.0).tolist() == mask.tolist()


def test_top_r_budget_is_robust_to_float_error():
    mask = torch.ones(1, 30, dtype=torch.bool)
    assert int(top_r_rationale(torch.arange(30.0).unsqueeze(0), mask, budget=0.1).sum()) == 3  # not 4


def test_rationale_inputs_are_short_and_renumbered(batch):
    rationale = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    rationale[0, [4, 5, 6]] = True  # word 2 of example 0 (three subwords)
    rationale[1, 3] = True  # second subword of word 1
    rationale[2, 5] = True  # word 2, in the second segment of the pair
    short = rationale_inputs(batch, rationale, keep=True)
    assert short["input_ids"].tolist() == [[CLS, 8, 9, 10, SEP], [CLS, 14, SEP, PAD, PAD], [CLS, SEP, 18, SEP, PAD]]
    assert short["attention_mask"].tolist() == [[1] * 5, [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]]
    assert short["token_type_ids"].tolist() == [[0] * 5, [0, 0, 0, 0, 0], [0, 0, 1, 1, 0]]
    assert short["word_ids"].tolist() == [[-1, 0, 0, 0, -1], [-1, 0, -1, -1, -1], [-1, -1, 0, -1, -1]]
    assert short["orig_positions"].tolist() == [[0, 4, 5, 6, 8], [0, 3, 4, -1, -1], [0, 4, 5, 7, -1]]
    assert short["labels"] is batch["labels"] and short["idx"] is batch["idx"]

    comp = rationale_inputs(batch, rationale, keep=False)
    assert comp["input_ids"].tolist()[0] == [CLS, 5, 6, 7, 11, SEP, PAD]
    assert comp["word_ids"].tolist()[0] == [-1, 0, 0, 1, 2, -1, -1]
    assert comp["input_ids"].tolist()[2] == [CLS, 15, 16, 17, SEP, 19, SEP]
    assert comp["word_ids"].tolist()[2] == [-1, 0, 1, 1, -1, 2, -1]


def test_rationale_inputs_run_through_a_model(model, batch):
    rationale = top_r_rationale(torch.rand(batch["input_ids"].shape), unit_mask(batch), 0.2)
    short = rationale_inputs(batch, rationale)
    logits = model(
        input_ids=short["input_ids"], attention_mask=short["attention_mask"], token_type_ids=short["token_type_ids"]
    ).logits
    assert logits.shape == (3, 2)
    assert short["input_ids"].shape[1] < batch["input_ids"].shape[1]


KEY_POS, KEY_NEG = 20, 21


def _keyword_teacher() -> LinearToy:
    """A linear bag-of-embeddings teacher decided by one keyword per sentence; other tokens are noise."""
    toy = LinearToy(hidden=8, seed=1)
    with torch.no_grad():
        toy.embeddings.weight.mul_(0.1)
        toy.embeddings.weight[PAD] = 0
        d = toy.head.weight[1] - toy.head.weight[0]
        toy.embeddings.weight[KEY_POS] = 4 * d / d.dot(d)
        toy.embeddings.weight[KEY_NEG] = -4 * d / d.dot(d)
    return toy


def _keyword_batches(n_batches: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    fillers = [t for t in range(5, 50) if t not in (KEY_POS, KEY_NEG)]
    batches = []
    for _ in range(n_batches):
        examples = []
        for _ in range(16):
            n = int(torch.randint(6, 11, (1,), generator=gen))
            words = [[fillers[int(i)]] for i in torch.randint(len(fillers), (n,), generator=gen)]
            key = KEY_POS if torch.rand(1, generator=gen) < 0.5 else KEY_NEG
            words.insert(int(torch.randint(n + 1, (1,), generator=gen)), [key])
            examples.append(words)
        batches.append(make_batch(examples))
    return batches


def _agreement(teacher, batches, select) -> float:
    agree = total = 0
    with torch.no_grad():
        for b in batches:
            full = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.argmax(-1)
            short = rationale_inputs(b, select(b))
            part = teacher(input_ids=short["input_ids"], attention_mask=short["attention_mask"]).logits
            agree += int((part.argmax(-1) == full).sum())
            total += len(full)
    return agree / total


def test_selector_keeps_the_teachers_decision():
    teacher = _keyword_teacher()
    selector = train_selector(teacher, _keyword_batches(8, seed=0), budget=0.2, steps=150, lr=3e-2)
    assert isinstance(selector, AmortizedSelector)
    held_out = _keyword_batches(4, seed=1)
    gen = torch.Generator().manual_seed(0)
    learned = _agreement(teacher, held_out, selector.select)
    random = _agreement(
        teacher, held_out, lambda b: top_r_rationale(torch.rand(b["input_ids"].shape, generator=gen), unit_mask(b), 0.2)
    )
    assert learned >= 0.9, (learned, random)
    assert learned > random + 0.15, (learned, random)
    assert all(p.grad is None for p in teacher.parameters())  # the teacher stays untouched
    picked = selector.select(held_out[0])
    assert picked.sum(1).tolist() == [max(1, -(-int(n) * 2 // 10)) for n in unit_mask(held_out[0]).sum(1)]
