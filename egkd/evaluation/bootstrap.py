"""Paired bootstrap confidence intervals of a metric difference, pooled over seeds.

GLUE dev sets are small (RTE: 277 examples, one example = 0.36 accuracy points) and a student's seed moves it
by about a point, so a difference between two methods means something only when it survives resampling the
examples. The bootstrap here resamples *examples* (the same resample for both methods and for every seed, which
is what makes it paired) and averages the metric over the seeds both methods ran, so seed noise and example
noise both widen the interval.

The metrics are computed vectorised over all resamples at once (thousands of sklearn calls would take minutes);
tests check them against scikit-learn and scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r along the last axis (0 where either side is constant, as :func:`task_metrics` does)."""
    x = x - x.mean(-1, keepdims=True)
    y = y - y.mean(-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y).sum(-1) / den
    return np.where(den > 0, r, 0.0)


def batched_metric(name: str, preds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``name`` (a GLUE metric, in percent) of ``preds[..., N]`` against ``labels[..., N]`` along the last axis."""
    preds, labels = np.broadcast_arrays(preds, labels)
    if name == "accuracy":
        return 100.0 * (preds == labels).mean(-1)
    if name in ("pearson", "spearman"):
        if name == "spearman":
            preds, labels = rankdata(preds, axis=-1), rankdata(labels, axis=-1)
        return 100.0 * _pearson(preds.astype(float), labels.astype(float))
    # binary metrics from the confusion counts (label 1 is the positive class, as in task_metrics)
    p, y = preds == 1, labels == 1
    tp, fp = (p & y).sum(-1).astype(float), (p & ~y).sum(-1).astype(float)
    fn, tn = (~p & y).sum(-1).astype(float), (~p & ~y).sum(-1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "f1":
            den = 2 * tp + fp + fn
            return 100.0 * np.where(den > 0, 2 * tp / den, 0.0)
        if name == "matthews":
            den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            return 100.0 * np.where(den > 0, (tp * tn - fp * fn) / den, 0.0)
    raise ValueError(f"no batched form of metric {name!r}")


@dataclass(frozen=True)
class Difference:
    """Metric of A minus metric of B (mean over shared seeds) with its bootstrap interval."""

    delta: float
    low: float
    high: float
    n_seeds: int
    n_examples: int

    @property
    def significant(self) -> bool:
        """The interval excludes zero: the only case the results page calls a difference real."""
        return self.low > 0 or self.high < 0


def paired_bootstrap(metric: str, labels: np.ndarray, preds_a: np.ndarray, preds_b: np.ndarray,
                     n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Difference:
    """Bootstrap the difference ``metric(A) - metric(B)``.

    ``preds_a`` and ``preds_b`` are ``[seeds, examples]`` (row s of both from the same seed), ``labels`` is
    ``[examples]``. Each resample draws the examples with replacement once and applies the draw to every seed of
    both methods; the statistic is the seed-mean of A minus the seed-mean of B.
    """
    preds_a, preds_b = np.atleast_2d(preds_a), np.atleast_2d(preds_b)
    if preds_a.shape != preds_b.shape or preds_a.shape[1] != len(labels):
        raise ValueError(f"shapes differ: A {preds_a.shape}, B {preds_b.shape}, labels {len(labels)}")
    n = len(labels)
    point = float(batched_metric(metric, preds_a, labels).mean() - batched_metric(metric, preds_b, labels).mean())
    rng = np.random.default_rng(seed)
    deltas = []
    for chunk in np.array_split(np.arange(n_resamples), max(1, n_resamples // 250)):  # bounded memory
        idx = rng.integers(0, n, size=(len(chunk), n))  # [B, N]
        y = labels[idx]
        a = batched_metric(metric, preds_a[:, idx], y[None]).mean(0)  # [S, B, N] -> [B]
        b = batched_metric(metric, preds_b[:, idx], y[None]).mean(0)
        deltas.append(a - b)
    d = np.concatenate(deltas)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(d, [tail, 100 - tail])
    return Difference(point, float(low), float(high), preds_a.shape[0], n)
