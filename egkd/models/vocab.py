"""A student's own tokenizer, trained on the task's training text with the ``tokenizers`` library.

Kinds: ``word`` (one id per word, the classic BiLSTM/CNN vocabulary), ``wordpiece-8k`` and ``bpe-8k`` (the
number is the vocabulary size in thousands, or a plain number). Whatever the kind, words are split exactly as
the teacher's tokenizer splits them: the teacher's normalizer and pre-tokenizer are copied into the new
tokenizer (BERT's: lower-casing, whitespace and punctuation), so ``word_ids()`` of teacher and student number
the same words in the same order and explanations can be compared word by word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

import torch
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from egkd.errors import EgkdError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
KINDS = ("word", "wordpiece", "bpe")


def parse_kind(text: str) -> tuple[str, int]:
    """``'bpe-8k'`` -> ("bpe", 8000); ``'word'`` -> ("word", 30000); ``'wordpiece-5000'`` -> ("wordpiece", 5000)."""
    m = re.fullmatch(r"(word|wordpiece|bpe)(?:-(\d+)(k?))?", text.strip().lower())
    if not m:
        raise EgkdError(f"unknown tokenizer kind {text!r}: use word, wordpiece-8k, bpe-8k (or a path)")
    size = int(m.group(2)) * (1000 if m.group(3) else 1) if m.group(2) else (30000 if m.group(1) == "word" else 8000)
    return m.group(1), size


def is_trainable_kind(text: str) -> bool:
    try:
        parse_kind(text)
    except EgkdError:
        return False
    return True


def _teacher_parts(teacher_tokenizer: PreTrainedTokenizerBase | None) -> tuple[dict | None, dict | None]:
    backend = getattr(teacher_tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None, None
    state = json.loads(backend.to_str())
    return state.get("normalizer"), state.get("pre_tokenizer")


def train_tokenizer(texts: Iterable[str], kind: str = "word",
                    teacher_tokenizer: PreTrainedTokenizerBase | None = None,
                    token_type_ids: bool = False) -> PreTrainedTokenizerFast:
    """Train a tokenizer of ``kind`` on ``texts``; see the module docstring."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    family, size = parse_kind(kind)
    if family == "word":
        tok = Tokenizer(models.WordLevel(vocab={}, unk_token="[UNK]"))
        trainer = trainers.WordLevelTrainer(vocab_size=size, min_frequency=1, special_tokens=SPECIALS,
                                            show_progress=False)
    elif family == "wordpiece":
        tok = Tokenizer(models.WordPiece(vocab={}, unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=size, special_tokens=SPECIALS, show_progress=False)
        tok.decoder = decoders.WordPiece()
    else:
        # BPE on pre-tokenized words (not byte-level): merges never cross a word boundary, so words stay words
        tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
        trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=SPECIALS, continuing_subword_prefix="##",
                                      show_progress=False)
        tok.decoder = decoders.WordPiece()
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    norm, pre = _teacher_parts(teacher_tokenizer)
    if norm is not None or pre is not None:  # split words exactly as the teacher does
        state = json.loads(tok.to_str())
        if norm is not None:
            state["normalizer"] = norm
        if pre is not None:
            state["pre_tokenizer"] = pre
        tok = Tokenizer.from_str(json.dumps(state))
    texts = [t for t in texts if t]
    if not texts:
        raise EgkdError("no training text to build the student's vocabulary from")
    tok.train_from_iterator(texts, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    names = ["input_ids", "token_type_ids", "attention_mask"] if token_type_ids else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=names,
    )


def same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """True when both give the same ids (same vocabulary): explanations can then be compared token by token."""
    return a is b or a.get_vocab() == b.get_vocab()


def teacher_init_embeddings(student_tokenizer: PreTrainedTokenizerBase, teacher_tokenizer: PreTrainedTokenizerBase,
                            teacher_embeddings: torch.Tensor, dim: int, seed: int = 0) -> torch.Tensor:
    """``[V_student, dim]``: each student token's vector is the mean of the teacher's input embeddings of its
    teacher subwords (specials map to the teacher's specials, [PAD] to zero), then a fixed random projection
    (Gaussian, scaled by ``1/sqrt(dim)``) when ``dim`` differs from the teacher's width."""
    vocab = student_tokenizer.get_vocab()
    table = teacher_embeddings.detach().float().cpu()
    out = torch.zeros(len(vocab), table.shape[1])
    t_vocab = teacher_tokenizer.get_vocab()
    unk = teacher_tokenizer.unk_token_id or 0
    for token, i in vocab.items():
        if token in SPECIALS:
            tid = t_vocab.get(token, unk)
            if token != "[PAD]":
                out[i] = table[tid]
            continue
        ids = teacher_tokenizer(token.removeprefix("##"), add_special_tokens=False)["input_ids"] or [unk]
        out[i] = table[ids].mean(0)
    if dim != table.shape[1]:
        gen = torch.Generator().manual_seed(seed)
        proj = torch.randn(table.shape[1], dim, generator=gen) / dim ** 0.5
        out = out @ proj
    return out
