"""Loss terms: each one a small weighted object, so that every method is a list of terms in one loop.

The training loop computes the student's (and, when a term needs it, the teacher's) outputs once per batch
into a :class:`StepOutputs`, then sums ``term.weight * term(outputs)`` over the method's terms. A new signal
(e.g. an explanation alignment) is a new term, not a new loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class StepOutputs:
    """What the loop computed for one batch; terms read from it and never recompute it."""

    batch: dict[str, Tensor]
    student_logits: Tensor
    teacher_logits: Tensor | None = None
    student_hidden: tuple[Tensor, ...] | None = None
    teacher_hidden: tuple[Tensor, ...] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class LossTerm:
    """A weighted loss term. Subclasses say which outputs they need so the loop computes no more than that."""

    name = "term"
    needs_teacher = False  # reads the teacher's logits (cached or live)
    needs_teacher_model = False  # runs the live teacher itself (e.g. AD-KD's online integrated gradients)
    needs_hidden = False
    cache_family: str | None = None  # the teacher-cache entry the term reads (see egkd.cache)
    explanation = False  # an explanation term: its weight follows --explain-warmup and --explain-decay

    def __init__(self, weight: float = 1.0, every: int = 1) -> None:
        self.weight = float(weight)
        self.every = max(1, int(every))
        self.ramp_steps = 0  # the weight rises linearly from 0 over the first ramp_steps steps (0: no ramp)
        self.decay_steps = 0  # ... and falls linearly towards 0 over the last decay_steps steps (0: no decay)
        self.total_steps = 0  # the run's number of updates (decay only)

    def weight_at(self, step: int) -> float:
        """The weight at ``step`` (0-based).

        A warm-up lets the student learn the task before it is asked to explain like the teacher. (On the
        SST-2 BiLSTM it did not stop the explanation gradient from swamping KD; ``--explain-grad-ratio`` did:
        docs/measurements.md, section 4.) A decay does the opposite: the student aligns its maps while it is
        still far from the teacher, and its last updates go to the task alone (section 28). Where both
        overlap the smaller factor wins. The decay reaches ``weight / decay_steps`` at the last step, 0 after it.
        """
        factor = 1.0
        if self.ramp_steps > 0:
            factor = min(factor, step / self.ramp_steps)
        if self.decay_steps > 0:
            factor = min(factor, max(0.0, (self.total_steps - step) / self.decay_steps))
        return self.weight * factor

    def active(self, step: int) -> bool:
        """Terms can run on every ``every``-th step only, trading their cost against their effect; a term
        whose ramped weight is still 0 is not computed at all."""
        return step % self.every == 0 and self.weight_at(step) != 0.0

    def __call__(self, out: StepOutputs) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight})"


class GoldLoss(LossTerm):
    """Cross-entropy to the gold labels, or MSE for regression (one output)."""

    name = "gold"

    def __call__(self, out: StepOutputs) -> Tensor:
        logits, labels = out.student_logits, out.batch["labels"]
        labelled = labels >= 0  # augmented copies (label -1) have no gold label; KD teaches them
        if not labelled.any():
            return logits.sum() * 0.0  # keeps the graph (and DDP's gradient sync) intact
        logits, labels = logits[labelled], labels[labelled]
        if logits.shape[-1] == 1:
            return F.mse_loss(logits.squeeze(-1).float(), labels.float())
        return F.cross_entropy(logits.float(), labels.long())


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton et al.: T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch; MSE for regression."""
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits.float(), teacher_logits.float())
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * t * t


class KDLoss(LossTerm):
    name = "kd"
    needs_teacher = True

    def __init__(self, weight: float = 1.0, temperature: float = 2.0) -> None:
        super().__init__(weight)
        self.temperature = temperature

    def __call__(self, out: StepOutputs) -> Tensor:
        assert out.teacher_logits is not None
        return kd_loss(out.student_logits, out.teacher_logits, self.temperature)


def pkd_loss(
    student_hidden: tuple[Tensor, ...], teacher_hidden: tuple[Tensor, ...], layer_map: dict[int, int]
) -> Tensor:
    """Patient KD (Sun et al. 2019): MSE between L2-normalised [CLS] states of mapped layers.

    ``hidden[0]`` is the embedding output, so encoder layer i is ``hidden[i + 1]``. Summed over the mapped
    layers and the hidden dimension, averaged over the batch, as in the paper.
    """
    total = student_hidden[0].new_zeros(())
    for s, t in layer_map.items():
        hs = F.normalize(student_hidden[s + 1][:, 0].float(), dim=-1)
        ht = F.normalize(teacher_hidden[t + 1][:, 0].float(), dim=-1)
        total = total + (hs - ht).pow(2).sum(-1).mean()
    return total


class PKDLoss(LossTerm):
    name = "pkd"
    needs_teacher = True
    needs_hidden = True

    def __init__(self, weight: float, layer_map: dict[int, int]) -> None:
        super().__init__(weight)
        self.layer_map = layer_map

    def __call__(self, out: StepOutputs) -> Tensor:
        assert out.student_hidden is not None and out.teacher_hidden is not None
        return pkd_loss(out.student_hidden, out.teacher_hidden, self.layer_map)


def parse_layer_map(text: str) -> dict[int, int]:
    """``"0:1,1:3,2:5"`` -> {0: 1, 1: 3, 2: 5} (student layer -> teacher layer, 0-based)."""
    from egkd.errors import EgkdError

    try:
        return {int(a): int(b) for a, b in (p.split(":") for p in text.split(",") if p)}
    except ValueError:
        raise EgkdError(f"--pkd-layer-map takes s:t pairs like 0:1,1:3,2:5, got {text!r}") from None


def split_loss(terms: list[LossTerm], out: StepOutputs) -> tuple[Tensor, Tensor, dict[str, float]]:
    """``(task, explanation, parts)``: the weighted sums of the prediction terms (gold, KD, PKD) and of the
    explanation terms, kept apart so that the loop can balance their gradients, and each term's unweighted
    value (for the logs)."""
    parts = {}
    sums = [out.student_logits.new_zeros((), dtype=torch.float32) for _ in range(2)]
    step = out.extras.get("step", 0)
    for term in terms:
        if term.weight == 0.0 or not term.active(step):
            continue
        value = term(out)
        parts[term.name] = float(value.detach())
        sums[term.explanation] = sums[term.explanation] + term.weight_at(step) * value
    return sums[0], sums[1], parts


def total_loss(terms: list[LossTerm], out: StepOutputs) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the terms and each term's unweighted value (for the logs)."""
    task, explanation, parts = split_loss(terms, out)
    return task + explanation, parts
