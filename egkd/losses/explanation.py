"""Explanation terms: the student learns *why* the teacher decided, from the cached teacher explanations.

Each family has the cheapest training-time signal that still carries the teacher's reasoning
(DESIGN.md, table of families):

* :class:`GradientAlignment` – the student's gradient x input map (one step, double backprop) aligned to
  the cached teacher map; optionally on a fraction of the examples, since double backprop is the cost.
* :class:`PerturbationMatching` – a few occluded copies of each example (units sampled from a mix of the
  teacher's importance and uniform) run in the *same* batched forward as the clean inputs, each matched to
  the teacher's cached distribution on exactly that copy. No double backprop.
* :class:`SelectionConsistency` – sufficiency (the student on the short rationale-only input reproduces the
  teacher's full-input distribution) and comprehensiveness (the student on the complement matches the
  teacher on the complement, cached).
* :class:`ADKDAttribution` – the AD-KD-style anchor: the teacher's integrated gradients computed *online*
  every step, kept per embedding dimension, restricted to the teacher's top-k dimensions, every class.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from egkd.explain import alignment_loss, rationale_inputs, unit_mask
from egkd.explain.base import gradient_wrt_embeddings, model_inputs
from egkd.explain.integrated_gradients import IntegratedGradients
from egkd.explain.occlusion import unit_index
from egkd.explain.student import double_backprop_attention
from egkd.losses.terms import LossTerm, StepOutputs, kd_loss


def distribution_loss(student_logits: Tensor, teacher_out: Tensor, temperature: float) -> Tensor:
    """KD between the student's logits and a cached teacher output (probabilities, or the value if C == 1)."""
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits.float().view(-1), teacher_out.float().view(-1))
    # cached probabilities -> logits up to a constant; softmax(log p / T) is the tempered teacher
    return kd_loss(student_logits, teacher_out.clamp_min(1e-8).log(), temperature)


def computed(occluded: Tensor, width: int) -> Tensor:
    """``[B, width]``: units whose occluded teacher output is in the cache (a ``max_units`` cache holds NaN for
    the units it did not occlude; units past the cache's width count as computed, they are masked elsewhere)."""
    have = ~occluded[:, :width, 0].isnan()
    if have.shape[1] < width:
        have = torch.nn.functional.pad(have, (0, width - have.shape[1]), value=True)
    return have


class GradientAlignment(LossTerm):
    """Align the student's gradient x input map (or few-step IG map) to the cached teacher map (normalized MSE
    by default)."""

    name = "gradient"
    cache_family = "gradient"
    explanation = True
    student_map = True

    def __init__(self, weight: float = 1.0, kind: str = "mse", fraction: float = 1.0, steps: int = 1,
                 baseline: str = "zero") -> None:
        super().__init__(weight)
        self.kind, self.fraction = kind, fraction
        # the student's map: IG over ``steps`` points from ``baseline``; the defaults give gradient x input
        self.steps, self.baseline = steps, baseline

    def align(self, smap: Tensor, teacher_map: Tensor, mask: Tensor) -> Tensor:
        return alignment_loss(smap, teacher_map, mask, kind=self.kind)

    def rows(self, batch_size: int) -> int:
        """How many examples of the batch get the (double-backprop) map: the first ceil(fraction * B)."""
        return max(1, math.ceil(self.fraction * batch_size))

    def __call__(self, out: StepOutputs) -> Tensor:
        smap = out.extras["student_map"]
        n = smap.shape[0]
        teacher_map = out.extras["cached"]["gradient"]["map"][:n]
        mask = unit_mask({k: v[:n] for k, v in out.batch.items() if k in ("word_ids", "attention_mask")})
        if smap.dim() == 3:  # multi-view: every class's map aligned, averaged over classes
            return torch.stack([self.align(smap[..., c], teacher_map[..., c], mask)
                                for c in range(smap.shape[-1])]).mean()
        return self.align(smap, teacher_map, mask)


