"""The vectorised GLUE metrics and the paired bootstrap, against scikit-learn/scipy and a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from egkd.data.tasks import get_task
from egkd.evaluation.bootstrap import batched_metric, paired_bootstrap
from egkd.evaluation.metrics import task_metrics


@pytest.mark.parametrize("task", ["cola", "mrpc", "stsb", "rte"])
def test_batched_metrics_equal_sklearn_and_scipy(task):
    spec = get_task(task)
    rng = np.random.default_rng(0)
    n = 60
    if spec.is_regression:
        labels, preds = rng.uniform(0, 5, n), rng.uniform(0, 5, (7, n))
        preds[3] = np.round(preds[3])  # ties for spearman
    else:
        labels, preds = rng.integers(0, 2, n), rng.integers(0, 2, (7, n))
        preds[2] = 1  # constant predictions: MCC and F1 edge cases
        preds[4] = labels
    for name in spec.metrics:
        got = batched_metric(name, preds, labels)
        want = [task_metrics(p, labels, spec)[name] for p in preds]
        np.testing.assert_allclose(got, want, atol=1e-9, err_msg=name)


def test_bootstrap_matches_a_plain_loop_over_resamples():
    spec = get_task("mrpc")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 80)
    a = np.where(rng.random((2, 80)) < 0.8, labels, 1 - labels)  # two seeds, ~80 % right
    b = np.where(rng.random((2, 80)) < 0.7, labels, 1 - labels)
    d = paired_bootstrap("f1", labels, a, b, n_resamples=200, seed=3)
    # the same resamples drawn by hand, each metric from scikit-learn, seed-averaged per method
    idx = np.random.default_rng(3).integers(0, 80, size=(200, 80))
    deltas = [np.mean([task_metrics(a[s, i], labels[i], spec)["f1"] for s in range(2)])
              - np.mean([task_metrics(b[s, i], labels[i], spec)["f1"] for s in range(2)]) for i in idx]
    low, high = np.percentile(deltas, [2.5, 97.5])
    assert d.low == pytest.approx(low) and d.high == pytest.approx(high)
    point = np.mean([task_metrics(a[s], labels, spec)["f1"] - task_metrics(b[s], labels, spec)["f1"] for s in range(2)])
    assert d.delta == pytest.approx(point)
    assert d.n_seeds == 2 and d.n_examples == 80


def test_bootstrap_significance():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    same = paired_bootstrap("accuracy", labels, labels[None], labels[None])
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0) and not same.significant
    better = np.where(rng.random(400) < 0.95, labels, 1 - labels)
    worse = np.where(rng.random(400) < 0.60, labels, 1 - labels)
    up = paired_bootstrap("accuracy", labels, better[None], worse[None])
    assert up.significant and up.low > 0 and up.low < up.delta < up.high
    # one flipped example out of 400 is noise, not an improvement
    nudged = labels.copy()
    nudged[0] = 1 - nudged[0]
    assert not paired_bootstrap("accuracy", labels, labels[None], nudged[None]).significant
    with pytest.raises(ValueError, match="shapes differ"):
        paired_bootstrap("accuracy", labels, labels[None], labels[None, :10])
