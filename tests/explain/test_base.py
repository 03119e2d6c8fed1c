"""Helpers of egkd.explain.base: masks, forward from embeddings, targets, words, normalization."""

from __future__ import annotations

import pytest
import torch

from egkd.errors import EgkdError
from egkd.explain.base import (
    embed,
    forward_from_embeddings,
    normalize,
    resolve_target,
    select_target,
    to_words,
    unit_mask,
)

from .conftest import make_batch


def test_unit_mask_excludes_specials_and_padding(batch):
    mask = unit_mask(batch)
    assert mask.tolist()[1] == [False, True, True, True, False] + [False] * (mask.shape[1] - 5)
    assert mask.sum(1).tolist() == [7, 3, 5]


def test_forward_from_embeddings_matches_plain_forward(model, batch):
    plain = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
    ).logits
    via = forward_from_embeddings(model, batch, embed(model, batch))
    torch.testing.assert_close(via, plain)


def test_forward_from_embeddings_tiles_masks_for_stacked_rows(model, batch):
    e = embed(model, batch)
    once = forward_from_embeddings(model, batch, e)
    twice = forward_from_embeddings(model, batch, torch.cat([e, e]))
    torch.testing.assert_close(twice, torch.cat([once, once]))


def test_select_target_and_regression_column():
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert select_target(logits, torch.tensor([2, 0])).tolist() == [3.0, 4.0]
    assert select_target(torch.tensor([[7.0], [8.0]]), None).tolist() == [7.0, 8.0]
    with pytest.raises(EgkdError):
        select_target(logits, None)


def test_resolve_target():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    assert resolve_target("pred", logits).tolist() == [1, 0]
    assert resolve_target("gold", logits, torch.tensor([0, 0])).tolist() == [0, 0]
    assert resolve_target("pred", torch.tensor([[3.0], [1.0]])).tolist() == [0, 0]
    with pytest.raises(EgkdError):
        resolve_target("gold", logits)
    with pytest.raises(EgkdError):
        resolve_target("every", logits)


def test_to_words_sums_subwords():
    word_ids = torch.tensor([[-1, 0, 0, 1, 2, 2, 2, -1], [-1, 0, 1, 1, -1, -1, -1, -1]])
    token_map = torch.arange(1.0, 9.0).repeat(2, 1)
    words = to_words(token_map, word_ids)
    assert words.tolist() == [[2 + 3, 4, 5 + 6 + 7], [2, 3 + 4, 0]]
    assert to_words(token_map, word_ids, num_words=5).shape == (2, 5)
    # Total attribution over units is preserved.
    torch.testing.assert_close(words.sum(1), (token_map * (word_ids >= 0)).sum(1))


def test_to_words_is_differentiable(batch):
    token_map = torch.randn(batch["word_ids"].shape, requires_grad=True)
    to_words(token_map, batch["word_ids"]).pow(2).sum().backward()
    assert token_map.grad is not None
    assert (token_map.grad[~unit_mask(batch)] == 0).all()


def test_normalize_masked_l2_and_zero_rows():
    x = torch.tensor([[3.0, 4.0, 100.0], [0.0, 0.0, 5.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, False]])
    out = normalize(x, mask)
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.0, 0.0]]))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_make_batch_pair_layout():
    b = make_batch([([[5]], [[6, 7]])])
    assert b["input_ids"].tolist() == [[2, 5, 3, 6, 7, 3]]
    assert b["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1]]
    assert b["word_ids"].tolist() == [[-1, 0, -1, 1, 1, -1]]
