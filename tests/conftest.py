"""Shared test fixtures; the hub is switched off so no test can wait on the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

TINY_CORPUS = [
    "the movie was great and the acting was wonderful",
    "a dull , tedious film with no charm",
    "it 's a charming and often affecting journey .",
    "the cat sat on the mat",
    "a man is playing a guitar",
    "what is the capital of france ?",
    "paris is the capital of france .",
    "unbelievably bad acting , terrible plot",
]


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer trained on a few sentences: BERT-like specials and pair handling, built in ms."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(TINY_CORPUS, trainer=trainer)
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                   ("[CLS]", tok.token_to_id("[CLS]")))
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny WordPiece tokenizer (always the tiny one, whatever else is installed)."""
    return build_tiny_tokenizer()
