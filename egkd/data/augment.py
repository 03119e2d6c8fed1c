"""Training-set augmentation for small students (Tang et al. 2019, "Distilling task-specific knowledge from
BERT into simple neural networks").

A BiLSTM or CNN student sees too few examples in a GLUE training set to imitate a teacher; Tang et al. add
unlabelled copies of the training sentences and let the teacher label them. Each copy is made word by word:
every word is replaced by ``[MASK]`` with probability ``p_mask``, and with probability ``p_ngram`` the copy
is cut down to a random n-gram (n in 1..5) of it. (Their third rule, swapping words of the same part of speech,
needs a tagger that cannot be downloaded here and is left out.) Copies carry label -1 ("no gold label"): the
gold term skips them, the KD term and the explanation terms learn them from the teacher, whose outputs and
explanations on them are cached like the rest of the training set.

The copies are drawn with a fixed seed, independent of the run's seed, so every seed of a grid shares one
augmented set and one teacher cache.
"""

from __future__ import annotations

import hashlib
import random

import datasets

AUGMENT_SEED = 1234
MASK = "[MASK]"


def _augment_text(text: str, rng: random.Random, p_mask: float, p_ngram: float, max_ngram: int) -> str:
    words = text.split()
    if not words:
        return text
    words = [MASK if rng.random() < p_mask else w for w in words]
    if rng.random() < p_ngram:
        n = rng.randint(1, min(max_ngram, len(words)))
        start = rng.randint(0, len(words) - n)
        words = words[start:start + n]
    return " ".join(words)


def augment_split(ds: datasets.Dataset, copies: int, p_mask: float = 0.1, p_ngram: float = 0.25,
                  max_ngram: int = 5, seed: int = AUGMENT_SEED) -> datasets.Dataset:
    """``ds`` followed by ``copies`` augmented copies of each row (label -1, new ``idx`` after the last one).

    Copies identical to their source (nothing masked or cut, frequent for short sentences) are dropped: they
    would only repeat the original with its gold label removed.
    """
    if copies <= 0:
        return ds
    rng = random.Random(seed)
    cols = [c for c in ("text_a", "text_b") if c in ds.column_names]
    unlabelled = -1.0 if ds.features["label"].dtype.startswith("float") else -1
    rows: dict[str, list] = {c: [] for c in ds.column_names}
    next_idx = max(ds["idx"], default=-1) + 1
    for _ in range(copies):
        for row in ds:
            new = {c: _augment_text(row[c], rng, p_mask, p_ngram, max_ngram) if row[c] else row[c] for c in cols}
            if all(new[c] == row[c] for c in cols):
                continue
            for c in ds.column_names:
                rows[c].append(new[c] if c in new else row[c])
            rows["label"][-1] = unlabelled
            rows["idx"][-1] = next_idx
            next_idx += 1
    extra = datasets.Dataset.from_dict(rows, features=ds.features)
    out = datasets.concatenate_datasets([ds, extra])
    # an explicit fingerprint (source data + every augmentation parameter) keeps tokenization and teacher caches
    # keyed on exactly this augmented set
    key = f"{ds._fingerprint}|augment|{copies}|{p_mask}|{p_ngram}|{max_ngram}|{seed}"
    out._fingerprint = hashlib.sha256(key.encode()).hexdigest()[:32]
    return out
