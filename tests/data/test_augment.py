"""Tang et al.'s augmentation: unlabelled copies made only of the source's words and masks, reproducibly."""

from __future__ import annotations

import torch

from egkd.data.augment import MASK, augment_split
from egkd.data.glue import load_split
from egkd.explain.base import resolve_target


def _is_masked_ngram(copy: str, source: str) -> bool:
    """Whether ``copy`` is a contiguous run of ``source``'s words with some words replaced by [MASK]."""
    c, s = copy.split(), source.split()
    return any(all(cw in (sw, MASK) for cw, sw in zip(c, s[i:i + len(c)], strict=True))
               for i in range(len(s) - len(c) + 1))


def test_copies_are_masked_ngrams_of_their_source_without_labels(glue_dir):
    ds = load_split("mrpc", "train", glue_dir, max_examples=50)
    aug = augment_split(ds, copies=2)
    n = len(ds)
    assert aug.select(range(n))["idx"] == ds["idx"] and aug.select(range(n))["label"] == ds["label"]
    extra = aug.select(range(n, len(aug)))
    assert n < len(extra) <= 2 * n  # unchanged copies are dropped
    assert set(extra["label"]) == {-1}
    assert len(set(aug["idx"])) == len(aug) and min(extra["idx"]) > max(ds["idx"])
    sources = {(r["text_a"], r["text_b"]) for r in ds}
    for row in extra:
        assert (row["text_a"], row["text_b"]) not in sources
        assert any(_is_masked_ngram(row["text_a"], a) and _is_masked_ngram(row["text_b"], b) for a, b in sources)
    texts = " ".join(extra["text_a"])
    assert MASK in texts


def test_augmentation_is_reproducible_and_keyed(glue_dir):
    ds = load_split("sst2", "train", glue_dir, max_examples=40)
    a, b = augment_split(ds, 1), augment_split(ds, 1)
    assert a["text_a"] == b["text_a"] and a._fingerprint == b._fingerprint
    c = augment_split(ds, 1, p_mask=0.3)
    assert c._fingerprint != a._fingerprint and c["text_a"] != a["text_a"]
    assert augment_split(ds, 0) is ds


def test_gold_target_falls_back_to_the_teacher_prediction_on_unlabelled_rows():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    labels = torch.tensor([0, -1, -1])
    assert resolve_target("gold", logits, labels).tolist() == [0, 0, 1]
