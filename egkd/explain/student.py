"""The student's differentiable explanation: gradient x input, or a few-step IG, with ``create_graph=True``.

Captum detaches its attributions (they are meant for inspection), so a loss on a Captum map could
not train the model; this module computes the map itself so that an alignment loss on it
backpropagates into the student's parameters (double backprop).

Gradient x input is the one-point case of integrated gradients (right Riemann sum, one step, zero
baseline), so both maps come from one function: ``steps`` path points from a baseline to the input,
the last of them the input itself. A small student's gxi maps can be no better than a random erasure
order while its IG maps are faithful (docs/measurements.md, section 18); aligning a few-step IG map
trains the map that says what the student does, at ``steps`` times the double-backprop cost.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from egkd.errors import EgkdError
from egkd.explain.base import Batch, embed, forward_from_embeddings, select_target, unit_mask
from egkd.explain.integrated_gradients import IntegratedGradients, path_points

STUDENT_BASELINES = ("zero", "pad")


def double_backprop_attention() -> contextlib.AbstractContextManager:
    """Allow only the math SDPA kernel for a forward that a loss will differentiate through a gradient.

    PyTorch's fused SDPA kernels have no double backward: the CPU flash kernel, and on CUDA the
    memory-efficient kernel that is picked under a padding mask (AD-KD failed on an H200 without this:
    "derivative for aten::_scaled_dot_product_efficient_attention_backward is not implemented").
    ``"eager"`` models are unaffected.
    """
    return sdpa_kernel(SDPBackend.MATH)


def student_map_options(spec: str) -> tuple[int, str]:
    """``(steps, baseline)`` of the student's training map from ``gxi`` or ``ig[:steps=N,baseline=pad|zero]``.

    ``ig`` defaults to 2 steps (the double backprop costs ``steps`` times gxi's) and the [PAD] baseline, the
    teacher cache's IG baseline, so that both maps answer the same question.
    """
    name, _, rest = spec.strip().partition(":")
    if name.strip() in ("gxi", "gradient_x_input") and not rest.strip():
        return 1, "zero"
    if name.strip() not in ("ig", "integrated_gradients"):
        raise EgkdError(f"unknown student explainer {spec!r}; use gxi or ig[:steps=N,baseline=pad|zero]")
    options = {"steps": "2", "baseline": "pad"}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = (p.strip() for p in item.partition("="))
        if not eq or key not in options:
            raise EgkdError(f"bad student explainer option {item!r} in {spec!r}; use steps=N and baseline=pad|zero")
        options[key] = value
    if not options["steps"].isdigit() or int(options["steps"]) < 1:
        raise EgkdError(f"student explainer steps must be a positive integer, not {options['steps']!r}")
    if options["baseline"] not in STUDENT_BASELINES:
        raise EgkdError(f"student explainer baseline must be pad or zero, not {options['baseline']!r}")
    return int(options["steps"]), options["baseline"]


def student_gradient_map(
    model: nn.Module, batch: Batch, target: Tensor | None = None, create_graph: bool = True,
    steps: int = 1, baseline: str = "zero",
) -> tuple[Tensor, Tensor]:
    """``(logits [B, C], map [B, L])`` from ONE batched forward of the student.

    The map is integrated gradients w.r.t. the word embeddings along ``steps`` right-Riemann points
    ``a = 1/steps, ..., 1`` from ``baseline`` (the defaults, one step from zero, give gradient x input),
    summed over the hidden dim, zero at special tokens and padding. The last point is the input itself,
    so its logits are returned for the training step's CE/KD losses instead of running another forward.
    With ``create_graph=True`` the map stays in the graph (through the gradients and the embeddings), so
    ``alignment_loss(map, ...)`` trains the model. ``target=None`` explains the student's own prediction
    from this forward; pass the teacher's target to explain the same class as the cached teacher map.

    Runs under :func:`double_backprop_attention`, so models loaded with ``attn_implementation="sdpa"`` work.
    """
    alphas, weights = path_points(steps, "riemann_right")
    with double_backprop_attention(), torch.enable_grad():
        x = embed(model, batch)
        if not x.requires_grad:  # frozen embedding table: make the lookup a leaf of its own
            x = x.detach().requires_grad_(True)
        x0 = IntegratedGradients(steps=steps, baseline=baseline).baseline_embeddings(model, batch, x)
        b = x.shape[0]
        alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device).repeat_interleave(b).view(-1, 1, 1)
        points = x0.repeat(steps, 1, 1) + alpha * (x - x0).repeat(steps, 1, 1)
        logits_all = forward_from_embeddings(model, batch, points)
        logits = logits_all[-b:]
        if target is None and logits.shape[-1] > 1:
            target = logits.detach().argmax(-1)
        tiled = None if target is None else target.to(x.device).repeat(steps)
        (grad,) = torch.autograd.grad(select_target(logits_all, tiled).sum(), points, create_graph=create_graph)
        path_grad = sum(w * g for w, g in zip(weights, grad.split(b), strict=True))
        scores = ((x - x0) * path_grad).sum(-1)
    if not create_graph:
        scores = scores.detach()
    return logits, torch.where(unit_mask(batch), scores, torch.zeros_like(scores))


def student_gradient_maps_all_classes(model: nn.Module, batch: Batch, create_graph: bool = True
                                      ) -> tuple[Tensor, Tensor]:
    """``(logits [B, C], maps [B, L, C])``: the multi-view map, one gradient x input map per class.

    One forward, then one (double-backprop) gradient per class: the term costs C times the single-class map.
    """
    with double_backprop_attention(), torch.enable_grad():
        embeds = embed(model, batch)
        if not embeds.requires_grad:
            embeds = embeds.detach().requires_grad_(True)
        logits = forward_from_embeddings(model, batch, embeds)
        grads = [torch.autograd.grad(logits[:, c].sum(), embeds, create_graph=create_graph, retain_graph=True)[0]
                 for c in range(logits.shape[-1])]
    scores = torch.stack([(g * embeds).sum(-1) for g in grads], -1)
    if not create_graph:
        scores = scores.detach()
    return logits, torch.where(unit_mask(batch).unsqueeze(-1), scores, torch.zeros_like(scores))
