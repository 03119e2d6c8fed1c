"""Alignment losses against their formulas computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from egkd.errors import EgkdError
from egkd.explain.align import alignment_loss

S = torch.tensor([[3.0, 0.0, 4.0, 9.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
T = torch.tensor([[0.0, 3.0, 4.0, -9.0], [2.0, 0.0, 0.0, 5.0]], dtype=torch.float64)
M = torch.tensor([[True, True, True, False], [True, True, False, False]])
# Normalized over the units by hand: row 0 uses the first 3 entries, row 1 the first 2.
SN = [[0.6, 0.0, 0.8], [1 / math.sqrt(2), 1 / math.sqrt(2)]]
TN = [[0.0, 0.6, 0.8], [1.0, 0.0]]


def test_mse():
    row0 = 0.6**2 + 0.6**2 + 0.0
    row1 = (1 / math.sqrt(2) - 1) ** 2 + 0.5
    assert alignment_loss(S, T, M).item() == pytest.approx((row0 + row1) / 2)


def test_cosine():
    cos0 = 0.64
    cos1 = 1 / math.sqrt(2)
    assert alignment_loss(S, T, M, kind="cosine").item() == pytest.approx(((1 - cos0) + (1 - cos1)) / 2)


def test_kl_over_units_only():
    tau = 0.5
    total = 0.0
    for s, t in zip(SN, TN, strict=True):
        ps = [math.exp(v / tau) for v in s]
        pt = [math.exp(v / tau) for v in t]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))
    assert alignment_loss(S, T, M, kind="kl", tau=tau).item() == pytest.approx(total / 2)


def test_topk_uses_teacher_top_units_by_magnitude():
    # k = 0.5: ceil(0.5 * 3) = 2 units in row 0 (|t| = 0.8 at 2, 0.6 at 1), 1 unit in row 1 (unit 0).
    row0 = (0.0 - 0.6) ** 2 + (0.8 - 0.8) ** 2
    row1 = (1 / math.sqrt(2) - 1) ** 2
    assert alignment_loss(S, T, M, kind="topk", k=0.5).item() == pytest.approx((row0 + row1) / 2)


def test_rank_is_two_minus_two_pearson_with_the_teachers_ranks():
    from scipy.stats import pearsonr, rankdata

    student = torch.tensor([[3.0, 0.0, 4.0, 9.0], [1.0, 2.5, 0.0, 0.0]], dtype=torch.float64)
    expected = [2 - 2 * pearsonr(student[i][M[i]].numpy(), rankdata(T[i][M[i]].numpy())).statistic for i in range(2)]
    assert alignment_loss(student, T, M, kind="rank").item() == pytest.approx(sum(expected) / 2)
    # a constant student row (Pearson undefined) costs 1, as a zero map does under 'mse'
    row1 = alignment_loss(S[1:], T[1:], M[1:], kind="rank")
    assert row1.item() == pytest.approx(1.0)


def test_rank_is_zero_for_any_increasing_linear_map_of_the_ranks_and_sees_only_order():
    # row 0's masked teacher values 0, 3, 4 have ranks 0, 1, 2; row 1's 2, 0 have ranks 1, 0
    student = torch.tensor([[5.0, 7.0, 9.0, -100.0], [4.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    assert alignment_loss(student, T, M, kind="rank").item() == pytest.approx(0.0, abs=1e-12)
    # any teacher map with the same order gives the same loss (Spearman's invariance), the 'mse' does not
    squashed = torch.tensor([[0.0, 1e-3, 1e3, -9.0], [2.0, 1.0, 0.0, 5.0]], dtype=torch.float64)
    same_order = alignment_loss(S, squashed, M, kind="rank").item()
    assert same_order == pytest.approx(alignment_loss(S, T, M, kind="rank").item())
    assert alignment_loss(S, squashed, M).item() != pytest.approx(alignment_loss(S, T, M).item())


def test_identical_maps_give_zero_and_scale_is_ignored():
    for kind in ["mse", "cosine", "kl", "topk"]:
        assert alignment_loss(5 * T, T, M, kind=kind).item() == pytest.approx(0.0, abs=1e-12)


def test_gradients_are_finite_with_empty_rows():
    s = S.clone().requires_grad_(True)
    mask = M.clone()
    mask[1] = False
    for kind in ["mse", "cosine", "kl", "topk", "rank"]:
        loss = alignment_loss(s, T, mask, kind=kind)
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), kind
        assert (grad[~mask] == 0).all()


def test_unknown_kind():
    with pytest.raises(EgkdError, match="mse"):
        alignment_loss(S, T, M, kind="l1")


def test_half_precision_maps_are_handled_in_float32():
    for kind in ["mse", "cosine", "kl", "topk", "rank"]:
        ref = alignment_loss(S, T, M, kind=kind)
        half = alignment_loss((S * 1000).half(), T.half(), M, kind=kind)
        assert half.dtype == torch.float32 and torch.isfinite(half)
        assert half.item() == pytest.approx(ref.item(), rel=1e-3, abs=1e-3)

