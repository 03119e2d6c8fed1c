"""The grid's records: ``OUT/results.jsonl``, one JSON line per finished unit (its settings, metrics, per-example
dev predictions and the machine it ran on), appended under a lock so that processes sharing ``OUT`` lose no line.
Kept apart from :mod:`egkd.bench.glue` (which decides what to run) because the report, the probes in
``scripts/`` and the tests read records without running anything."""

from __future__ import annotations

import json
import os
import platform
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from egkd.data.tasks import get_task
from egkd.locks import exclusive
from egkd.reports.console import console

if TYPE_CHECKING:
    from egkd.bench.glue import Unit


def read_results(out: Path) -> dict[str, dict[str, Any]]:
    """key -> record of every finished unit (the last line wins if a unit was recorded twice)."""
    path = out / "results.jsonl"
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = from_line(line)
            except json.JSONDecodeError:  # a line cut by a crash mid-write: that unit simply runs again
                console.print(f"[yellow]{path}:{n} is not valid JSON (an interrupted write?); ignoring it[/]")
                continue
            records[rec["key"]] = rec
    return records


def to_line(record: dict[str, Any]) -> str:
    """One results.jsonl line, written small enough to commit although it keeps every dev prediction (Part 6):
    ``idx`` is left out when it is 0..n-1 (a whole dev split, the usual case), and a regression prediction keeps
    5 decimals (STS-B's 0-5 scale: the recorded metrics come from full precision, and 1e-5 moves a Pearson
    by under 1e-6). Before this, STS-B's 17-digit floats and the idx lists made up 80 % of the file."""
    line = dict(record)
    if "predictions" in line:
        line["predictions"] = [round(p, 5) if isinstance(p, float) else p for p in line["predictions"]]
        if line.get("idx") == list(range(len(line["predictions"]))):
            del line["idx"]
    return json.dumps(line)


def from_line(line: str) -> dict[str, Any]:
    """The record of one results.jsonl line, ``idx`` filled in where :func:`to_line` left it out."""
    rec = json.loads(line)
    if "predictions" in rec and "idx" not in rec:
        rec["idx"] = list(range(len(rec["predictions"])))
    return rec


def cpu_model() -> str:
    """The CPU's model name: per-epoch seconds of runs on two machines are comparable only if this matches
    (``platform.processor()`` is empty on Linux; two sessions here measured the same units 1.6-1.9x apart)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"host": platform.node(), "cpu": cpu_model(), "gpu": gpu,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def describe_machine(host: dict[str, Any]) -> str:
    """One line for a :func:`machine` dict, as the results page and ``egkd bench cost`` print it."""
    gpu = f" + {host['gpu']}" if host.get("gpu") else ""
    return f"{host['cpu']}{gpu} ({host['threads']} threads, torch {host['torch']})"


def read_predictions(run: Path, split: str) -> list[dict[str, Any]]:
    """A run's per-example predictions on ``split`` (one JSON line per example, as ``api.evaluate`` writes them)."""
    return [json.loads(x) for x in (run / f"predictions_{split}.jsonl").read_text().splitlines() if x.strip()]


def make_record(unit: Unit, run: Path, root: Path, options: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """One results.jsonl line: the unit, its settings, its metrics and its per-example dev predictions."""
    spec = get_task(unit.task)
    split = metrics.get("split", spec.dev_splits[0])
    rows = read_predictions(run, split)
    training = metrics.get("training", {})
    return {
        "key": unit.key, "kind": unit.kind, "task": unit.task, "student": unit.student, "method": unit.method,
        "seed": unit.seed, "setting": unit.setting, "run": os.path.relpath(run, root),
        "options": {k: v for k, v in options.items() if k not in ("data_dir", "teacher")},  # log_with kept: harmless
        "metrics": {k: metrics[k] for k in spec.metrics}, "score": metrics[spec.main_metric],
        "main_metric": spec.main_metric,
        "fidelity": metrics.get("fidelity_agreement", metrics.get("fidelity_pearson")),
        **explanation_fields(metrics),
        **(explanation_fields(metrics, "ig") if explanations_key("ig") in metrics else {}),
        "parameters": metrics["parameters"], "teacher_parameters": metrics.get("teacher", {}).get("parameters"),
        "speedup": metrics.get("speedup"),
        "seconds_per_epoch": training.get("seconds_per_epoch"), "train_seconds": training.get("train_seconds"),
        "cpu_seconds_per_epoch": training.get("cpu_seconds_per_epoch"),
        "steps": training.get("steps"), "teacher_caches": training.get("teacher_caches", {}),
        "idx": [r["idx"] for r in rows], "predictions": [r["prediction"] for r in rows],  # labels: from GLUE
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
    }


def explanations_key(explainer: str = "gxi") -> str:
    """Where a run's metrics.json keeps the explanation metrics of ``explainer``: ``explanations`` for gxi (the
    grid's own scoring), ``explanations_ig`` etc. beside it for another explainer."""
    name = explainer.split(":")[0]
    return "explanations" if name == "gxi" else f"explanations_{name}"


def field_suffix(explainer: str = "gxi") -> str:
    """What a record's explanation columns for ``explainer`` append to their names: nothing for gxi, ``_ig``..."""
    return explanations_key(explainer).removeprefix("explanations")


def explanation_fields(metrics: dict[str, Any], explainer: str = "gxi") -> dict[str, Any]:
    """A record's explanation columns from a run's metrics (None where the scoring did not measure one); for an
    explainer other than gxi the same columns with its name appended (``consistency_ig``, ...)."""
    expl = metrics.get(explanations_key(explainer), {})
    consistency = expl.get("consistency", {})
    faith = expl.get("faithfulness", {}).get("student", {})
    shuffled = faith.get("random_order", {})
    fields = {"consistency": consistency.get("spearman"), "jaccard": consistency.get("jaccard"),
              "comprehensiveness": faith.get("comprehensiveness"), "sufficiency": faith.get("sufficiency"),
              "comprehensiveness_random": shuffled.get("comprehensiveness"),
              "sufficiency_random": shuffled.get("sufficiency")}
    return {k + field_suffix(explainer): v for k, v in fields.items()}


def replace_records(out: Path, records: dict[str, dict[str, Any]]) -> None:
    """Rewrite the lines of the units in ``records`` (key -> new record) in place, under the results lock;
    every other line, including those another process appends meanwhile, is kept as it is."""
    path = out / "results.jsonl"
    with results_lock(out):
        lines = []
        for line in path.read_text().splitlines():
            try:
                key = json.loads(line).get("key")
            except json.JSONDecodeError:
                key = None
            lines.append(to_line(records[key]) if key in records else line)
        path.write_text("".join(x + "\n" for x in lines))


def append_record(out: Path, record: dict[str, Any]) -> None:
    """Append one line; a line cut by an earlier crash is closed first, so the new record stays readable."""
    path = out / "results.jsonl"
    with results_lock(out):
        cut = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        with path.open("a") as f:
            f.write(("\n" if cut else "") + to_line(record) + "\n")


def results_lock(out: Path) -> AbstractContextManager[bool]:
    """Held while ``results.jsonl`` is appended to or rewritten, so processes sharing ``out`` lose no line."""
    return exclusive(out / ".locks" / "results.lock")
