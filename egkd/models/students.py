"""Loading teachers and building students.

A student is described by a short spec string:

* ``layers:1,3,5`` – embeddings, the chosen encoder layers (0-based) and the head copied from the teacher,
  the DistilBERT / PKD way of initialising a thinner model;
* ``depth:N`` – N layers chosen uniformly (every L/N-th layer, ending at the top one);
* ``config:layers=2,hidden=128,heads=2[,intermediate=512][,tokenizer=PATH|word|wordpiece-8k|bpe-8k]`` – a BERT
  of that shape from scratch (a tokenizer kind trains its own tokenizer on the task's training text);
* ``bilstm:hidden=300[,layers=1,embed=300,init=teacher|random,tokenizer=word|wordpiece-8k|bpe-8k,dropout=0.1]``
  and ``cnn:filters=100,kernels=3-4-5[,embed=300,init=..,tokenizer=..,dropout=0.5]`` – the small students of
  :mod:`egkd.models.small` with their own vocabulary (explanations are then compared on words);
* anything else – a folder or hub id loaded with ``AutoModelForSequenceClassification``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from egkd.config import REFERENCE_MODEL
from egkd.data.tasks import TaskSpec
from egkd.errors import EgkdError
from egkd.models.resolve import bundled_path, resolve_model
from egkd.models.vocab import is_trainable_kind, train_tokenizer

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()  # egkd draws its own progress bars

DEFAULT_TOKENIZER = REFERENCE_MODEL


@dataclass
class Built:
    """A model with its tokenizer and, for students cut from a teacher, the teacher layers they came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    teacher_layers: list[int] = field(default_factory=list)


def _head_kwargs(task: TaskSpec) -> dict:
    kw: dict = {"num_labels": task.num_labels}
    if task.is_regression:
        kw["problem_type"] = "regression"
    else:
        kw["id2label"] = dict(enumerate(task.label_names))
        kw["label2id"] = {n: i for i, n in enumerate(task.label_names)}
    return kw


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(resolve_model(name))
    except (OSError, ValueError) as e:
        raise EgkdError(f"cannot load a tokenizer from {name!r}: {str(e).splitlines()[0]}") from None


