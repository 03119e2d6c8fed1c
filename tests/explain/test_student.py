"""student_gradient_map: one forward, double backprop into the parameters, eager and sdpa."""

from __future__ import annotations

import pytest
import torch

from egkd.errors import EgkdError
from egkd.explain.align import alignment_loss
from egkd.explain.base import unit_mask
from egkd.explain.gradient_x_input import GradientXInput
from egkd.explain.student import student_gradient_map, student_gradient_maps_all_classes, student_map_options

from .conftest import make_model

TEACHER_MAP_SEED = 7


def _teacher_map(batch):
    gen = torch.Generator().manual_seed(TEACHER_MAP_SEED)
    return torch.randn(batch["input_ids"].shape, generator=gen, dtype=torch.float64)


def _assert_gradient_matches_finite_differences(loss, param, entries, eps: float = 1e-6) -> None:
    """The double-backprop gradient of ``loss()`` w.r.t. ``param`` at ``entries`` against central differences."""
    (grad,) = torch.autograd.grad(loss(), param)
    for row, col in entries:
        with torch.no_grad():
            orig = param[row, col].item()
            param[row, col] = orig + eps
            up = loss().item()
            param[row, col] = orig - eps
            down = loss().item()
            param[row, col] = orig
        numeric = (up - down) / (2 * eps)
        assert abs(grad[row, col].item()) > 1e-6
        assert abs(grad[row, col].item() - numeric) <= 1e-6 * abs(numeric) + 1e-9, (row, col)


def test_logits_and_map_match_the_plain_forward_and_gxi(model, batch):
    target = torch.tensor([1, 0, 1])
    logits, gmap = student_gradient_map(model, batch, target)
    plain = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]
    ).logits
    torch.testing.assert_close(logits, plain)
    torch.testing.assert_close(gmap.detach(), GradientXInput().attribute(model, batch, target))
    assert (gmap[~unit_mask(batch)] == 0).all()
    assert gmap.requires_grad and logits.requires_grad


def test_alignment_loss_reaches_every_layer(model, batch):
    _, gmap = student_gradient_map(model, batch, torch.tensor([1, 0, 1]))
    alignment_loss(gmap, _teacher_map(batch), unit_mask(batch)).backward()
    named = dict(model.named_parameters())
    for name in [
        "bert.embeddings.word_embeddings.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.1.intermediate.dense.weight",
        "classifier.weight",
    ]:
        assert named[name].grad is not None and named[name].grad.abs().max() > 0, name


def test_double_backprop_matches_finite_differences(model, batch):
    target = torch.tensor([1, 0, 1])
    teacher = _teacher_map(batch)
    mask = unit_mask(batch)
    param = model.bert.encoder.layer[0].attention.self.query.weight

    def loss():
        return alignment_loss(student_gradient_map(model, batch, target)[1], teacher, mask)

    _assert_gradient_matches_finite_differences(loss, param, [(0, 0), (3, 7), (11, 2)])


def test_works_with_sdpa_attention_and_agrees_with_eager(batch):
    eager, sdpa = make_model(attn="eager"), make_model(attn="sdpa")
    assert sdpa.config._attn_implementation == "sdpa"
    target = torch.tensor([0, 0, 1])
    _, map_e = student_gradient_map(eager, batch, target)
    _, map_s = student_gradient_map(sdpa, batch, target)
    alignment_loss(map_s, _teacher_map(batch), unit_mask(batch)).backward()  # fails without MATH
    torch.testing.assert_close(map_s, map_e, rtol=1e-8, atol=1e-10)
    assert sdpa.classifier.weight.grad is not None


def test_without_create_graph_the_map_is_detached(model, batch):
    _, gmap = student_gradient_map(model, batch, create_graph=False)
    assert not gmap.requires_grad


def test_multi_view_maps_equal_one_map_per_class_and_train(model, batch):
    logits, maps = student_gradient_maps_all_classes(model, batch)
    assert maps.shape == (*batch["input_ids"].shape, logits.shape[-1])
    for c in range(logits.shape[-1]):
        target = torch.full((batch["input_ids"].shape[0],), c)
        torch.testing.assert_close(maps[..., c].detach(), GradientXInput().attribute(model, batch, target))
    sum(alignment_loss(maps[..., c], _teacher_map(batch), unit_mask(batch)) for c in range(maps.shape[-1])).backward()
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().max() > 0


