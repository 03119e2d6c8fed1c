"""Shared fixtures: a tiny BERT classifier in double precision, a linear toy model and batches."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import AutoModelForSequenceClassification, BertConfig  # noqa: E402

PAD, CLS, SEP, MASK = 0, 2, 3, 4


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every explain test single-threaded (the selector test ran ~5x slower with contending threads)."""


def tiny_config(num_labels: int = 2) -> BertConfig:
    """The brief's toy shape; a larger init range makes the model clearly non-linear in its inputs."""
    return BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.3,
        pad_token_id=PAD,
    )


def make_model(num_labels: int = 2, attn: str = "eager", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(tiny_config(num_labels), attn_implementation=attn)
    return model.double().eval()


@pytest.fixture
def model() -> nn.Module:
    return make_model()


@pytest.fixture
def regression_model() -> nn.Module:
    return make_model(num_labels=1)


def make_batch(examples: list, labels: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Collate like egkd: each example is a list of words (lists of token ids), or a pair of them.

    ``[CLS] words [SEP]`` or ``[CLS] a [SEP] b [SEP]`` with token types 0/1; word ids are unique
    across the pair; specials and padding get word id -1.
    """
    rows = []
    for ex in examples:
        segments = ex if isinstance(ex, tuple) else (ex,)
        ids, types, words = [CLS], [0], [-1]
        w = 0
        for seg_no, seg in enumerate(segments):
            for word in seg:
                ids += word
                types += [seg_no] * len(word)
                words += [w] * len(word)
                w += 1
            ids.append(SEP)
            types.append(seg_no)
            words.append(-1)
        rows.append((ids, types, words))
    length = max(len(r[0]) for r in rows)
    batch = {
        "input_ids": torch.tensor([r[0] + [PAD] * (length - len(r[0])) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r[0]) + [0] * (length - len(r[0])) for r in rows]),
        "token_type_ids": torch.tensor([r[1] + [0] * (length - len(r[1])) for r in rows]),
        "word_ids": torch.tensor([r[2] + [-1] * (length - len(r[2])) for r in rows]),
        "idx": torch.arange(len(rows)),
    }
    batch["labels"] = torch.tensor(labels if labels is not None else [i % 2 for i in range(len(rows))])
    return batch


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Three examples: subword words, padding of different lengths and a sentence pair."""
    return make_batch(
        [
            [[5, 6], [7], [8, 9, 10], [11]],
            [[12], [13, 14]],
            ([[15], [16, 17]], [[18], [19]]),
        ]
    )


class LinearToy(nn.Module):
    """``logits = sum_t mask_t * W e_t + b``: a classifier whose input gradient is known exactly.

    Mimics the Hugging Face interface the explainers use (``get_input_embeddings``, ``config``,
    ``inputs_embeds``, ``.logits``). The [PAD] row of the embedding is zero.
    """

    def __init__(self, vocab: int = 50, hidden: int = 8, classes: int = 2, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embeddings = nn.Embedding(vocab, hidden, padding_idx=PAD)
        self.embeddings.weight.data = torch.randn(vocab, hidden, generator=gen)
        self.embeddings.weight.data[PAD] = 0
        self.head = nn.Linear(hidden, classes)
        self.head.weight.data = torch.randn(classes, hidden, generator=gen)
        self.head.bias.data.zero_()
        self.config = SimpleNamespace(pad_token_id=PAD, mask_token_id=MASK)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, token_type_ids=None):
        e = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        m = torch.ones(e.shape[:2], dtype=e.dtype) if attention_mask is None else attention_mask.to(e.dtype)
        return SimpleNamespace(logits=self.head((e * m.unsqueeze(-1)).sum(1)))


def finite_difference_input_gradient(model: nn.Module, batch: dict, target: torch.Tensor, eps: float = 1e-6):
    """Central differences of the target output w.r.t. every word-embedding coordinate ``[B, L, H]``.

    Independent of autograd: each coordinate is nudged in its own copy of the example and all copies
    run in one batched forward.
    """
    from egkd.explain.base import embed, forward_from_embeddings, select_target

    with torch.no_grad():
        x = embed(model, batch)
        b, length, hidden = x.shape
        grad = torch.zeros_like(x)
        eye = torch.eye(length * hidden, dtype=x.dtype).view(-1, length, hidden) * eps
        for i in range(b):
            sub = {k: batch[k][i : i + 1] for k in ("attention_mask", "token_type_ids")}
            plus = forward_from_embeddings(model, sub, x[i] + eye)
            minus = forward_from_embeddings(model, sub, x[i] - eye)
            t = target[i : i + 1].repeat(eye.shape[0])
            diff = (select_target(plus, t) - select_target(minus, t)) / (2 * eps)
            grad[i] = diff.view(length, hidden)
    return grad
