"""The explainer interface and the tensor helpers every explanation method shares.

Every method in :mod:`egkd.explain` answers one question: how much did each input *unit* contribute
to the model's output for a target class? The answer is a ``[B, L]`` map over token positions that is
exactly zero at special tokens and padding (``word_ids < 0``), so maps from different methods,
teachers and students can be compared position by position, or word by word after :func:`to_words`
when the teacher and the student tokenize differently.

Batches follow egkd's collator convention: a dict with ``input_ids``, ``attention_mask``, optional
``token_type_ids``, ``labels``, ``idx`` and ``word_ids`` (``[B, L]`` long, the word index of each
token, ``-1`` for special tokens and padding). Word indices must be unique across both segments of
a sentence pair, because words are the units that get summed and occluded together.

Models are Hugging Face sequence classifiers whose output has ``.logits`` of shape ``[B, C]``;
``C == 1`` is regression (STS-B) and the explained output is then ``logits[:, 0]``.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from egkd.errors import EgkdError

Batch = Mapping[str, Tensor]
"""A collated batch; see the module docstring for its keys."""


class Explainer(abc.ABC):
    """One attribution method behind one call, in the spirit of Captum's ``Attribution`` classes.

    Subclasses are stateless apart from their hyper-parameters, so one instance can explain any
    model; the model is an argument of :meth:`attribute`, not of the constructor, because the same
    method is run on the teacher once (to build the cache) and on several checkpoints in evaluation.
    """

    name: str = "explainer"

    @abc.abstractmethod
    def attribute(self, model: nn.Module, batch: Batch, target: Tensor | None = None) -> Tensor:
        """Token attribution scores ``[B, L]``, exactly ``0`` wherever ``word_ids < 0``.

        ``target`` is a ``[B]`` long tensor of class indices (ignored for regression); ``None`` means
        the model's own prediction on the clean input. The model's mode (``eval`` for teachers) is
        left to the caller: explainers neither switch it nor accumulate ``.grad`` on parameters.
        """

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def unit_mask(batch: Batch) -> Tensor:
    """Bool ``[B, L]``: the positions that carry attribution (real tokens, not specials or padding).

    ``attention_mask`` is checked as well as ``word_ids`` so that a collator that forgets to set
    padding's word id to ``-1`` cannot leak padding into the maps.
    """
    mask = batch["word_ids"] >= 0
    if "attention_mask" in batch:
        mask = mask & (batch["attention_mask"] > 0)
    return mask


def embed(model: nn.Module, batch: Batch) -> Tensor:
    """Word embeddings ``[B, L, H]`` of the batch, the space all gradient methods attribute in.

    Position and token-type embeddings are added inside the model after ``inputs_embeds``; they are
    the same for an input and its baselines, so attributing w.r.t. word embeddings is the standard
    choice (it is what "gradient w.r.t. the input" means for a token model).
    """
    return model.get_input_embeddings()(batch["input_ids"])


def forward_from_embeddings(model: nn.Module, batch: Batch, inputs_embeds: Tensor) -> Tensor:
    """Logits ``[N, C]`` of the model run on ``inputs_embeds`` with the batch's masks.

    ``inputs_embeds`` may have more rows than the batch has examples (IG stacks its path points);
    the masks are then tiled to match, which is why this returns only the logits rather than the
    full output object.
    """
    n = inputs_embeds.shape[0]
    kwargs: dict[str, Tensor] = {"inputs_embeds": inputs_embeds}
    for key in ("attention_mask", "token_type_ids"):
        if key in batch and batch[key] is not None and key in accepted_inputs(model):
            value = batch[key]
            if value.shape[0] != n:
                value = value.repeat(n // value.shape[0], 1)
            kwargs[key] = value
    return model(**kwargs).logits


def select_target(logits: Tensor, target: Tensor | None) -> Tensor:
    """The explained scalar per example ``[N]``: the target logit, or column 0 for regression."""
    if logits.shape[-1] == 1:
        return logits[:, 0]
    if target is None:
        raise EgkdError("a target class is needed to explain a classifier with more than one output")
    return logits.gather(1, target.reshape(-1, 1).to(logits.device).long()).squeeze(1)


def resolve_target(kind: str, logits_teacher: Tensor, labels: Tensor | None = None) -> Tensor:
    """Target classes ``[B]`` for explanations: the teacher's prediction (``'pred'``) or ``'gold'``.

    Explaining the teacher's prediction is the default because the student should learn *why the
    teacher decided*, which is defined even where the teacher is wrong. Regression has one output,
    so the target is always column 0.
    """
    b = logits_teacher.shape[0]
    if logits_teacher.shape[-1] == 1:
        return torch.zeros(b, dtype=torch.long, device=logits_teacher.device)
    if kind == "pred":
        return logits_teacher.argmax(-1)
    if kind == "gold":
        if labels is None:
            raise EgkdError("target 'gold' needs labels in the batch")
        gold = labels.long().to(logits_teacher.device)
        # rows without a gold label (-1: augmented copies) explain the teacher's prediction instead
        return torch.where(gold >= 0, gold, logits_teacher.argmax(-1))
    raise EgkdError(f"unknown explanation target {kind!r}; use 'pred' or 'gold'")


def to_words(token_map: Tensor, word_ids: Tensor, num_words: int | None = None) -> Tensor:
    """Sum subword scores into words: ``[B, L] -> [B, W]`` with ``W = max word id + 1``.

    Summing (not averaging) keeps the total attribution, so completeness-style properties of IG and
    the word scores of word-level occlusion survive the change of unit. Differentiable in
    ``token_map``, so student maps can be aligned on words too.
    """
    valid = word_ids >= 0
    if num_words is None:
        num_words = int(word_ids.max().item()) + 1 if bool(valid.any()) else 0
    out = token_map.new_zeros(token_map.shape[0], num_words)
    if num_words == 0:
        return out
    index = word_ids.clamp(min=0).clamp(max=num_words - 1)
    src = torch.where(valid & (word_ids < num_words), token_map, torch.zeros_like(token_map))
    return out.scatter_add(1, index, src)


def normalize(attr_map: Tensor, mask: Tensor, eps: float = 1e-12) -> Tensor:
    """Masked per-example L2 normalization; all-zero rows stay zero and keep finite gradients.

    Maps of teacher and student live on different scales (different models, different methods),
    so they are compared after normalization. The norm is clamped *before* the square root, so the
    backward of an all-zero row is 0 instead of NaN, which matters under double backprop.
    """
    masked = torch.where(mask.bool(), attr_map, torch.zeros_like(attr_map))
    sq = masked.pow(2).sum(-1, keepdim=True)
    return masked / sq.clamp_min(eps * eps).sqrt()


def gradient_wrt_embeddings(
    model: nn.Module, batch: Batch, target: Tensor | None, create_graph: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward from embeddings and the gradient of the target output w.r.t. them.

    Returns ``(logits, embeddings, gradient)``. Examples are independent in a forward pass, so the
    gradient of the *sum* of the per-example targets gives every example's own gradient in one
    backward. ``torch.autograd.grad`` (not ``.backward``) keeps the parameters' ``.grad`` untouched.
    With ``target=None`` the model's prediction from this same forward is explained.
    """
    with torch.enable_grad():
        embeds = embed(model, batch)
        if not embeds.requires_grad:  # frozen embedding table: make the lookup a leaf of its own
            embeds = embeds.detach().requires_grad_(True)
        logits = forward_from_embeddings(model, batch, embeds)
        if target is None and logits.shape[-1] > 1:
            target = logits.detach().argmax(-1)
        (grad,) = torch.autograd.grad(select_target(logits, target).sum(), embeds, create_graph=create_graph)
    return logits, embeds, grad


