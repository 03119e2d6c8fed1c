"""Occlusion (leave one unit out): how much the target probability drops without each unit."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from egkd.errors import EgkdError
from egkd.explain.base import Batch, Explainer, model_inputs, unit_mask

MODES = ("mask", "remove")
UNITS = ("token", "word")


def unit_index(batch: Batch, units: str = "token") -> tuple[Tensor, Tensor]:
    """``(index [B, L], counts [B])``: the unit each position belongs to (``-1`` for none).

    Token units are numbered by their rank among the example's unit positions; word units are the
    word ids themselves, so every subword of a word shares one unit and is occluded with it.
    """
    if units not in UNITS:
        raise EgkdError(f"unknown occlusion unit {units!r}; use one of {', '.join(UNITS)}")
    mask = unit_mask(batch)
    if units == "token":
        index = mask.long().cumsum(1) - 1
    else:
        index = batch["word_ids"].long()
    index = torch.where(mask, index, torch.full_like(index, -1))
    counts = index.max(dim=1).values + 1
    return index, counts


class Occlusion(Explainer):
    """``score(u) = p_target(x) - p_target(x without u)``, one occluded copy per unit (Li et al. 2016).

    Probabilities (softmax), not logits, are compared for classifiers, so scores are bounded and
    comparable across examples; regression uses the raw output. ``mode='mask'`` replaces the unit's
    tokens with ``mask_token_id`` (default ``model.config.mask_token_id`` when the config has one);
    ``mode='remove'`` sets their ``attention_mask`` to 0 instead of rebuilding a shorter input: it is
    simpler and batches trivially, and for BERT it differs from true deletion only in that the
    remaining tokens keep their position ids.

    With ``units='word'`` all subwords of a word are occluded together and each of its tokens
    carries ``word_score / n_tokens`` so that :func:`~egkd.explain.base.to_words` gives back the word
    score. All copies of a batch are stacked and run in chunks of ``chunk_size`` rows, without
    gradients. Cost: ``1 + n_units`` forwards per example, no backward.

    ``max_units=N`` occludes only N units per example, drawn uniformly without replacement (seeded by the
    example's ``idx``, so a resumed or rebuilt cache draws the same units); the other units get score 0 and
    NaN outputs, which the perturbation term never samples. Cost: ``1 + min(n_units, N)`` forwards. This
    makes the perturbation family affordable on sentence pairs (MRPC/RTE: 50-100 units per example).
    """

    name = "occlusion"

    def __init__(
        self,
        mode: str = "mask",
        mask_token_id: int | None = None,
        chunk_size: int = 256,
        units: str = "token",
        max_units: int = 0,
        seed: int = 0,
    ) -> None:
        if mode not in MODES:
            raise EgkdError(f"unknown occlusion mode {mode!r}; use one of {', '.join(MODES)}")
        if units not in UNITS:
            raise EgkdError(f"unknown occlusion unit {units!r}; use one of {', '.join(UNITS)}")
        if chunk_size < 1:
            raise EgkdError("chunk_size must be a positive number of rows")
        self.mode = mode
        self.mask_token_id = mask_token_id
        self.chunk_size = chunk_size
        self.units = units
        self.max_units, self.seed = max(0, int(max_units)), seed

    def _mask_id(self, model: nn.Module) -> int:
        token = self.mask_token_id
        if token is None:
            token = getattr(model.config, "mask_token_id", None)
        if token is None:
            raise EgkdError(
                "occlusion mode 'mask' needs mask_token_id (the tokenizer's [MASK] id), "
                "e.g. 'occlusion:mask_token_id=103', or use mode=remove"
            )
        return int(token)

    def occluded_outputs(self, model: nn.Module, batch: Batch, units: str | None = None) -> Tensor:
        """Model outputs on every occluded copy ``[B, U, C]``: softmax probabilities (raw if C == 1).

        ``U`` is the largest unit count in the batch; slots past an example's own count hold its
        clean output (occluding nothing changes nothing), so their occlusion score is 0. These are
        the teacher's full distributions the perturbation family distils from, so they are cached.
        """
        return self._clean_and_occluded(model, batch, units or self.units)[1]

    def attribute(self, model: nn.Module, batch: Batch, target: Tensor | None = None) -> Tensor:
        return self.attribute_with_outputs(model, batch, target)[0]

    def attribute_with_outputs(
        self, model: nn.Module, batch: Batch, target: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(scores [B, L], occluded_outputs [B, U, C])`` from one pass over the occluded copies.

        The teacher cache of the perturbation family needs both; calling :meth:`attribute` and
        :meth:`occluded_outputs` separately would run every copy twice.
        """
        index, _ = unit_index(batch, self.units)
        clean, occluded = self._clean_and_occluded(model, batch, self.units)  # [B, C], [B, U, C]
        if clean.shape[-1] == 1:
            col = torch.zeros(clean.shape[0], dtype=torch.long, device=clean.device)
        else:
            col = clean.argmax(-1) if target is None else target.long().to(clean.device)
        if occluded.shape[1] == 0:
            return torch.zeros(index.shape, dtype=clean.dtype, device=clean.device), occluded
        p_clean = clean.gather(1, col.view(-1, 1))  # [B, 1]
        p_occ = occluded.gather(2, col.view(-1, 1, 1).expand(-1, occluded.shape[1], 1)).squeeze(2)
        unit_scores = (p_clean - p_occ).nan_to_num(0.0)  # [B, U]; units left out by max_units score 0
        valid = index >= 0
        safe = index.clamp(min=0)
        per_token = unit_scores.gather(1, safe)
        if self.units == "word":
            sizes = torch.zeros_like(unit_scores).scatter_add(1, safe, valid.to(unit_scores.dtype))
            per_token = per_token / sizes.gather(1, safe).clamp_min(1)
        return torch.where(valid, per_token, torch.zeros_like(per_token)), occluded

    def _clean_and_occluded(self, model: nn.Module, batch: Batch, units: str) -> tuple[Tensor, Tensor]:
        """Clean outputs ``[B, C]`` and outputs of all occluded copies ``[B, U, C]``."""
        index, counts = unit_index(batch, units)
        u_max = int(counts.max().item()) if counts.numel() else 0
        clean = self._outputs(model, model_inputs(batch, model))
        out = clean.unsqueeze(1).repeat(1, u_max, 1)
        slots = torch.arange(u_max, device=index.device).unsqueeze(0) < counts.unsqueeze(1)
        if self.max_units and u_max > self.max_units:
            chosen = self._sampled_slots(batch, counts, u_max)
            out[slots & ~chosen] = float("nan")  # not computed: never to be read as an output
            slots = chosen
        ex, unit = slots.nonzero(as_tuple=True)  # one occluded copy per (example, unit) pair
        if ex.numel() == 0:
            return clean, out
        mask_id = self._mask_id(model) if self.mode == "mask" else None
        results = []
        for start in range(0, ex.numel(), self.chunk_size):
            e, u = ex[start : start + self.chunk_size], unit[start : start + self.chunk_size]
            hit = index[e] == u.unsqueeze(1)  # [n, L]: the tokens of unit u in the copy of example e
            inputs = {k: v[e] for k, v in model_inputs(batch, model).items()}
            if mask_id is not None:
                inputs["input_ids"] = inputs["input_ids"].masked_fill(hit, mask_id)
            else:
                inputs["attention_mask"] = inputs["attention_mask"].masked_fill(hit, 0)
            results.append(self._outputs(model, inputs))
        out[ex, unit] = torch.cat(results)
        return clean, out

    def _sampled_slots(self, batch: Batch, counts: Tensor, u_max: int) -> Tensor:
        """``[B, U]`` the units to occlude: ``max_units`` of each example's, drawn with a per-example seed."""
        ids = batch.get("idx")
        chosen = torch.zeros(counts.shape[0], u_max, dtype=torch.bool)
        g = torch.Generator()
        for i, n in enumerate(counts.tolist()):
            g.manual_seed(self.seed * 1_000_003 + (int(ids[i]) if ids is not None else i))
            chosen[i, torch.randperm(max(n, 0), generator=g)[: self.max_units]] = True
        return chosen.to(counts.device)

    @staticmethod
    def _outputs(model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
        with torch.no_grad():
            logits = model(**inputs).logits
        return logits if logits.shape[-1] == 1 else logits.softmax(-1)


def with_mask_token(explainer: Explainer, mask_token_id: int | None) -> Explainer:
    """``explainer``, or for a [MASK]-occlusion without a token id a copy that occludes with ``mask_token_id``.

    BERT configs carry no ``mask_token_id``, so occlusion needs the tokenizer's; it is filled in per model
    (a teacher and a student with their own vocabularies have different [MASK] ids) and the caller's
    explainer is left untouched.
    """
    if isinstance(explainer, Occlusion) and explainer.mode == "mask" and explainer.mask_token_id is None:
        if mask_token_id is None:
            raise EgkdError("occlusion replaces words with [MASK], but this model's tokenizer has none: "
                            "use --explainer occlusion:mode=remove")
        explainer = copy.copy(explainer)
        explainer.mask_token_id = int(mask_token_id)
    return explainer
