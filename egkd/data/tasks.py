"""The GLUE tasks, each described once.

Everything task-specific (file layout, hub columns, label order, metrics) lives in one :class:`TaskSpec`
so that readers, metrics and the CLI never special-case a task by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from egkd.errors import EgkdError

#: Split names a caller may ask for; 'dev'/'test' of MNLI mean the matched ones.
SPLITS = ("train", "dev", "test", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")


@dataclass(frozen=True)
class TsvLayout:
    """Where the fields of one GLUE TSV file are.

    Fields are header names when ``header`` is true and 0-based positions otherwise (CoLA train/dev), so a
    reordered or renamed column is caught instead of silently read from the wrong position.
    """

    header: bool
    text_fields: tuple[str | int, ...]
    label_field: str | int | None = None
    index_field: str | int | None = None
    num_fields: int | None = None  # required for headerless files: every row must have this many fields


@dataclass(frozen=True)
class TaskSpec:
    """One GLUE task: names, hub columns, labels, metrics and TSV layout per split file."""

    name: str
    folder: str
    hub_config: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    num_labels: int
    is_regression: bool
    metrics: tuple[str, ...]
    main_metric: str
    dev_splits: tuple[str, ...]
    test_splits: tuple[str, ...]
    # How the TSV writes labels: 'name' (a string of label_names), 'index' (an integer), 'float' (STS-B).
    tsv_label_format: str
    # (file stem, layout) pairs; a tuple keeps the spec hashable.
    tsv_layouts: tuple[tuple[str, TsvLayout], ...]

    @property
    def is_pair(self) -> bool:
        """True for sentence-pair tasks (the examples carry ``text_b``)."""
        return len(self.text_columns) == 2

    def layout(self, stem: str) -> TsvLayout:
        """The TSV layout of split file ``<stem>.tsv``."""
        for key, value in self.tsv_layouts:
            if key == stem:
                return value
        known = ", ".join(k for k, _ in self.tsv_layouts)
        raise EgkdError(f"task {self.name} has no split {stem!r}; its splits are: {known}")


def _layouts(
    texts: tuple[str, ...], label: str, index: str | None, test_texts: tuple[str, ...] | None = None,
    test_index: str | None = "index", dev_stems: tuple[str, ...] = ("dev",),
    test_stems: tuple[str, ...] = ("test",),
) -> tuple[tuple[str, TsvLayout], ...]:
    """Layouts for the common case: a header everywhere, and test files without the label column."""
    labelled = TsvLayout(header=True, text_fields=texts, label_field=label, index_field=index)
    test = TsvLayout(header=True, text_fields=test_texts or texts, label_field=None, index_field=test_index)
    return (
        (("train", labelled),)
        + tuple((stem, labelled) for stem in dev_stems)
        + tuple((stem, test) for stem in test_stems)
    )


_COLA_HEADERLESS = TsvLayout(header=False, text_fields=(3,), label_field=1, index_field=None, num_fields=4)

_SPECS: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="cola", folder="CoLA", hub_config="cola", text_columns=("sentence",),
        label_names=("unacceptable", "acceptable"), num_labels=2, is_regression=False,
        metrics=("matthews", "accuracy"), main_metric="matthews", dev_splits=("dev",), test_splits=("test",),
        tsv_label_format="index",
        tsv_layouts=(
            ("train", _COLA_HEADERLESS),
            ("dev", _COLA_HEADERLESS),
            ("test", TsvLayout(header=True, text_fields=("sentence",), index_field="index")),
        ),
    ),
    TaskSpec(
        name="sst2", folder="SST-2", hub_config="sst2", text_columns=("sentence",),
        label_names=("negative", "positive"), num_labels=2, is_regression=False,
        metrics=("accuracy",), main_metric="accuracy", dev_splits=("dev",), test_splits=("test",),
        tsv_label_format="index",
        tsv_layouts=_layouts(("sentence",), "label", None),
    ),
    TaskSpec(
        name="mrpc", folder="MRPC", hub_config="mrpc", text_columns=("sentence1", "sentence2"),
        label_names=("not_equivalent", "equivalent"), num_labels=2, is_regression=False,
        metrics=("f1", "accuracy"), main_metric="f1", dev_splits=("dev",), test_splits=("test",),
        tsv_label_format="index",
        tsv_layouts=_layouts(("#1 String", "#2 String"), "Quality", None),
    ),
    TaskSpec(
        name="qqp", folder="QQP", hub_config="qqp", text_columns=("question1", "question2"),
        label_names=("not_duplicate", "duplicate"), num_labels=2, is_regression=False,
        metrics=("f1", "accuracy"), main_metric="f1", dev_splits=("dev",), test_splits=("test",),
        tsv_label_format="index",
        tsv_layouts=_layouts(("question1", "question2"), "is_duplicate", "id", test_index="id"),
    ),
    TaskSpec(
        name="stsb", folder="STS-B", hub_config="stsb", text_columns=("sentence1", "sentence2"),
        label_names=(), num_labels=1, is_regression=True,
        metrics=("pearson", "spearman"), main_metric="pearson", dev_splits=("dev",), test_splits=("test",),
        tsv_label_format="float",
        tsv_layouts=_layouts(("sentence1", "sentence2"), "score", "index"),
    ),
    TaskSpec(
        name="mnli", folder="MNLI", hub_config="mnli", text_columns=("premise", "hypothesis"),
        label_names=("entailment", "neutral", "contradiction"), num_labels=3, is_regression=False,
        metrics=("accuracy",), main_metric="accuracy", dev_splits=("dev_matched", "dev_mismatched"),
        test_splits=("test_matched", "test_mismatched"), tsv_label_format="name",
        tsv_layouts=_layouts(
            ("sentence1", "sentence2"), "gold_label", "index",
            dev_stems=("dev_matched", "dev_mismatched"), test_stems=("test_matched", "test_mismatched"),
        ),
    ),
    TaskSpec(
        name="qnli", folder="QNLI", hub_config="qnli", text_columns=("question", "sentence"),
        label_names=("entailment", "not_entailment"), num_labels=2, is_regression=False,
        metrics=("accuracy",), main_metric="accuracy", dev_splits=("dev",), test_splits=("test",),
        tsv_label_format="name",
        tsv_layouts=_layouts(("question", "sentence"), "label", "index"),
    ),
    TaskSpec(
        name="rte", folder="RTE", hub_config="rte", text_columns=("sentence1", "sentence2"),
        label_names=("entailment", "not_entailment"), num_labels=2, is_regression=False,
        metrics=("accuracy",), main_metric="accuracy", dev_splits=("dev",), test_splits=("test",),
        tsv_label_format="name",
        tsv_layouts=_layouts(("sentence1", "sentence2"), "label", "index"),
    ),
    TaskSpec(
        # WNLI's TSV writes 1 for entailment, which is also the hub's order (0 = not_entailment).
        name="wnli", folder="WNLI", hub_config="wnli", text_columns=("sentence1", "sentence2"),
        label_names=("not_entailment", "entailment"), num_labels=2, is_regression=False,
        metrics=("accuracy",), main_metric="accuracy", dev_splits=("dev",), test_splits=("test",),
        tsv_label_format="index",
        tsv_layouts=_layouts(("sentence1", "sentence2"), "label", "index"),
    ),
    TaskSpec(
        # Not GLUE: planted-evidence sentiment written by egkd.data.synthetic.write_synthetic_glue (no hub copy).
        name="synth", folder="SYNTH", hub_config="", text_columns=("sentence",),
        label_names=("negative", "positive"), num_labels=2, is_regression=False,
        metrics=("accuracy",), main_metric="accuracy", dev_splits=("dev",), test_splits=(),
        tsv_label_format="index",
        tsv_layouts=_layouts(("sentence",), "label", None, test_stems=()),
    ),
)

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _SPECS}

# Aliases beyond the canonical name and the folder name. 'mnli-mm' selects the mismatched dev/test in
# load_split (see mnli_mismatched_alias).
_ALIASES: dict[str, str] = {
    "sst-2": "sst2",
    "sts-b": "stsb",
    "sts": "stsb",
    "mnli-m": "mnli",
    "mnli_m": "mnli",
    "mnli-mm": "mnli",
    "mnli_mm": "mnli",
    "mnli_matched": "mnli",
    "mnli_mismatched": "mnli",
}
_MISMATCHED_ALIASES = frozenset({"mnli-mm", "mnli_mm", "mnli_mismatched"})


def _key(name: str) -> str:
    return name.strip().lower()


def is_mismatched_alias(name: str) -> bool:
    """True for names like 'mnli-mm' that mean MNLI's mismatched dev/test sets."""
    return _key(name) in _MISMATCHED_ALIASES


def get_task(name: str | TaskSpec) -> TaskSpec:
    """A task by name, GLUE folder name or alias, case-insensitively ('SST-2', 'sts-b', 'mnli-mm')."""
    if isinstance(name, TaskSpec):
        return name
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key in TASKS:
        return TASKS[key]
    for spec in _SPECS:
        if spec.folder.lower() == key:
            return spec
    raise EgkdError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