def predicted_target(model: nn.Module, batch: Batch) -> Tensor:
    """The model's predicted class on the clean input (one extra no-grad forward)."""
    with torch.no_grad():
        logits = model(**model_inputs(batch, model)).logits
    return resolve_target("pred", logits)


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def accepted_inputs(model: nn.Module) -> tuple[str, ...]:
    """Which of ``input_ids``/``attention_mask``/``token_type_ids`` the model's forward names.

    DistilBERT-like models take no ``token_type_ids``, and Hugging Face forwards swallow unknown keys
    into ``**kwargs``, so only explicitly named parameters count. Cached on the (unwrapped) module,
    under the same attribute name as the training loop's copy of this check.
    """
    base = getattr(model, "module", model)
    accepted = getattr(base, "_egkd_inputs", None)
    if accepted is None:
        params = inspect.signature(base.forward).parameters
        accepted = tuple(k for k in MODEL_INPUTS if k in params)
        try:
            base._egkd_inputs = accepted
        except AttributeError:  # a module that refuses new attributes: just recompute next time
            pass
    return accepted


def model_inputs(batch: Batch, model: nn.Module | None = None) -> dict[str, Tensor]:
    """The model-input keys of a batch (``labels`` would make a Hugging Face model compute a loss).

    With ``model`` given, only the keys its forward accepts (see :func:`accepted_inputs`).
    """
    keys = MODEL_INPUTS if model is None else accepted_inputs(model)
    return {k: batch[k] for k in keys if k in batch}
