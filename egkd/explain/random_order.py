"""A random order of the tokens: the baseline that ERASER scores of a real map are read against.

Masking tokens moves a model's output whatever the order they are masked in, and some students react to
``[MASK]`` far more than others (a student trained on occluded inputs learns to). Comprehensiveness and
sufficiency of a map therefore mean something only beside the same erasure in a random order; see
``docs/measurements.md`` section 16. Not one of the ``--explainer`` choices: it explains nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from egkd.explain.base import Batch, Explainer, unit_mask


class RandomOrder(Explainer):
    """Uniform random scores in ``[0, 1)`` on the real tokens, ``0`` elsewhere.

    Each example's scores come from a generator seeded with ``seed`` and the example's own token ids, so the
    order is the same whichever batch the example is in and whichever model is asked (the ``model`` and
    ``target`` arguments are not used), and stateless, as the interface asks.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def attribute(self, model: nn.Module, batch: Batch, target: Tensor | None = None) -> Tensor:
        mask = unit_mask(batch).cpu()
        ids = batch["input_ids"].cpu()
        scores = torch.zeros(mask.shape, dtype=torch.float32)
        for i in range(mask.shape[0]):
            tokens = ids[i][mask[i]].tolist()
            generator = torch.Generator().manual_seed(hash((self.seed, *tokens)) & 0x7FFFFFFFFFFFFFFF)
            scores[i, mask[i]] = torch.rand(len(tokens), generator=generator)
        return scores.to(batch["input_ids"].device)
