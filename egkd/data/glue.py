"""Reading GLUE splits from the standard TSV folder, or from the Hugging Face hub when there is none.

Both paths return the same schema (``text_a``, ``text_b`` for pairs, ``label``, ``idx``) so the rest of the
code never knows where the data came from.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import datasets
from datasets.table import InMemoryTable

from egkd.data.tasks import SPLITS, TaskSpec, get_task, is_mismatched_alias
from egkd.errors import EgkdError

HUB_DATASET = "nyu-mll/glue"
_READER_VERSION = "1"  # bump when parsing changes, so fingerprints (and token caches) change with it
_DEV_LAYOUT = Path("..") / "shared" / "data" / "glue"
_HUB_SPLITS = {
    "train": "train",
    "dev": "validation",
    "test": "test",
    "dev_matched": "validation_matched",
    "dev_mismatched": "validation_mismatched",
    "test_matched": "test_matched",
    "test_mismatched": "test_mismatched",
}


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The GLUE folder to read, or None to use the hub.

    Order: the explicit folder, ``$GLUE_DIR``, ``../shared/data/glue`` from the working directory, then from
    the repository root (so the development layout works from any directory).
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise EgkdError(f"GLUE folder {path} does not exist; pass --data-dir or set GLUE_DIR")
        return path
    env = os.environ.get("GLUE_DIR")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise EgkdError(
                f"GLUE folder {path} (from GLUE_DIR) does not exist; pass --data-dir or set GLUE_DIR"
            )
        return path
    repo_root = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), repo_root):
        candidate = (base / _DEV_LAYOUT).resolve()
        if candidate.is_dir():
            return candidate
    return None


def _features(spec: TaskSpec) -> datasets.Features:
    cols: dict[str, datasets.Value] = {"text_a": datasets.Value("string")}
    if spec.is_pair:
        cols["text_b"] = datasets.Value("string")
    cols["label"] = datasets.Value("float32" if spec.is_regression else "int64")
    cols["idx"] = datasets.Value("int64")
    return datasets.Features(cols)


def _file_stem(spec: TaskSpec, split: str, task_name: str) -> str:
    """Map a requested split to the file stem of this task ('dev' is 'dev_matched' for MNLI)."""
    if split not in SPLITS:
        raise EgkdError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    if spec.name == "mnli" and split in ("dev", "test"):
        return f"{split}_{'mismatched' if is_mismatched_alias(task_name) else 'matched'}"
    if spec.name != "mnli" and split not in ("train", "dev", "test"):
        raise EgkdError(f"split {split!r} exists only for MNLI; task {spec.name} has train, dev and test")
    return split


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_label(raw: str, spec: TaskSpec, path: Path, line: int) -> int | float:
    value = raw.strip()
    try:
        if spec.tsv_label_format == "float":
            return float(value)
        if spec.tsv_label_format == "name":
            return spec.label_names.index(value)
        label = int(value)
        if not 0 <= label < spec.num_labels:
            raise ValueError(value)
        return label
    except ValueError:
        expected = "a number" if spec.is_regression else (
            " or ".join(spec.label_names) if spec.tsv_label_format == "name" else f"0..{spec.num_labels - 1}"
        )
        raise EgkdError(f"{path}, line {line}: label {value!r} is not {expected}") from None


def _read_tsv(spec: TaskSpec, stem: str, path: Path, max_examples: int | None) -> dict[str, list]:
    """Parse one GLUE TSV into columns; quoting is off because GLUE fields contain bare '"'."""
    layout = spec.layout(stem)
    columns: dict[str, list] = {"text_a": [], "label": [], "idx": []}
    if spec.is_pair:
        columns["text_b"] = []
    text_names = ["text_a", "text_b"][: len(layout.text_fields)]
    unlabeled = -1.0 if spec.is_regression else -1
    # newline="" keeps csv in charge of line ends; utf-8-sig drops MRPC's BOM.
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if layout.header:
            header = next(reader, None)
            if header is None:
                raise EgkdError(f"{path} is empty; expected a header line")
            n_fields = len(header)
            wanted = [*layout.text_fields, layout.label_field, layout.index_field]
            positions: dict[str | int, int] = {}
            for name in wanted:
                if name is None:
                    continue
                if name not in header:
                    raise EgkdError(
                        f"{path}: missing column {name!r}; columns found: {', '.join(header)}"
                    )
                positions[name] = header.index(name)
        else:
            assert layout.num_fields is not None
            n_fields = layout.num_fields
            positions = {i: i for i in (*layout.text_fields, layout.label_field, layout.index_field)
                         if isinstance(i, int)}
        text_pos = [positions[name] for name in layout.text_fields]
        label_pos = positions.get(layout.label_field) if layout.label_field is not None else None
        index_pos = positions.get(layout.index_field) if layout.index_field is not None else None
        row_number = 0
        for row in reader:
            if max_examples is not None and row_number >= max_examples:
                break
            if not row:  # a blank line (e.g. a trailing one) carries no example
                continue
            line = reader.line_num
            if len(row) != n_fields:
                raise EgkdError(
                    f"{path}, line {line}: expected {n_fields} tab-separated fields, found {len(row)}"
                )
            for col, pos in zip(text_names, text_pos, strict=True):
                columns[col].append(row[pos])
            columns["label"].append(
                unlabeled if label_pos is None else _parse_label(row[label_pos], spec, path, line)
            )
            if index_pos is None:
                columns["idx"].append(row_number)
            else:
                try:
                    columns["idx"].append(int(row[index_pos]))
                except ValueError:
                    msg = f"{path}, line {line}: index {row[index_pos]!r} is not an integer"
                    raise EgkdError(msg) from None
            row_number += 1
    return columns


def _load_tsv(spec: TaskSpec, stem: str, root: Path, max_examples: int | None) -> datasets.Dataset:
    path = root / spec.folder / f"{stem}.tsv"
    if not path.is_file():
        raise EgkdError(
            f"GLUE file {path} not found; put the {spec.folder} files there (download_glue_data.py layout) "
            "or pass another --data-dir"
        )
    columns = _read_tsv(spec, stem, path, max_examples)
    features = _features(spec)
    table = InMemoryTable.from_pydict({k: columns[k] for k in features}, schema=features.arrow_schema)
    # An explicit fingerprint from the file's bytes: cheap, and stable across runs so token caches hit.
    fingerprint = hashlib.sha256(
        f"{_READER_VERSION}|{spec.name}|{stem}|{max_examples}|{_sha256(path)}".encode()
    ).hexdigest()[:32]
    info = datasets.DatasetInfo(features=features)
    return datasets.Dataset(table, info=info, split=stem, fingerprint=fingerprint)


def _load_hub(spec: TaskSpec, stem: str, max_examples: int | None) -> datasets.Dataset:
    if not spec.hub_config:  # tasks egkd generates itself (synth) have no hub copy to fall back on
        raise EgkdError(
            f"task {spec.name} has no hub copy: write it with egkd.data.synthetic.write_synthetic_glue(DIR) "
            f"and pass --data-dir DIR (the files go to DIR/{spec.folder})"
        )
    try:
        ds = datasets.load_dataset(HUB_DATASET, spec.hub_config, split=_HUB_SPLITS[stem])
    except Exception as err:  # offline, DNS, missing cache: all mean the same to the user
        raise EgkdError(
            "no GLUE folder found and the hub is unreachable: pass --data-dir DIR or set GLUE_DIR "
            f"({type(err).__name__})"
        ) from err
    assert isinstance(ds, datasets.Dataset)
    renames = dict(zip(spec.text_columns, ["text_a", "text_b"], strict=False))
    ds = ds.rename_columns(renames)
    ds = ds.select_columns(list(_features(spec)))
    ds = ds.cast(_features(spec))
    if max_examples is not None:
        ds = ds.select(range(min(max_examples, len(ds))))
    return ds


def load_split(
    task: str | TaskSpec,
    split: str,
    data_dir: str | Path | None = None,
    max_examples: int | None = None,
) -> datasets.Dataset:
    """One GLUE split as a Dataset with ``text_a``, ``text_b`` (pairs), ``label`` (-1 unlabeled), ``idx``.

    Reads the TSV folder from :func:`resolve_data_dir`, else the hub. ``max_examples`` keeps the first N rows,
    so small runs are reproducible. For MNLI 'dev'/'test' mean matched, or mismatched with task 'mnli-mm'.
    """
    spec = get_task(task)
    stem = _file_stem(spec, split, task if isinstance(task, str) else spec.name)
    if max_examples is not None and max_examples < 0:
        raise EgkdError(f"max_examples must be >= 0, got {max_examples}")
    root = resolve_data_dir(data_dir)
    if root is None:
        return _load_hub(spec, stem, max_examples)
    return _load_tsv(spec, stem, root, max_examples)
