"""Building BiLSTM and CNN students from their spec strings (``bilstm:hidden=300``, ``cnn:filters=100,...``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from egkd.data.tasks import TaskSpec
from egkd.errors import EgkdError
from egkd.models.small import BiLSTMConfig, BiLSTMForSequenceClassification, CNNConfig, CNNForSequenceClassification
from egkd.models.students import Built, _head_kwargs, _parse_kv, own_tokenizer
from egkd.models.vocab import teacher_init_embeddings

COMMON = {"embed", "init", "tokenizer", "dropout", "seed"}
KEYS = {"bilstm": COMMON | {"hidden", "layers"}, "cnn": COMMON | {"filters", "kernels"}}


def _int(kv: dict[str, str], key: str, default: int) -> int:
    try:
        value = int(kv.get(key, default))
    except ValueError:
        raise EgkdError(f"{key}= takes a whole number, got {kv[key]!r}") from None
    if value < 1:
        raise EgkdError(f"{key}= must be positive, got {value}")
    return value


def small_student(kind: str, body: str, teacher: Built, task: TaskSpec, texts: Iterable[str] | None) -> Built:
    """A BiLSTM or CNN student with its own tokenizer trained on ``texts`` (see egkd.models.students)."""
    kv = _parse_kv(body)
    unknown = set(kv) - KEYS[kind]
    if unknown:
        raise EgkdError(f"unknown {kind}: key(s) {sorted(unknown)}; known: {sorted(KEYS[kind])}")
    init = kv.get("init", "teacher")
    if init not in ("teacher", "random"):
        raise EgkdError(f"init= is 'teacher' or 'random', got {init!r}")
    tokenizer = own_tokenizer(kv.get("tokenizer", "word"), texts, teacher.tokenizer)
    common = {"vocab_size": len(tokenizer), "embed_size": _int(kv, "embed", 300),
              "pad_token_id": tokenizer.pad_token_id, **_head_kwargs(task)}
    if kind == "bilstm":
        config = BiLSTMConfig(hidden_size=_int(kv, "hidden", 300), num_layers=_int(kv, "layers", 1),
                              dropout=float(kv.get("dropout", 0.1)), **common)
        cls = BiLSTMForSequenceClassification
    else:
        try:
            kernels = [int(k) for k in kv.get("kernels", "3-4-5").split("-")]
        except ValueError:
            raise EgkdError(f"kernels= takes sizes joined by '-', e.g. 3-4-5, got {kv['kernels']!r}") from None
        config = CNNConfig(num_filters=_int(kv, "filters", 100), kernel_sizes=kernels,
                           dropout=float(kv.get("dropout", 0.5)), **common)
        cls = CNNForSequenceClassification
    if "seed" in kv:  # else the run's --seed (set before the student is built) decides the init
        torch.manual_seed(int(kv["seed"]))
    model = cls(config)
    if init == "teacher":
        table = teacher.model.get_input_embeddings().weight
        vectors = teacher_init_embeddings(tokenizer, teacher.tokenizer, table, config.embed_size)
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(vectors)
    return Built(model, tokenizer)
