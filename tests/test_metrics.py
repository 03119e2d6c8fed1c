"""GLUE metrics and fidelity against independent computations with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from egkd.data.tasks import get_task
from egkd.evaluation.metrics import fidelity, predictions_from_logits, task_metrics

# tp = 2 (rows 0, 3), tn = 1 (row 1), fp = 1 (row 2), fn = 1 (row 4)
PREDS = np.array([1, 0, 1, 1, 0])
LABELS = np.array([1, 0, 0, 1, 1])


def test_accuracy_sst2():
    assert task_metrics(PREDS, LABELS, get_task("sst2")) == pytest.approx({"accuracy": 60.0})


def test_f1_and_accuracy_mrpc():
    # precision = recall = 2/3 -> F1 = 2/3
    m = task_metrics(PREDS, LABELS, get_task("mrpc"))
    assert set(m) == {"f1", "accuracy"}
    assert m["f1"] == pytest.approx(200.0 / 3.0)
    assert m["accuracy"] == pytest.approx(60.0)


def test_f1_positive_class_is_one():
    # all negatives predicted right, no positive predicted: F1 of class 1 is 0, accuracy 75 %
    m = task_metrics(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1]), get_task("qqp"))
    assert m["f1"] == 0.0
    assert m["accuracy"] == pytest.approx(75.0)


def test_matthews_cola():
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3*3*2*2) = 1/6
    m = task_metrics(PREDS, LABELS, get_task("cola"))
    assert m["matthews"] == pytest.approx(100.0 / 6.0)
    assert m["accuracy"] == pytest.approx(60.0)


def test_matthews_perfect_and_inverted():
    y = np.array([0, 1, 1, 0, 1])
    assert task_metrics(y, y, get_task("cola"))["matthews"] == pytest.approx(100.0)
    assert task_metrics(1 - y, y, get_task("cola"))["matthews"] == pytest.approx(-100.0)


def _ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(len(x))
    r[np.argsort(x)] = np.arange(len(x))
    return r


def test_pearson_spearman_stsb():
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, size=50)
    preds = labels ** 2 + rng.normal(0, 2.0, size=50)  # monotone-ish, not linear: Pearson != Spearman
    m = task_metrics(preds, labels, get_task("stsb"))
    pearson = np.corrcoef(preds, labels)[0, 1]
    spearman = np.corrcoef(_ranks(preds), _ranks(labels))[0, 1]
    assert m["pearson"] == pytest.approx(100.0 * pearson, abs=1e-6)
    assert m["spearman"] == pytest.approx(100.0 * spearman, abs=1e-6)
    assert abs(m["pearson"] - m["spearman"]) > 0.01


def test_constant_regression_predictions_score_zero():
    m = task_metrics(np.full(5, 2.5), np.array([0.0, 1.0, 2.0, 3.0, 4.0]), get_task("stsb"))
    assert m == {"pearson": 0.0, "spearman": 0.0}


def test_fidelity_agreement():
    f = fidelity(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), get_task("sst2"))
    assert f == pytest.approx({"fidelity_agreement": 75.0})


def test_fidelity_pearson_regression():
    s = np.array([0.1, 1.2, 2.0, 3.5, 4.0])
    t = np.array([0.0, 1.0, 2.5, 3.0, 4.9])
    f = fidelity(s, t, get_task("stsb"))
    assert f["fidelity_pearson"] == pytest.approx(100.0 * np.corrcoef(s, t)[0, 1], abs=1e-6)


def test_predictions_from_logits():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    assert predictions_from_logits(logits, get_task("sst2")).tolist() == [1, 0, 1]
    assert predictions_from_logits(np.array([[1.5], [4.0]]), get_task("stsb")).tolist() == [1.5, 4.0]
