"""Saliency against finite differences (tiny BERT) and a closed form (linear toy model)."""

from __future__ import annotations

import torch

from egkd.explain.base import unit_mask
from egkd.explain.saliency import Saliency

from .conftest import LinearToy, finite_difference_input_gradient


def test_saliency_matches_finite_differences(model, batch):
    target = torch.tensor([0, 1, 1])
    expected = finite_difference_input_gradient(model, batch, target).norm(dim=-1)
    expected = expected * unit_mask(batch)
    got = Saliency().attribute(model, batch, target)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    assert got[unit_mask(batch)].abs().min() > 1e-4  # a meaningful, non-degenerate comparison


def test_saliency_closed_form_on_linear_model(batch):
    toy = LinearToy()
    target = torch.tensor([1, 0, 1])
    got = Saliency().attribute(toy, batch, target)
    # d logit_c / d e_t = W_c at every attended token, so the map is ||W_c|| on units.
    norms = toy.head.weight.detach().norm(dim=-1)[target]
    expected = norms.unsqueeze(1) * unit_mask(batch)
    torch.testing.assert_close(got, expected)


def test_saliency_default_target_is_prediction(model, batch):
    pred = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
    ).logits.argmax(-1)
    torch.testing.assert_close(Saliency().attribute(model, batch), Saliency().attribute(model, batch, pred))


def test_saliency_leaves_parameter_grads_alone(model, batch):
    Saliency().attribute(model, batch, torch.tensor([0, 0, 0]))
    assert all(p.grad is None for p in model.parameters())