class PerturbationMatching(LossTerm):
    """KD on occluded copies: the student sees x without unit u and matches the teacher's cached p(.|x\\u)."""

    name = "perturbation"
    cache_family = "perturbation"
    explanation = True

    def __init__(self, weight: float = 1.0, k: int = 1, mix: float = 0.5, temperature: float = 2.0,
                 mask_token_id: int = 103, seed: int = 0, fraction: float = 1.0) -> None:
        super().__init__(weight)
        self.k, self.mix, self.temperature, self.mask_token_id = k, mix, temperature, mask_token_id
        self.fraction = fraction  # copies for the first ceil(fraction * B) examples: each copy costs a fwd+bwd
        self.generator = torch.Generator().manual_seed(seed)

    def sample_units(self, batch: dict[str, Tensor], teacher_map: Tensor, occluded: Tensor | None = None) -> Tensor:
        """``[B, k]`` unit numbers: from the teacher's |importance| with probability ``mix``, else uniform;
        only units whose occluded output the cache holds (see ``computed``)."""
        index, counts = unit_index(batch, "token")
        b = counts.shape[0]
        u_max = max(1, int(counts.max()))
        valid = torch.arange(u_max, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)
        if occluded is not None:
            valid = valid & computed(occluded, u_max)
        # teacher's importance per unit (token units: the map at the unit's position)
        importance = torch.zeros(b, u_max, device=teacher_map.device)
        pos = index >= 0
        importance[pos.nonzero(as_tuple=True)[0], index[pos]] = teacher_map[pos].abs().float()
        return self.draw(importance, valid, counts)

    def draw(self, importance: Tensor, valid: Tensor, counts: Tensor) -> Tensor:
        """``[B, k]`` units from ``mix * |importance| + (1 - mix) * uniform`` over the valid units."""
        uniform = valid.float().cpu()
        p_imp = importance.abs().float().cpu() * uniform
        p_imp = torch.where(p_imp.sum(1, keepdim=True) > 0, p_imp, uniform)
        probs = self.mix * p_imp / p_imp.sum(1, keepdim=True).clamp_min(1e-12)
        probs = probs + (1 - self.mix) * uniform / uniform.sum(1, keepdim=True).clamp_min(1)
        probs = torch.where(counts.cpu().unsqueeze(1) > 0, probs, torch.ones_like(probs))
        return torch.multinomial(probs, self.k, replacement=True, generator=self.generator).to(counts.device)

    def augment(self, batch: dict[str, Tensor], cached: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
        """The occluded copies to append to the batch's forward (rows B..B+kB), and which unit each hides."""
        n = max(1, math.ceil(self.fraction * batch["input_ids"].shape[0]))
        batch = {k: v[:n] for k, v in batch.items()}
        teacher_map = cached["perturbation"]["map"][:n]
        units = self.sample_units(batch, teacher_map, cached["perturbation"]["occluded"][:n])  # [n, k]
        index, _ = unit_index(batch, "token")
        copies = {k: v.repeat_interleave(self.k, 0) for k, v in model_inputs(batch).items()}
        hidden = units.reshape(-1)
        hit = index.repeat_interleave(self.k, 0) == hidden.unsqueeze(1)
        copies["input_ids"] = copies["input_ids"].masked_fill(hit, self.mask_token_id)
        self._last_units = units
        return copies

    def __call__(self, out: StepOutputs) -> Tensor:
        logits = out.extras["aug_logits"][self.name]
        occluded = out.extras["cached"]["perturbation"]["occluded"]  # [B, L, C]
        units = self._last_units
        b = units.shape[0]
        rows = torch.arange(b, device=units.device).repeat_interleave(self.k)
        teacher = occluded[rows, units.reshape(-1)]
        return distribution_loss(logits, teacher, self.temperature)


class SelectionConsistency(LossTerm):
    """Sufficiency and comprehensiveness of the teacher's rationale, distilled into the student."""

    name = "selection"
    cache_family = "selection"
    explanation = True

    def __init__(self, weight: float = 1.0, comprehensiveness: float = 1.0, temperature: float = 2.0,
                 pad_token_id: int = 0, fraction: float = 1.0) -> None:
        super().__init__(weight)
        self.comp_weight, self.temperature, self.pad_token_id = comprehensiveness, temperature, pad_token_id
        self.fraction = fraction  # applied to the first ceil(fraction * B) examples (two extra forwards each)

    def __call__(self, out: StepOutputs) -> Tensor:
        n = max(1, math.ceil(self.fraction * out.batch["input_ids"].shape[0]))
        batch = {k: v[:n] for k, v in out.batch.items()}
        cached = {k: v[:n] for k, v in out.extras["cached"]["selection"].items()}
        model = out.extras["model"]
        rationale = cached["rationale"].bool() & unit_mask(batch)
        short = rationale_inputs(batch, rationale, keep=True, pad_token_id=self.pad_token_id)
        suff = model(**model_inputs(short, model)).logits
        teacher_full = cached["logits"]
        loss = kd_loss(suff, teacher_full, self.temperature) if suff.shape[-1] > 1 else F.mse_loss(suff, teacher_full)
        if self.comp_weight:
            comp_in = rationale_inputs(batch, rationale, keep=False, pad_token_id=self.pad_token_id)
            comp = model(**model_inputs(comp_in, model)).logits
            teacher_comp = cached["on_complement"]
            if comp.shape[-1] > 1:
                loss = loss + self.comp_weight * kd_loss(comp, teacher_comp, self.temperature)
            else:
                loss = loss + self.comp_weight * F.mse_loss(comp, teacher_comp)
        return loss


class ADKDAttribution(LossTerm):
    """AD-KD-style attribution distillation (Wu et al. 2023), the anchor egkd must beat.

    Every step the *live* teacher's integrated gradients (``steps`` points) are computed per token and
    embedding dimension; the student's gradient x input (double backprop) is compared on the teacher's
    top-k dimensions (by mean |attribution|), after L2 normalization, for every class (multi-view) of a
    multi-class task and for the single output of regression.
    """

    name = "adkd"
    explanation = True
    needs_teacher = True
    needs_teacher_model = True

    def __init__(self, weight: float = 1.0, steps: int = 8, top_k: float = 0.5) -> None:
        super().__init__(weight)
        self.ig = IntegratedGradients(steps=steps, baseline="zero")
        self.top_k = top_k

    def _teacher_attr(self, teacher, batch, target) -> Tensor:
        """Per-dimension IG of the teacher ``[B, L, H]`` (not summed over H, unlike the cached maps)."""
        from egkd.explain.base import embed, forward_from_embeddings, select_target

        x = embed(teacher, batch).detach()
        base = torch.zeros_like(x)
        total = torch.zeros_like(x)
        for alpha in [(i + 0.5) / self.ig.steps for i in range(self.ig.steps)]:
            point = (base + alpha * (x - base)).requires_grad_(True)
            with torch.enable_grad():
                value = select_target(forward_from_embeddings(teacher, batch, point), target).sum()
                (g,) = torch.autograd.grad(value, point)
            total += g
        return (x - base) * total / self.ig.steps

    def __call__(self, out: StepOutputs) -> Tensor:
        teacher, model = out.extras["teacher_model"], out.extras["model"]
        batch = out.batch
        mask = unit_mask(batch).unsqueeze(-1)
        n_out = out.student_logits.shape[-1]
        views = [None] if n_out == 1 else list(range(n_out))
        loss = out.student_logits.new_zeros(())
        for c in views:
            target = None if c is None else torch.full_like(batch["input_ids"][:, 0], c)
            t_attr = self._teacher_attr(teacher, batch, target) * mask
            with double_backprop_attention():
                _, embeds, grad = gradient_wrt_embeddings(model, batch, target, create_graph=True)
            s_attr = grad * embeds * mask
            k = max(1, int(self.top_k * t_attr.shape[-1]))
            dims = t_attr.abs().mean(1).topk(k, dim=-1).indices  # [B, k]
            idx = dims.unsqueeze(1).expand(-1, t_attr.shape[1], -1)
            t = F.normalize(t_attr.gather(2, idx).flatten(1), dim=-1)
            s = F.normalize(s_attr.gather(2, idx).flatten(1), dim=-1)
            loss = loss + (s - t).pow(2).sum(-1).mean()
        return loss / len(views)
