"""Loss terms against the formulas written out independently with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egkd.losses.terms import GoldLoss, KDLoss, LossTerm, StepOutputs, kd_loss, pkd_loss, total_loss


def _log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.5])
def test_kd_loss_matches_formula(temperature):
    rng = np.random.default_rng(1)
    s = rng.normal(size=(6, 3)) * 3
    t = rng.normal(size=(6, 3)) * 3
    log_ps = _log_softmax(s / temperature)
    log_pt = _log_softmax(t / temperature)
    expected = temperature ** 2 * (np.exp(log_pt) * (log_pt - log_ps)).sum() / len(s)
    got = kd_loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), temperature)
    assert got.ndim == 0
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_kd_loss_zero_for_identical_logits_and_gradient_flows():
    t = torch.randn(4, 2)
    s = t.clone().requires_grad_(True)
    loss = kd_loss(s, t, 2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    kd_loss(s + torch.tensor([1.0, 0.0]), t, 2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_kd_loss_regression_is_mse():
    s = np.array([[0.5], [2.0], [4.0]])
    t = np.array([[1.0], [2.5], [3.0]])
    expected = np.mean((s - t) ** 2)
    got = kd_loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32), 3.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)  # no T^2 for regression


def test_pkd_loss_hand_computed():
    rng = np.random.default_rng(2)
    batch, seq, dim = 3, 5, 4
    student = [rng.normal(size=(batch, seq, dim)) for _ in range(3)]  # embeddings + 2 layers
    teacher = [rng.normal(size=(batch, seq, dim)) for _ in range(5)]  # embeddings + 4 layers
    layer_map = {0: 1, 1: 3}
    expected = 0.0
    for s, t in layer_map.items():
        hs = student[s + 1][:, 0]
        ht = teacher[t + 1][:, 0]
        hs = hs / np.linalg.norm(hs, axis=-1, keepdims=True)
        ht = ht / np.linalg.norm(ht, axis=-1, keepdims=True)
        expected += ((hs - ht) ** 2).sum(-1).mean()
    as_t = lambda xs: tuple(torch.tensor(x, dtype=torch.float32) for x in xs)  # noqa: E731
    got = pkd_loss(as_t(student), as_t(teacher), layer_map)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_pkd_loss_ignores_scale():
    h = torch.randn(2, 3, 8)
    assert float(pkd_loss((h, h), (h, 5.0 * h), {0: 0})) == pytest.approx(0.0, abs=1e-6)


def test_gold_loss_cross_entropy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    expected = -_log_softmax(logits)[np.arange(5), labels].mean()
    out = StepOutputs(batch={"labels": torch.tensor(labels)}, student_logits=torch.tensor(logits, dtype=torch.float32))
    assert float(GoldLoss(1.0)(out)) == pytest.approx(expected, rel=1e-5)


def test_gold_loss_regression_mse():
    preds = np.array([[1.0], [2.0], [3.5]])
    labels = np.array([1.5, 2.0, 2.5], dtype=np.float32)
    out = StepOutputs(batch={"labels": torch.tensor(labels)}, student_logits=torch.tensor(preds, dtype=torch.float32))
    assert float(GoldLoss(1.0)(out)) == pytest.approx(np.mean((preds[:, 0] - labels) ** 2), rel=1e-6)


def test_gold_loss_skips_rows_without_a_gold_label():
    """Augmented copies carry label -1: the gold term is the mean over the labelled rows only."""
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 2))
    labels = np.array([1, -1, 0, -1, 1, 0])
    keep = labels >= 0
    expected = -_log_softmax(logits[keep])[np.arange(keep.sum()), labels[keep]].mean()
    out = StepOutputs(batch={"labels": torch.tensor(labels)}, student_logits=torch.tensor(logits, dtype=torch.float32))
    assert float(GoldLoss(1.0)(out)) == pytest.approx(expected, rel=1e-5)
    none = torch.tensor(logits, dtype=torch.float32, requires_grad=True)
    zero = GoldLoss(1.0)(StepOutputs(batch={"labels": torch.full((6,), -1)}, student_logits=none))
    zero.backward()
    assert float(zero.detach()) == 0.0 and none.grad is not None and float(none.grad.abs().sum()) == 0.0


class _Const(LossTerm):
    def __init__(self, name: str, value: float, weight: float) -> None:
        super().__init__(weight)
        self.name = name
        self.value = value

    def __call__(self, out: StepOutputs) -> torch.Tensor:
        return out.student_logits.sum() * 0 + self.value


def test_total_loss_weights_and_parts():
    out = StepOutputs(batch={}, student_logits=torch.zeros(2, 2, requires_grad=True))
    terms = [_Const("a", 2.0, 0.25), _Const("b", 3.0, 2.0), _Const("c", 100.0, 0.0)]
    loss, parts = total_loss(terms, out)
    assert loss.item() == pytest.approx(0.25 * 2.0 + 2.0 * 3.0)
    assert parts == pytest.approx({"a": 2.0, "b": 3.0})  # unweighted values; zero-weight terms skipped


def test_total_loss_kd_method_mix():
    rng = np.random.default_rng(4)
    s = torch.tensor(rng.normal(size=(4, 2)), dtype=torch.float32)
    t = torch.tensor(rng.normal(size=(4, 2)), dtype=torch.float32)
    labels = torch.tensor([0, 1, 1, 0])
    out = StepOutputs(batch={"labels": labels}, student_logits=s, teacher_logits=t)
    alpha, temp = 0.7, 3.0
    loss, parts = total_loss([GoldLoss(1 - alpha), KDLoss(alpha, temp)], out)
    ce = torch.nn.functional.cross_entropy(s, labels)
    expected = (1 - alpha) * float(ce) + alpha * float(kd_loss(s, t, temp))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert parts["gold"] == pytest.approx(float(ce), rel=1e-5)
