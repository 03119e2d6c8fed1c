"""Rationales: the few units that keep the teacher's decision, and the short inputs built from them.

The selection family distils *sufficiency* (the student on the rationale alone reproduces the
teacher's full-input distribution) and *comprehensiveness* (the student on the complement matches
the teacher on the complement). A rationale comes from an :class:`AmortizedSelector` trained once on
the frozen teacher, or, as a fallback, from the top-r units of any other explanation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egkd.explain.base import Batch, embed, forward_from_embeddings, unit_mask


def _budget_counts(mask: Tensor, budget: float) -> Tensor:
    """Units to keep per example: ``ceil(budget * n)``, at least 1, at most ``n``.

    The small epsilon guards against float error turning an exact product into the next integer
    (``0.1 * 30 = 3.0000000000000004`` would otherwise keep 4 units).
    """
    n = mask.sum(1)
    k = torch.ceil(budget * n.double() - 1e-9).long().clamp(min=1)
    return torch.minimum(k, n)


def top_r_rationale(scores: Tensor, mask: Tensor, budget: float = 0.2) -> Tensor:
    """Bool ``[B, L]``: the top ``ceil(budget * n_units)`` units (at least one) of each example.

    Ties are broken by position (stable sort), so the result is deterministic. Works on token maps
    or on word maps (``[B, W]`` with a word mask) alike.
    """
    masked = scores.masked_fill(~mask, float("-inf"))
    order = masked.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=order.device).expand_as(order)
    )
    return (ranks < _budget_counts(mask, budget).unsqueeze(1)) & mask


def rationale_inputs(batch: Batch, rationale: Tensor, keep: bool = True, pad_token_id: int = 0) -> dict:
    """The rationale-only input (``keep=True``) or its complement (``keep=False``), compacted.

    Special tokens ([CLS], every [SEP]) are always kept; the kept tokens are moved to the front and
    the batch is cut to the longest kept example, so a 20 % rationale gives a short, cheap input.
    ``word_ids`` are renumbered densely (whole words stay whole), ``attention_mask`` and
    ``token_type_ids`` recomputed, and ``orig_positions`` ``[B, L']`` (``-1`` on padding) maps each
    kept token back to its position in the full input. Keys that are not per-token (``labels``,
    ``idx``) are copied. Removing tokens also shifts the position ids of those that remain, which
    is what "the model reads only the rationale" means.
    """
    units = unit_mask(batch)
    word_ids = batch["word_ids"]
    special = (word_ids < 0) & (batch["attention_mask"] > 0)
    chosen = units & rationale if keep else units & ~rationale
    kept = special | chosen
    lengths = kept.sum(1)
    new_len = int(lengths.max().item()) if lengths.numel() else 0
    pos = (~kept).long().argsort(dim=1, stable=True)[:, :new_len]  # kept positions first, in order
    valid = torch.arange(new_len, device=pos.device).unsqueeze(0) < lengths.unsqueeze(1)
    out: dict = {k: v for k, v in batch.items() if not (torch.is_tensor(v) and v.dim() == 2)}
    out["input_ids"] = batch["input_ids"].gather(1, pos).masked_fill(~valid, pad_token_id)
    out["attention_mask"] = valid.to(batch["attention_mask"].dtype)
    if "token_type_ids" in batch:
        out["token_type_ids"] = batch["token_type_ids"].gather(1, pos).masked_fill(~valid, 0)
    old = word_ids.gather(1, pos).masked_fill(~valid, -1)
    n_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    present = torch.zeros(old.shape[0], max(n_words, 1), dtype=torch.long, device=old.device)
    present.scatter_add_(1, old.clamp(min=0), (old >= 0).long())  # add: specials also hit column 0
    dense = (present > 0).long().cumsum(1) - 1
    out["word_ids"] = torch.where(old >= 0, dense.gather(1, old.clamp(min=0)), old)
    out["orig_positions"] = torch.where(valid, pos, torch.full_like(pos, -1))
    return out


class AmortizedSelector(nn.Module):
    """A tiny scorer of units over the frozen teacher's word embeddings, the context and position.

    Amortized (L2X, Chen et al. 2018): trained once, it selects a rationale with one cheap forward
    instead of a search per example. Features per token: the teacher's word embedding, the mean
    embedding of the example (so the choice can depend on context), and a learned position
    embedding; a two-layer MLP maps them to a score. The teacher's embedding table is held as a
    non-persistent buffer that shares the teacher's storage: no copy, and not saved.
    """

    def __init__(self, teacher: nn.Module, budget: float = 0.2, hidden: int = 32, max_positions: int = 512):
        super().__init__()
        weight = teacher.get_input_embeddings().weight.detach()
        self.register_buffer("word_embeddings", weight, persistent=False)
        self.budget = budget
        self.position = nn.Embedding(max_positions, 8)
        self.mlp = nn.Sequential(nn.Linear(2 * weight.shape[1] + 8, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, batch: Batch) -> Tensor:
        """Selection logits ``[B, L]`` (meaningful at unit positions only)."""
        dtype = self.mlp[0].weight.dtype
        e = F.embedding(batch["input_ids"], self.word_embeddings).to(dtype)
        m = unit_mask(batch).unsqueeze(-1).to(dtype)
        ctx = ((e * m).sum(1) / m.sum(1).clamp_min(1)).unsqueeze(1).expand_as(e)
        length = e.shape[1]
        steps = torch.arange(length, device=e.device).clamp(max=self.position.num_embeddings - 1)
        pos = self.position(steps).unsqueeze(0).expand(e.shape[0], -1, -1)
        return self.mlp(torch.cat([e, ctx, pos], -1)).squeeze(-1)

    @torch.no_grad()
    def select(self, batch: Batch) -> Tensor:
        """Bool rationale ``[B, L]`` with the trained budget."""
        return top_r_rationale(self(batch), unit_mask(batch), self.budget)


def _relaxed_top_k(logits: Tensor, mask: Tensor, k: Tensor, tau: float, gen: torch.Generator) -> Tensor:
    """L2X's Gumbel relaxation of a k-subset: elementwise max of k concrete samples over units."""
    masked = logits.masked_fill(~mask, float("-inf"))
    soft = torch.zeros_like(logits)
    for j in range(int(k.max().item())):
        u = torch.rand(logits.shape, generator=gen, dtype=logits.dtype).to(logits.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-10)))
        sample = ((masked + gumbel) / tau).softmax(-1)
        soft = torch.where((j < k).unsqueeze(1), torch.maximum(soft, sample), soft)
    return soft


