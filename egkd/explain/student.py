"""The student's differentiable explanation: gradient x input with ``create_graph=True``.

Captum detaches its attributions (they are meant for inspection), so a loss on a Captum map could
not train the model; this module computes the map itself so that an alignment loss on it
backpropagates into the student's parameters (double backprop).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from egkd.explain.base import Batch, embed, forward_from_embeddings, gradient_wrt_embeddings, unit_mask


def double_backprop_attention() -> contextlib.AbstractContextManager:
    """Allow only the math SDPA kernel for a forward that a loss will differentiate through a gradient.

    PyTorch's fused SDPA kernels have no double backward: the CPU flash kernel, and on CUDA the
    memory-efficient kernel that is picked under a padding mask (AD-KD failed on an H200 without this:
    "derivative for aten::_scaled_dot_product_efficient_attention_backward is not implemented").
    ``"eager"`` models are unaffected.
    """
    return sdpa_kernel(SDPBackend.MATH)


def student_gradient_map(
    model: nn.Module, batch: Batch, target: Tensor | None = None, create_graph: bool = True
) -> tuple[Tensor, Tensor]:
    """``(logits [B, C], map [B, L])`` from ONE forward of the student.

    The logits are returned so the training step reuses them for its CE/KD losses instead of
    running a second forward. The map is gradient x input w.r.t. the word embeddings, summed over
    the hidden dim, zero at special tokens and padding; with ``create_graph=True`` it stays in the
    graph (through both the gradient and the embeddings), so ``alignment_loss(map, ...)``
    trains the model. ``target=None`` explains the student's own prediction from this forward;
    pass the teacher's target to explain the same class as the cached teacher map.

    Runs under :func:`double_backprop_attention`, so models loaded with ``attn_implementation="sdpa"`` work.
    """
    with double_backprop_attention():
        logits, embeds, grad = gradient_wrt_embeddings(model, batch, target, create_graph=create_graph)
    scores = (grad * embeds).sum(-1)
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
