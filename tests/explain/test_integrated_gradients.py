"""Integrated gradients against Captum, completeness, baselines and chunking."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG

from egkd.errors import EgkdError
from egkd.explain.base import embed, forward_from_embeddings, select_target, unit_mask
from egkd.explain.integrated_gradients import IntegratedGradients, path_points

from .conftest import MASK, PAD


def _embedding_fn(model, batch, target):
    """The embedding-level function Captum explains: embeddings -> target output per example."""

    def fn(inputs_embeds):
        return select_target(forward_from_embeddings(model, batch, inputs_embeds), target)

    return fn


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle", "riemann_right"])
@pytest.mark.parametrize("baseline", ["pad", "zero"])
def test_matches_captum(model, batch, method, baseline):
    target = torch.tensor([1, 0, 1])
    ig = IntegratedGradients(steps=8, baseline=baseline, method=method)
    ours = ig.attribute(model, batch, target)
    with torch.no_grad():
        x, x0 = embed(model, batch), ig.baseline_embeddings(model, batch)
    # Captum stacks the path step-major, as forward_from_embeddings tiles the masks, and expands
    # the target itself.
    theirs = CaptumIG(lambda e: forward_from_embeddings(model, batch, e)).attribute(
        x, baselines=x0, target=target, n_steps=8, method=method
    )
    # Captum casts its quadrature weights to float32 (Gauss-Legendre's are not exact in float32:
    # ~3e-8 relative); the Riemann weights 1/8 are exact, so those agree to double precision.
    tol = 1e-6 if method == "gausslegendre" else 1e-10
    torch.testing.assert_close(ours, theirs.sum(-1), rtol=tol, atol=1e-12)


def test_completeness_with_many_steps(model, batch):
    target = torch.tensor([0, 1, 0])
    ig = IntegratedGradients(steps=300, baseline="pad", method="riemann_trapezoid")
    attr = ig.attribute(model, batch, target)
    fn = _embedding_fn(model, batch, target)
    with torch.no_grad():
        gap = fn(embed(model, batch)) - fn(ig.baseline_embeddings(model, batch))
    assert gap.abs().min() > 1e-2  # the baseline really changes the output
    torch.testing.assert_close(attr.sum(1), gap, rtol=1e-4, atol=1e-6)


def test_gauss_legendre_is_complete_with_few_steps(model, batch):
    target = torch.tensor([0, 1, 0])
    ig = IntegratedGradients(steps=16, baseline="zero")
    fn = _embedding_fn(model, batch, target)
    with torch.no_grad():
        gap = fn(embed(model, batch)) - fn(ig.baseline_embeddings(model, batch))
    torch.testing.assert_close(ig.attribute(model, batch, target).sum(1), gap, rtol=1e-3, atol=1e-5)


def test_quadrature_weights_sum_to_one():
    for method in ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]:
        alphas, weights = path_points(7, method)
        assert abs(sum(weights) - 1) < 1e-12, method
        assert all(0 <= a <= 1 for a in alphas)
    assert path_points(3, "riemann_trapezoid") == ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])


def test_chunking_does_not_change_the_result(model, batch):
    target = torch.tensor([1, 1, 0])
    full = IntegratedGradients(steps=5).attribute(model, batch, target)
    chunked = IntegratedGradients(steps=5, internal_batch_size=4).attribute(model, batch, target)
    torch.testing.assert_close(chunked, full, rtol=1e-10, atol=1e-12)


def test_baselines_keep_specials_and_replace_units(model, batch):
    with torch.no_grad():
        x = embed(model, batch)
        word = model.get_input_embeddings().weight
        units = unit_mask(batch)
        for name, expected_row in [("pad", word[PAD]), ("mask", word[MASK]), ("zero", torch.zeros_like(word[0]))]:
            x0 = IntegratedGradients(baseline=name, mask_token_id=MASK).baseline_embeddings(model, batch)
            torch.testing.assert_close(x0[~units], x[~units])
            torch.testing.assert_close(x0[units], expected_row.expand(int(units.sum()), -1))


def test_regression_and_default_target(regression_model, model, batch):
    attr = IntegratedGradients(steps=4).attribute(regression_model, batch)
    assert attr.shape == batch["input_ids"].shape
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
    ).logits
    ig = IntegratedGradients(steps=4)
    torch.testing.assert_close(ig.attribute(model, batch), ig.attribute(model, batch, logits.argmax(-1)))


def test_bad_options():
    with pytest.raises(EgkdError):
        IntegratedGradients(baseline="mask")
    with pytest.raises(EgkdError):
        IntegratedGradients(baseline="noise")
    with pytest.raises(EgkdError):
        IntegratedGradients(method="simpson")
