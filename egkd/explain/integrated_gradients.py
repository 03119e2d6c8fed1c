"""Integrated gradients over word embeddings, with the path points batched into few forwards."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from egkd.errors import EgkdError
from egkd.explain.base import (
    Batch,
    Explainer,
    embed,
    forward_from_embeddings,
    predicted_target,
    select_target,
    unit_mask,
)

BASELINES = ("pad", "zero", "mask")
METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def path_points(steps: int, method: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """``(alphas, weights)`` of the quadrature of ``int_0^1 g(a) da`` with ``steps`` points.

    Gauss-Legendre (Captum's default) is exact for polynomials of degree ``2*steps - 1`` and is the
    most accurate choice at the small step counts a teacher cache can afford (8 by default). The
    alphas and weights are Captum's, so results agree with ``captum.attr.IntegratedGradients`` for
    every method but the trapezoid: Captum's trapezoid weights are ``1/n`` with halved ends and sum
    to ``(n-1)/n``, which shrinks every attribution; here they are ``1/(n-1)`` (a true trapezoid,
    weights summing to 1) so that completeness holds.
    """
    if method not in METHODS:
        raise EgkdError(f"unknown integration method {method!r}; use one of {', '.join(METHODS)}")
    if steps < 1 or (steps < 2 and method == "riemann_trapezoid"):
        raise EgkdError(f"integrated gradients needs more steps than {steps} with {method}")
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * w).tolist()
    n = steps
    if method == "riemann_trapezoid":
        alphas = [k / (n - 1) for k in range(n)]
        weights = [1 / (n - 1)] * n
        weights[0] /= 2
        weights[-1] /= 2
        return alphas, weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return [(k + offset) / n for k in range(n)], [1 / n] * n


class IntegratedGradients(Explainer):
    """IG (Sundararajan et al. 2017) from a baseline to the input along the straight line.

    ``attr_t = sum_h (e_th - b_th) * sum_k w_k * d f / d e_th (b + a_k (e - b))``, summed over the
    hidden dim. Baselines differ from the input only at unit positions ([CLS], [SEP] and padding
    keep their embeddings), so specials get exactly 0 and the path does not move the sentence
    structure the model relies on:

    - ``'pad'``: the [PAD] embedding (``pad_token_id``, default ``model.config.pad_token_id``);
    - ``'zero'``: the zero vector;
    - ``'mask'``: the [MASK] embedding (``mask_token_id`` is required, e.g. the tokenizer's).

    All ``steps * B`` path points go through the model in one forward, or in chunks of at most
    ``internal_batch_size`` rows (a row is one example at one step) to bound memory; on CPU smaller
    chunks can even be faster (see DESIGN.md), so measure.
    """

    name = "ig"

    def __init__(
        self,
        steps: int = 8,
        baseline: str = "pad",
        internal_batch_size: int | None = None,
        method: str = "gausslegendre",
        pad_token_id: int | None = None,
        mask_token_id: int | None = None,
    ) -> None:
        if baseline not in BASELINES:
            raise EgkdError(f"unknown IG baseline {baseline!r}; use one of {', '.join(BASELINES)}")
        if baseline == "mask" and mask_token_id is None:
            raise EgkdError("IG baseline 'mask' needs mask_token_id (the tokenizer's [MASK] id)")
        if internal_batch_size is not None and internal_batch_size < 1:
            raise EgkdError("internal_batch_size must be a positive number of rows")
        path_points(steps, method)  # validates steps and method now rather than at the first batch
        self.steps = steps
        self.baseline = baseline
        self.internal_batch_size = internal_batch_size
        self.method = method
        self.pad_token_id = pad_token_id
        self.mask_token_id = mask_token_id

    def baseline_embeddings(self, model: nn.Module, batch: Batch, x: Tensor | None = None) -> Tensor:
        """Baseline ``[B, L, H]``: the input's embeddings with unit positions replaced. ``x``: the batch's
        embeddings when the caller has them already (they are looked up otherwise); the baseline is detached."""
        with torch.no_grad():
            x = embed(model, batch) if x is None else x.detach()
            units = unit_mask(batch).unsqueeze(-1)
            if self.baseline == "zero":
                fill = torch.zeros_like(x)
            else:
                token = self.mask_token_id if self.baseline == "mask" else self.pad_token_id
                if token is None:
                    token = getattr(model.config, "pad_token_id", None)
                if token is None:
                    raise EgkdError("IG baseline 'pad' needs pad_token_id: the model config has none")
                fill = embed(model, {"input_ids": torch.full_like(batch["input_ids"], token)})
            return torch.where(units, fill, x)

    def attribute(self, model: nn.Module, batch: Batch, target: Tensor | None = None) -> Tensor:
        if target is None:
            target = predicted_target(model, batch)
        alphas, weights = path_points(self.steps, self.method)
        with torch.no_grad():
            x = embed(model, batch)
            x0 = self.baseline_embeddings(model, batch, x)
        b = x.shape[0]
        # Row r of the stacked path is example r % B at step r // B, so masks and targets tile.
        alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device).repeat_interleave(b)
        weight = torch.tensor(weights, dtype=x.dtype, device=x.device).repeat_interleave(b)
        example = torch.arange(b, device=x.device).repeat(self.steps)
        rows = self.steps * b
        chunk = self.internal_batch_size or rows
        total_grad = torch.zeros_like(x)
        for start in range(0, rows, chunk):
            sl = slice(start, min(start + chunk, rows))
            ex = example[sl]
            a = alpha[sl].view(-1, 1, 1)
            point = (x0[ex] + a * (x[ex] - x0[ex])).requires_grad_(True)
            sub = {k: batch[k][ex] for k in ("attention_mask", "token_type_ids") if k in batch}
            with torch.enable_grad():
                logits = forward_from_embeddings(model, sub, point)
                out = select_target(logits, target[ex] if logits.shape[-1] > 1 else None)
                (grad,) = torch.autograd.grad(out.sum(), point)
            total_grad.index_add_(0, ex, grad * weight[sl].view(-1, 1, 1))
        scores = ((x - x0) * total_grad).sum(-1)
        return torch.where(unit_mask(batch), scores, torch.zeros_like(scores))
