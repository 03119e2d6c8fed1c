"""Gradient x input against finite differences (tiny BERT) and a closed form (linear toy model)."""

from __future__ import annotations

import torch

from egkd.explain.base import embed, unit_mask
from egkd.explain.gradient_x_input import GradientXInput

from .conftest import LinearToy, finite_difference_input_gradient


def test_gxi_matches_finite_differences(model, batch):
    target = torch.tensor([1, 0, 1])
    grad = finite_difference_input_gradient(model, batch, target)
    with torch.no_grad():
        expected = (grad * embed(model, batch)).sum(-1) * unit_mask(batch)
    got = GradientXInput().attribute(model, batch, target)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    assert got[unit_mask(batch)].abs().min() > 1e-5


def test_gxi_closed_form_on_linear_model(batch):
    toy = LinearToy()
    target = torch.tensor([0, 1, 0])
    got = GradientXInput().attribute(toy, batch, target)
    with torch.no_grad():
        # logit_c = sum_t W_c . e_t, so each token's contribution is exactly W_c . e_t.
        contrib = toy.embeddings(batch["input_ids"]) @ toy.head.weight.T  # [B, L, C]
        expected = contrib.gather(2, target.view(-1, 1, 1).expand(-1, contrib.shape[1], 1)).squeeze(2)
    torch.testing.assert_close(got, expected * unit_mask(batch))


def test_gxi_regression_explains_column_zero(regression_model, batch):
    got = GradientXInput().attribute(regression_model, batch)
    grad = finite_difference_input_gradient(regression_model, batch, torch.zeros(3, dtype=torch.long))
    with torch.no_grad():
        expected = (grad * embed(regression_model, batch)).sum(-1) * unit_mask(batch)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


def test_distilbert_student_without_token_type_ids(batch):
    from transformers import AutoModelForSequenceClassification, DistilBertConfig

    torch.manual_seed(0)
    cfg = DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=32)
    distil = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager").double().eval()
    got = GradientXInput().attribute(distil, batch)
    assert got.shape == batch["input_ids"].shape and (got[unit_mask(batch)] != 0).any()
