"""Tokenization, batching and length bucketing for GLUE splits.

Tokens carry their word index (``word_ids``) because explanations of a teacher and a student with different
tokenizers are compared on words. Batches are padded dynamically, and bucketed by length, because padding
dominates the cost of short GLUE inputs on CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch.utils.data import Sampler
from transformers import PreTrainedTokenizerBase

from egkd.data.tasks import TaskSpec, get_task
from egkd.errors import EgkdError

_FORMAT_VERSION = "1"  # bump when the produced columns change, so old caches are never reused
_BACKEND_KEYS_IGNORED = ("truncation", "padding")  # call-time state the tokenizer mutates on use


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what decides the token ids: the backend JSON without its mutable padding/truncation state."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise EgkdError(f"{type(tokenizer).__name__} is not a fast tokenizer; word_ids need a fast tokenizer")
    state = json.loads(backend.to_str())
    for key in _BACKEND_KEYS_IGNORED:
        state.pop(key, None)
    payload = json.dumps(state, sort_keys=True) + "|" + "|".join(tokenizer.model_input_names)
    return hashlib.sha256(payload.encode()).hexdigest()


def tokenized_cache_key(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, task: TaskSpec,
                        max_seq_length: int) -> str:
    """The cache key of a tokenized split; any change in data, tokenizer, length or format changes it."""
    tok = tokenizer_fingerprint(tokenizer)
    parts = [_FORMAT_VERSION, task.name, ds._fingerprint, tok, str(max_seq_length)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _global_word_ids(encoding: Any, i: int) -> list[int]:
    """Word index per token, -1 for special tokens; the second text's words continue after the first's."""
    words = encoding.word_ids(i)
    seqs = encoding.sequence_ids(i)
    first_words = [w for w, s in zip(words, seqs, strict=True) if s == 0 and w is not None]
    offset = max(first_words) + 1 if first_words else 0
    out: list[int] = []
    for w, s in zip(words, seqs, strict=True):
        if w is None or s is None:
            out.append(-1)
        else:
            out.append(w + offset if s == 1 else w)
    return out


def tokenize_split(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    task: str | TaskSpec,
    max_seq_length: int,
    cache_dir: Path | None = None,
) -> datasets.Dataset:
    """Tokenize a split from :func:`egkd.data.glue.load_split` without padding (the collator pads).

    Produces ``input_ids``, ``attention_mask``, ``token_type_ids`` (if the tokenizer makes them), ``labels``,
    ``idx`` and ``word_ids``. With ``cache_dir`` the result is stored as ``<key>.arrow`` there and reused only
    when the key (data, tokenizer, length, format) is identical.
    """
    spec = get_task(task)
    if not getattr(tokenizer, "is_fast", False):
        raise EgkdError(f"{type(tokenizer).__name__} is not a fast tokenizer; word_ids need a fast tokenizer")
    if max_seq_length < 2:
        raise EgkdError(f"max_seq_length must be at least 2, got {max_seq_length}")
    pair = "text_b" in ds.column_names

    def encode(batch: dict[str, list]) -> dict[str, list]:
        args = (batch["text_a"], batch["text_b"]) if pair else (batch["text_a"],)
        # padding=False explicitly: the bundled tokenizer.json has padding baked in.
        enc = tokenizer(*args, truncation=True, max_length=max_seq_length, padding=False)
        names = ("input_ids", "attention_mask", "token_type_ids")
        out: dict[str, list] = {k: enc[k] for k in names if k in enc}
        out["word_ids"] = [_global_word_ids(enc, i) for i in range(len(batch["text_a"]))]
        out["labels"] = batch["label"]
        return out

    key = tokenized_cache_key(ds, tokenizer, spec, max_seq_length)
    kwargs: dict[str, Any] = {}
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        kwargs = {"cache_file_name": str(cache_dir / f"{key}.arrow"), "load_from_cache_file": True}
    remove = [c for c in ("text_a", "text_b", "label") if c in ds.column_names]
    label_type = "float32" if spec.is_regression else "int64"
    features = datasets.Features({
        "idx": datasets.Value("int64"),
        "input_ids": datasets.Sequence(datasets.Value("int32")),
        "attention_mask": datasets.Sequence(datasets.Value("int8")),
        "token_type_ids": datasets.Sequence(datasets.Value("int8")),
        "word_ids": datasets.Sequence(datasets.Value("int32")),
        "labels": datasets.Value(label_type),
    })
    probe = tokenizer("a", truncation=True, max_length=max_seq_length, padding=False)
    if "token_type_ids" not in probe:
        del features["token_type_ids"]
    extra = [c for c in ds.column_names if c not in remove and c not in features]
    for name in extra:
        features[name] = ds.features[name]
    return ds.map(encode, batched=True, remove_columns=remove, features=features, new_fingerprint=key,
                  desc=f"tokenizing {spec.name}", **kwargs)


class Collator:
    """Pads a list of tokenized examples to the longest in the batch (dynamic padding) and makes tensors."""

    _PAD = {"attention_mask": 0, "token_type_ids": 0, "word_ids": -1}

    def __init__(self, tokenizer: PreTrainedTokenizerBase | int, is_regression: bool | None = None,
                 pad_to_multiple_of_8: bool = False) -> None:
        """``tokenizer`` gives the pad id (or is it); ``is_regression`` None infers the label dtype."""
        if isinstance(tokenizer, int):
            pad_id: int | None = tokenizer
        else:
            pad_id = tokenizer.pad_token_id
            if pad_id is None:
                raise EgkdError(f"tokenizer {type(tokenizer).__name__} has no pad token")
        self.pad_token_id = int(pad_id)
        self.is_regression = is_regression
        self.pad_to_multiple_of_8 = pad_to_multiple_of_8

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of_8:
            longest = math.ceil(longest / 8) * 8
        batch: dict[str, torch.Tensor] = {}
        pads = {"input_ids": self.pad_token_id, **self._PAD}
        for name, pad in pads.items():
            if name not in features[0]:
                continue
            rows = torch.full((len(features), longest), pad, dtype=torch.long)
            for i, f in enumerate(features):
                values = torch.as_tensor(f[name], dtype=torch.long)
                rows[i, : len(values)] = values
            batch[name] = rows
        if "labels" in features[0]:
            labels = [f["labels"] for f in features]
            regression = self.is_regression
            if regression is None:
                regression = isinstance(labels[0], float) or (
                    isinstance(labels[0], torch.Tensor) and labels[0].is_floating_point()
                )
            batch["labels"] = torch.as_tensor(labels, dtype=torch.float32 if regression else torch.long)
        if "idx" in features[0]:
            batch["idx"] = torch.as_tensor([f["idx"] for f in features], dtype=torch.long)
        return batch


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length, in an order that is a deterministic function of (seed, epoch).

    Shuffles, cuts into mega-chunks of 50 batches, sorts each chunk by length and shuffles the batches:
    padding drops to about the batch's own length (roughly half an SST-2 epoch on CPU) while batches stay
    random.
    """

    CHUNK_BATCHES = 50

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, shuffle: bool = True,
                 drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        super().__init__()
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _batches(self) -> list[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = np.arange(n)
            return [order[i:i + bs].tolist() for i in range(0, n, bs) if not self.drop_last or i + bs <= n]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n)
        chunk = bs * self.CHUNK_BATCHES
        batches: list[list[int]] = []
        for start in range(0, n, chunk):
            part = order[start:start + chunk]
            # stable sort, longest first, so ties keep the shuffled order
            part = part[np.argsort(-self.lengths[part], kind="stable")]
            batches.extend(part[i:i + bs].tolist() for i in range(0, len(part), bs))
        if self.drop_last and batches and len(batches[-1]) < bs:
            batches.pop()  # only the very last chunk can end short: chunks are whole batches
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()
