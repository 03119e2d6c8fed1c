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

KINDS = ("mse", "cosine", "kl", "topk")
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
    if kind == "topk":
        top = top_r_rationale(t.abs(), mask, budget=k)
        return torch.where(top, (s - t).pow(2), torch.zeros_like(s)).sum(-1).mean()
    if tau <= 0 or not math.isfinite(tau):
        raise EgkdError(f"alignment temperature must be positive, got {tau}")
    log_p_t = (t / tau).masked_fill(~mask, _NEG).log_softmax(-1)
    log_p_s = (s / tau).masked_fill(~mask, _NEG).log_softmax(-1)
    terms = log_p_t.exp() * (log_p_t - log_p_s)
    return torch.where(mask, terms, torch.zeros_like(terms)).sum(-1).mean()