def _parse_kv(body: str) -> dict[str, str]:
    out = {}
    for part in filter(None, body.split(",")):
        if "=" not in part:
            raise EgkdError(f"expected key=value in {body!r}, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def scratch_bert(body: str, task: TaskSpec, tokenizer: PreTrainedTokenizerBase | None = None,
                 texts: Iterable[str] | None = None) -> Built:
    """A small random-init BERT, e.g. ``config:layers=2,hidden=128,heads=2``.

    Its vocabulary is that of ``tokenizer=PATH`` if given, else of ``tokenizer`` (a student shares its
    teacher's), else of all-MiniLM-L6-v2's WordPiece.
    """
    kv = _parse_kv(body)
    known = {"layers", "hidden", "heads", "intermediate", "tokenizer", "max_positions"}
    if set(kv) - known:
        raise EgkdError(f"unknown config: key(s) {sorted(set(kv) - known)}; known: {sorted(known)}")
    if "tokenizer" in kv and is_trainable_kind(kv["tokenizer"]):
        tokenizer = own_tokenizer(kv["tokenizer"], texts, tokenizer, token_type_ids=True)
    elif "tokenizer" in kv or tokenizer is None:
        tokenizer = load_tokenizer(kv.get("tokenizer", DEFAULT_TOKENIZER))
    hidden = int(kv.get("hidden", 128))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=int(kv.get("layers", 2)),
        num_attention_heads=int(kv.get("heads", max(1, hidden // 64))),
        intermediate_size=int(kv.get("intermediate", 4 * hidden)),
        max_position_embeddings=int(kv.get("max_positions", 512)),
        pad_token_id=tokenizer.pad_token_id or 0,
        **_head_kwargs(task),
    )
    return Built(BertForSequenceClassification(config), tokenizer)


def load_classifier(name: str, task: TaskSpec, *, expect_head: bool = False) -> Built:
    """Load a sequence classifier; ``expect_head`` demands a trained head whose size matches the task."""
    if name.startswith("config:"):
        return scratch_bert(name[len("config:"):], task)
    path = resolve_model(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise EgkdError(f"cannot load model {name!r}: {str(e).splitlines()[0]}") from None
    if expect_head and config.num_labels != task.num_labels:
        raise EgkdError(
            f"teacher {name!r} has {config.num_labels} output(s) but task {task.name} needs {task.num_labels}: "
            f"fine-tune a teacher for {task.name} first (egkd finetune --task {task.name} ...)"
        )
    kwargs = {} if expect_head else _head_kwargs(task)
    model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    return Built(model, load_tokenizer(path))


def encoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The list of transformer blocks of a BERT-like model (``base_model.encoder.layer``)."""
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise EgkdError(
            f"cannot cut layers from a {type(model).__name__}: layers:/depth: students need a BERT-like "
            "teacher (base_model.encoder.layer); give the student as a model path instead"
        )
    return layers


def uniform_layers(n_teacher: int, n_student: int) -> list[int]:
    """Every (L/N)-th layer ending at the top one, e.g. 3 of 6 -> [1, 3, 5] (PKD-skip)."""
    if not 1 <= n_student <= n_teacher:
        raise EgkdError(f"depth:{n_student} is impossible for a teacher with {n_teacher} layers")
    return [(i + 1) * n_teacher // n_student - 1 for i in range(n_student)]


def cut_layers(teacher: PreTrainedModel, keep: list[int]) -> PreTrainedModel:
    """A deep copy of the teacher that keeps only encoder layers ``keep`` (0-based, in that order)."""
    n = len(encoder_layers(teacher))
    bad = [i for i in keep if not 0 <= i < n]
    if bad or not keep:
        raise EgkdError(f"layers {bad or keep} do not exist in a teacher with {n} layers (0-based: 0..{n - 1})")
    student = copy.deepcopy(teacher)
    student.base_model.encoder.layer = torch.nn.ModuleList([copy.deepcopy(encoder_layers(teacher)[i]) for i in keep])
    for new_idx, layer in enumerate(student.base_model.encoder.layer):
        attn = getattr(getattr(layer, "attention", None), "self", None)
        if attn is not None and hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx
    student.config.num_hidden_layers = len(keep)
    return student


def build_student(spec: str, teacher: Built, task: TaskSpec, texts: Iterable[str] | None = None) -> Built:
    """Build the student named by ``spec`` for ``teacher`` (see the module docstring).

    ``texts`` (the task's training text) is needed by students that train their own tokenizer.
    """
    kind, _, body = spec.partition(":")
    if kind in ("bilstm", "cnn"):
        from egkd.models.small_students import small_student

        return small_student(kind, body, teacher, task, texts)
    if kind == "layers" and body:
        try:
            keep = [int(x) for x in body.split(",")]
        except ValueError:
            raise EgkdError(f"layers: takes comma-separated layer numbers, got {body!r}") from None
        return Built(cut_layers(teacher.model, keep), teacher.tokenizer, keep)
    if kind == "depth" and body:
        if not body.isdigit():
            raise EgkdError(f"depth: takes a number of layers, got {body!r}")
        keep = uniform_layers(len(encoder_layers(teacher.model)), int(body))
        return Built(cut_layers(teacher.model, keep), teacher.tokenizer, keep)
    if kind == "config":
        return scratch_bert(body, task, teacher.tokenizer, texts)
    if Path(spec).expanduser().is_dir() or "/" in spec or bundled_path(spec) is not None:
        return load_classifier(spec, task)
    raise EgkdError(
        f"unknown student {spec!r}: use layers:i,j,k, depth:N, config:layers=..,hidden=.., bilstm:hidden=.., "
        "cnn:filters=..,kernels=3-4-5 or a model path/id"
    )


def needs_texts(spec: str) -> bool:
    """Whether the student ``spec`` trains its own tokenizer (and so needs the training text)."""
    kind, _, body = spec.partition(":")
    if kind in ("bilstm", "cnn"):
        return True
    return kind == "config" and is_trainable_kind(_parse_kv(body).get("tokenizer", ""))


def own_tokenizer(kind: str, texts: Iterable[str] | None, teacher_tokenizer: PreTrainedTokenizerBase | None,
                  token_type_ids: bool = False) -> PreTrainedTokenizerBase:
    """A tokenizer of ``kind`` trained on ``texts``, splitting words as the teacher's does."""
    if texts is None:
        raise EgkdError(f"a student with tokenizer={kind} trains it on the task's training text: pass texts=")
    return train_tokenizer(texts, kind, teacher_tokenizer, token_type_ids=token_type_ids)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
