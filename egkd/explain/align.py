"""Alignment losses between a student's and a teacher's explanation maps over units.

Both maps are L2-normalized per example over the units first (their scales differ between models
and methods; only the shape of the explanation is distilled). All losses are means over the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from egkd.errors import EgkdError
from egkd.explain.base import normalize
from egkd.explain.selection import top_r_rationale

KINDS = ("mse", "cosine", "kl", "topk", "rank")
_NEG = -1e9  # finite stand-in for -inf: exp() gives exactly 0 without inf - inf = NaN in the KL


def alignment_loss(
    student_map: Tensor,
    teacher_map: Tensor,
    mask: Tensor,
    kind: str = "mse",
    tau: float = 1.0,
    k: float = 0.2,
) -> Tensor:
    """Scalar loss aligning ``student_map`` to ``teacher_map`` (both ``[B, N]``) on ``mask`` units.

    - ``'mse'`` (default): ``sum_u (s_u - t_u)^2`` of the normalized maps, mean over the batch;
      equals ``2 - 2 cos`` for non-zero rows, but keeps a useful gradient for zero maps.
    - ``'cosine'``: ``1 - cos(s, t)``.
    - ``'kl'``: ``KL(softmax(t / tau) || softmax(s / tau))`` over units only (normalized maps, so
      ``tau`` alone sets the sharpness).
    - ``'topk'``: AD-KD style, the ``'mse'`` terms restricted to the teacher's top ``ceil(k * n)``
      units by absolute value (a strongly negative unit matters as much as a positive one).
    - ``'rank'``: a differentiable stand-in for the Spearman correlation that the evaluation reports,
      ``2 - 2 * Pearson(student, ranks(teacher))`` over the units (the ``'mse'`` of the two maps, each
      centred and normalized, after the teacher's map is replaced by its ranks). Gradient x input maps are
      heavy-tailed, so the normalized ``'mse'`` is mostly about the teacher's few largest units; against
      ranks every unit's place in the order counts, as in Spearman. The student's map itself cannot be
      ranked differentiably, so it is matched linearly to the teacher's ranks; a student map that is any
      increasing linear function of them scores 0. Ties in the teacher's map are broken by position.

    The teacher map is treated as a constant (``detach``): it comes from the frozen cache.
    """
    if kind not in KINDS:
        raise EgkdError(f"unknown alignment loss {kind!r}; use one of {', '.join(KINDS)}")
    mask = mask.bool()
    # At least float32: under fp16 autocast the squared norms can overflow and -1e9 becomes -inf.
    dtype = torch.promote_types(student_map.dtype, torch.float32)
    s = normalize(student_map.to(dtype), mask)
    t = normalize(teacher_map.detach().to(dtype), mask)
    if kind == "mse":
        return (s - t).pow(2).sum(-1).mean()
    if kind == "cosine":
        return (1 - (s * t).sum(-1)).mean()
    if kind == "rank":
        # centring then normalizing ignores scale, so the normalized maps s and t serve as well as the raw ones
        return (centred(s, mask) - centred(ranks(t, mask), mask)).pow(2).sum(-1).mean()
    if kind == "topk":
        top = top_r_rationale(t.abs(), mask, budget=k)
        return torch.where(top, (s - t).pow(2), torch.zeros_like(s)).sum(-1).mean()
    if tau <= 0 or not math.isfinite(tau):
        raise EgkdError(f"alignment temperature must be positive, got {tau}")
    log_p_t = (t / tau).masked_fill(~mask, _NEG).log_softmax(-1)
    log_p_s = (s / tau).masked_fill(~mask, _NEG).log_softmax(-1)
    terms = log_p_t.exp() * (log_p_t - log_p_s)
    return torch.where(mask, terms, torch.zeros_like(terms)).sum(-1).mean()


def ranks(values: Tensor, mask: Tensor) -> Tensor:
    """Each unit's rank (0 = smallest) among its row's ``mask`` units, as floats; 0 off the mask."""
    keyed = values.masked_fill(~mask, float("inf"))  # units off the mask sort last and are zeroed below
    order = keyed.argsort(dim=-1, stable=True).argsort(dim=-1, stable=True)
    return torch.where(mask, order.to(values.dtype), torch.zeros_like(values))


def centred(values: Tensor, mask: Tensor) -> Tensor:
    """Subtract each row's mean over the ``mask`` units, then L2-normalize over them (Pearson's ingredients)."""
    count = mask.sum(-1, keepdim=True).clamp_min(1)
    mean = torch.where(mask, values, torch.zeros_like(values)).sum(-1, keepdim=True) / count
    return normalize(values - mean, mask)
