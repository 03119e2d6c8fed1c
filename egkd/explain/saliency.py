"""Saliency: the size of the gradient of the target output w.r.t. each token's word embedding."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from egkd.explain.base import Batch, Explainer, gradient_wrt_embeddings, unit_mask


class Saliency(Explainer):
    """``||d f_target / d e_t||_2`` per token (Simonyan et al. 2014, Li et al. 2016 for text).

    The L2 norm over the hidden dimension is used rather than Captum's sum of absolute values: it
    does not depend on the (arbitrary) basis of the embedding space and is the usual reduction for
    text. The map is non-negative: it says how *sensitive* the output is to a token, not in which
    direction the token pushes it (that is :class:`GradientXInput`). Cost: one forward, one backward.
    """

    name = "saliency"

    def attribute(self, model: nn.Module, batch: Batch, target: Tensor | None = None) -> Tensor:
        _, _, grad = gradient_wrt_embeddings(model, batch, target)
        scores = grad.detach().norm(dim=-1)
        return torch.where(unit_mask(batch), scores, torch.zeros_like(scores))
