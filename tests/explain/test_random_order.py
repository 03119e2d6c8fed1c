"""RandomOrder: the random erasure order that ERASER scores are read against."""

from __future__ import annotations

import torch

from egkd.explain.random_order import RandomOrder


def _batch(rows: list[list[int]], length: int) -> dict[str, torch.Tensor]:
    """``[CLS]=1 ids [SEP]=2`` then padding (0) to ``length``; every token is its own word."""
    ids = [[1, *r, 2] + [0] * (length - len(r) - 2) for r in rows]
    words = [[-1, *range(len(r)), -1] + [-1] * (length - len(r) - 2) for r in rows]
    mask = [[1] * (len(r) + 2) + [0] * (length - len(r) - 2) for r in rows]
    return {"input_ids": torch.tensor(ids), "word_ids": torch.tensor(words), "attention_mask": torch.tensor(mask)}


def test_scores_only_real_tokens_and_ignores_batch_model_and_target():
    a, b = [5, 6, 7, 8], [9, 10]
    one = RandomOrder().attribute(None, _batch([a, b], 8))
    assert one.shape == (2, 8)
    assert torch.all(one[:, 0] == 0) and torch.all(one[0, 5:] == 0) and torch.all(one[1, 3:] == 0)
    assert torch.all((one[0, 1:5] >= 0) & (one[0, 1:5] < 1)) and len(set(one[0, 1:5].tolist())) == 4
    # the same example in another batch, with other padding and neighbours, gets the same order
    alone = RandomOrder().attribute(None, _batch([[11, 12], a], 10), target=torch.tensor([1, 0]))
    assert torch.equal(alone[1, 1:5], one[0, 1:5])


def test_seeds_and_examples_get_different_orders():
    batch = _batch([list(range(5, 25)), list(range(6, 26))], 22)
    first, other = RandomOrder(0).attribute(None, batch), RandomOrder(1).attribute(None, batch)
    assert not torch.equal(first, other)
    assert not torch.equal(torch.argsort(first[0, 1:21]), torch.argsort(first[1, 1:21]))
