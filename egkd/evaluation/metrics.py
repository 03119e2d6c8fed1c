"""GLUE metrics, computed with scikit-learn and scipy (no metric scripts downloaded from a hub)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from egkd.data.tasks import TaskSpec


def predictions_from_logits(logits: np.ndarray, task: TaskSpec) -> np.ndarray:
    """Class ids (argmax) for classification, the single output for regression."""
    return logits[:, 0] if task.is_regression else logits.argmax(-1)


def task_metrics(preds: np.ndarray, labels: np.ndarray, task: TaskSpec) -> dict[str, float]:
    """Every metric of ``task`` on ``preds`` against ``labels``, in percent (GLUE's convention)."""
    out: dict[str, float] = {}
    for name in task.metrics:
        if name == "accuracy":
            out[name] = accuracy_score(labels, preds)
        elif name == "f1":
            out[name] = f1_score(labels, preds, pos_label=1, zero_division=0)
        elif name == "matthews":
            out[name] = matthews_corrcoef(labels, preds)
        elif name == "pearson":
            out[name] = pearsonr(preds, labels)[0] if np.std(preds) > 0 else 0.0
        elif name == "spearman":
            out[name] = spearmanr(preds, labels)[0] if np.std(preds) > 0 else 0.0
        else:
            raise ValueError(f"unknown metric {name}")
    return {k: 100.0 * float(v) for k, v in out.items()}


def fidelity(student_preds: np.ndarray, teacher_preds: np.ndarray, task: TaskSpec) -> dict[str, float]:
    """How closely the student behaves like the teacher: agreement (classes) or Pearson (regression)."""
    if task.is_regression:
        r = pearsonr(student_preds, teacher_preds)[0] if np.std(student_preds) > 0 else 0.0
        return {"fidelity_pearson": 100.0 * float(r)}
    return {"fidelity_agreement": 100.0 * float(np.mean(student_preds == teacher_preds))}