def train_selector(
    teacher: nn.Module,
    batches: Iterable[Batch],
    budget: float = 0.2,
    steps: int = 200,
    lr: float = 1e-2,
    tau: float = 0.5,
    replace_token_id: int | None = None,
    seed: int = 0,
) -> AmortizedSelector:
    """Train a selector so the frozen teacher keeps its full-input output on the selected units.

    Loss: KL(teacher(x) || teacher(x restricted to the selection)), or MSE for regression. The
    forward uses the hard top-r mask and the backward the Gumbel relaxation (straight-through), so
    the teacher sees exactly the budget during training. Unselected units are replaced by the
    ``replace_token_id`` embedding (default the config's pad id) because a soft removal needs a
    differentiable stand-in; at use time :func:`rationale_inputs` removes them instead. Only the
    selector's parameters get gradients; the teacher's ``.grad`` is left untouched.
    """
    data = []
    for batch in batches:  # the teacher's full-input outputs are fixed: compute them once
        with torch.no_grad():
            data.append((batch, forward_from_embeddings(teacher, batch, embed(teacher, batch))))
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        selector = AmortizedSelector(teacher, budget=budget)
    params = list(selector.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    token = replace_token_id if replace_token_id is not None else (teacher.config.pad_token_id or 0)
    for step in range(steps):
        batch, full = data[step % len(data)]
        mask = unit_mask(batch)
        logits = selector(batch)
        soft = _relaxed_top_k(logits, mask, _budget_counts(mask, budget), tau, gen)
        hard = top_r_rationale(logits.detach(), mask, budget).to(soft.dtype)
        keep = torch.where(mask, hard + soft - soft.detach(), torch.ones_like(soft))
        with torch.no_grad():
            x = embed(teacher, batch)
            fill = embed(teacher, {"input_ids": torch.full_like(batch["input_ids"], token)})
        keep = keep.to(x.dtype).unsqueeze(-1)
        out = forward_from_embeddings(teacher, batch, fill + keep * (x - fill))
        if full.shape[-1] == 1:
            loss = F.mse_loss(out, full)
        else:
            loss = F.kl_div(out.log_softmax(-1), full.log_softmax(-1), log_target=True, reduction="batchmean")
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
    return selector.eval()
