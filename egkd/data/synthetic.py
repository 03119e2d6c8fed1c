"""A synthetic sentiment task with planted evidence, generated locally so demos and tests never download.

Every sentence is neutral filler with one or two *evidence* words planted at random positions; the label
is decided by the evidence alone (positive words -> 1, negative words -> 0). Because the true rationale is
known exactly, explanation metrics have a ground truth: a faithful model must put its attribution mass on
the evidence words, and plausibility metrics can be checked against ``dev_evidence.jsonl``.

All words are single WordPiece tokens of the BERT uncased vocabulary, so token units, word units and
whitespace words coincide for BERT-family tokenizers (no alignment ambiguity in tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from egkd.errors import EgkdError

#: Folder under the GLUE root that :func:`write_synthetic_glue` writes and the 'synth' task reads.
FOLDER = "SYNTH"

#: Neutral filler words (no sentiment), each one token in the BERT uncased vocabulary.
FILLER_WORDS: tuple[str, ...] = tuple("""
the a an this that these those some many few every each other another same
house table river chair window door garden street city village road bridge tree forest mountain
field lake sea island stone wall roof floor kitchen room bed desk book paper letter pen pencil
box bag cup glass bottle plate bowl knife fork spoon bread water milk tea coffee rice apple orange
car bus train boat ship plane bicycle horse dog cat bird fish cow sheep pig chicken mouse
man woman child boy girl teacher doctor farmer driver student friend family mother father brother sister
morning evening night day week month year hour minute today tomorrow yesterday spring summer winter autumn
red blue green yellow white black brown small large old new long short tall round flat
walked carried opened closed moved found saw took gave made put kept brought left met
near under over behind beside between across along around through into onto from with without
and or but then also still just only very quite rather almost often sometimes always
one two three four five six seven eight nine ten first second third last next
school church market office station hospital library museum park farm shop hotel
song music picture film story game map clock phone radio computer camera key coin
shirt coat hat shoe dress button ring watch sand snow rain wind cloud sun moon star
""".split())

#: Evidence for label 1 ('positive').
POSITIVE_WORDS: tuple[str, ...] = ("excellent", "wonderful", "great", "fantastic", "superb", "brilliant",
                                   "amazing", "lovely")
#: Evidence for label 0 ('negative').
NEGATIVE_WORDS: tuple[str, ...] = ("terrible", "awful", "horrible", "dreadful", "poor", "bad", "nasty",
                                   "miserable")

MIN_FILLER, MAX_FILLER = 8, 16
_SPLIT_STREAMS = {"train": 0, "dev": 1}  # independent random streams per split, both fixed by the seed


def make_example(rng: np.random.Generator) -> tuple[list[str], int, list[int]]:
    """One example: ``(words, label, rationale)`` with ``rationale[i] == 1`` on the planted evidence words.

    The label is drawn first (fair coin) so classes are balanced in expectation; one or two evidence words
    of that polarity are inserted at distinct random positions among 8-16 filler words.
    """
    label = int(rng.integers(2))
    n_filler = int(rng.integers(MIN_FILLER, MAX_FILLER + 1))
    words = [FILLER_WORDS[i] for i in rng.integers(len(FILLER_WORDS), size=n_filler)]
    evidence = POSITIVE_WORDS if label == 1 else NEGATIVE_WORDS
    n_evidence = int(rng.integers(1, 3))
    total = n_filler + n_evidence
    positions = sorted(int(p) for p in rng.choice(total, size=n_evidence, replace=False))
    rationale = [0] * total
    out: list[str] = []
    fill = iter(words)
    for pos in range(total):
        if pos in positions:
            out.append(evidence[int(rng.integers(len(evidence)))])
            rationale[pos] = 1
        else:
            out.append(next(fill))
    return out, label, rationale


def _generate(n: int, seed: int, split: str) -> list[tuple[list[str], int, list[int]]]:
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
    return [make_example(rng) for _ in range(n)]


def write_synthetic_glue(folder: str | Path, n_train: int = 2000, n_dev: int = 400, seed: int = 0) -> Path:
    """Write ``folder/SYNTH/{train,dev}.tsv`` (header ``sentence<TAB>label``) and ``dev_evidence.jsonl``.

    ``folder`` is then a GLUE root for task ``'synth'`` (``--data-dir folder``). The output is a pure
    function of ``(n_train, n_dev, seed)``, so two runs with the same seed are byte-identical and a test can
    regenerate the data instead of shipping it. Returns the ``SYNTH`` folder.
    """
    if n_train < 0 or n_dev < 0:
        raise EgkdError(f"example counts must be >= 0, got n_train={n_train}, n_dev={n_dev}")
    out = Path(folder) / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev)):
        examples = _generate(n, seed, split)
        with (out / f"{split}.tsv").open("w", encoding="utf-8", newline="\n") as f:
            f.write("sentence\tlabel\n")
            f.writelines(f"{' '.join(words)}\t{label}\n" for words, label, _ in examples)
        if split == "dev":
            with (out / "dev_evidence.jsonl").open("w", encoding="utf-8", newline="\n") as f:
                f.writelines(
                    json.dumps({"idx": i, "tokens": words, "rationale": rationale, "label": label}) + "\n"
                    for i, (words, label, rationale) in enumerate(examples)
                )
    return out