def _fused_attention_calls(monkeypatch) -> list[bool]:
    """Spy on SDPA: for every call, whether a fused kernel (flash or memory-efficient) was allowed."""
    calls: list[bool] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(torch.backends.cuda.flash_sdp_enabled() or torch.backends.cuda.mem_efficient_sdp_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


def test_double_backprop_forwards_allow_only_the_math_attention_kernel(monkeypatch, batch):
    """CUDA picks the memory-efficient SDPA kernel under a padding mask and it has no double backward (AD-KD
    failed on an H200). CPU picks the math kernel anyway, so the failure cannot be reproduced here: check instead
    that every student forward a loss differentiates through a gradient runs with the fused kernels disabled."""
    from egkd.losses.explanation import ADKDAttribution
    from egkd.losses.terms import StepOutputs

    student = make_model(attn="sdpa", seed=1)
    teacher = make_model(attn="eager", seed=2)  # the teacher is not double-backpropagated: keep it out of the spy
    calls = _fused_attention_calls(monkeypatch)
    student_gradient_map(student, batch, torch.tensor([1, 0, 1]))
    student_gradient_maps_all_classes(student, batch)
    assert calls and not any(calls), "the gradient family's student forwards allowed a fused kernel"
    logits = student(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    assert calls[-1], "outside double backprop the fused kernels stay allowed"
    calls.clear()
    out = StepOutputs(batch=batch, student_logits=logits, extras={"teacher_model": teacher, "model": student})
    ADKDAttribution(steps=2)(out).backward()
    assert calls and not any(calls), "AD-KD's student forward allowed a fused kernel"


def test_few_step_ig_map_equals_the_ig_explainer_and_keeps_the_input_logits(model, batch):
    """The training map with ``steps`` points is IG by the right Riemann sum from the [PAD] baseline: the explainer
    (stacked path, its own batching) must give the same map, and the logits are those of the clean input."""
    from egkd.explain.integrated_gradients import IntegratedGradients

    target = torch.tensor([1, 0, 1])
    logits, gmap = student_gradient_map(model, batch, target, steps=3, baseline="pad")
    plain = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    torch.testing.assert_close(logits, plain)
    expected = IntegratedGradients(steps=3, baseline="pad", method="riemann_right").attribute(model, batch, target)
    torch.testing.assert_close(gmap.detach(), expected)
    assert not torch.allclose(gmap.detach(), GradientXInput().attribute(model, batch, target))
    assert (gmap[~unit_mask(batch)] == 0).all()


def test_few_step_ig_map_trains_the_student_through_every_path_point(model, batch):
    """Double backprop through the stacked path: the loss's gradient agrees with finite differences."""
    target = torch.tensor([1, 0, 1])
    teacher, mask = _teacher_map(batch), unit_mask(batch)
    param = model.bert.encoder.layer[1].attention.self.key.weight

    def loss():
        return alignment_loss(student_gradient_map(model, batch, target, steps=2, baseline="pad")[1], teacher, mask)

    _assert_gradient_matches_finite_differences(loss, param, [(0, 1), (5, 9)])


def test_regression_ig_map_needs_no_target(regression_model, batch):
    from egkd.explain.integrated_gradients import IntegratedGradients

    _, gmap = student_gradient_map(regression_model, batch, None, steps=2, baseline="zero")
    expected = IntegratedGradients(steps=2, baseline="zero", method="riemann_right").attribute(regression_model, batch)
    torch.testing.assert_close(gmap.detach(), expected)


@pytest.mark.parametrize(("spec", "expected"), [("gxi", (1, "zero")), ("ig", (2, "pad")),
                                                ("ig:steps=4", (4, "pad")), ("ig:steps=3,baseline=zero", (3, "zero"))])
def test_student_map_options(spec, expected):
    assert student_map_options(spec) == expected


@pytest.mark.parametrize("spec", ["occlusion", "ig:steps=0", "ig:baseline=mask", "ig:method=riemann_left", "gxi:x=1"])
def test_student_map_options_refuse_what_the_training_map_cannot_do(spec):
    with pytest.raises(EgkdError):
        student_map_options(spec)
