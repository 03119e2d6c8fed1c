"""Gradient x input: the first-order Taylor contribution of each token's word embedding."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from egkd.explain.base import Batch, Explainer, gradient_wrt_embeddings, unit_mask


class GradientXInput(Explainer):
    """``sum_h e_th * d f_target / d e_th`` per token (Shrikumar et al. 2016).

    Signed: positive tokens push the target output up. It is the teacher-side twin of the student
    signal in :func:`egkd.explain.student.student_gradient_map`, which computes the same quantity
    with ``create_graph=True`` so that it can be trained. Cost: one forward, one backward.
    """

    name = "gxi"

    def attribute(self, model: nn.Module, batch: Batch, target: Tensor | None = None) -> Tensor:
        _, embeds, grad = gradient_wrt_embeddings(model, batch, target)
        scores = (grad * embeds).detach().sum(-1)
        return torch.where(unit_mask(batch), scores, torch.zeros_like(scores))
