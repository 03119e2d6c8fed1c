"""Tables of results, for the terminal (rich) and for files (Markdown, CSV)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from rich.table import Table

from egkd.data.tasks import TaskSpec


def metric_rows(results: dict[str, dict[str, Any]], spec: TaskSpec) -> tuple[list[str], list[list[str]]]:
    """One row per model: the task's metrics, fidelity, parameters and throughput relative to the teacher."""
    header = ["model", *spec.metrics, "fidelity", "params (M)", "examples/s", "speed vs teacher"]
    explained = any("explanations" in m for m in results.values())
    if explained:
        header.insert(len(spec.metrics) + 2, "consistency")
    rows = []
    teacher_tp = None
    for m in results.values():
        if "teacher" in m:
            teacher_tp = m["teacher"]["throughput"]
            break
    for name, m in results.items():
        fid = m.get("fidelity_agreement", m.get("fidelity_pearson"))
        ratio = m["throughput"] / teacher_tp if teacher_tp else None
        rows.append([
            name,
            *(f"{m[k]:.2f}" for k in spec.metrics),
            "-" if fid is None else f"{fid:.1f}",
            f"{m['parameters'] / 1e6:.1f}",
            f"{m['throughput']:.0f}",
            "-" if ratio is None else f"{ratio:.2f}x",
        ])
        if explained:
            rho = m.get("explanations", {}).get("consistency", {}).get("spearman")
            rows[-1].insert(len(spec.metrics) + 2, "-" if rho is None else f"{rho:.2f}")
    return header, rows


def metrics_table(results: dict[str, dict[str, Any]], spec: TaskSpec, title: str | None = None) -> Table:
    header, rows = metric_rows(results, spec)
    table = Table(title=title or f"{spec.name} ({next(iter(results.values())).get('split', 'dev')})")
    for h in header:
        table.add_column(h, justify="left" if h == "model" else "right")
    for r in rows:
        table.add_row(*r)
    return table


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
