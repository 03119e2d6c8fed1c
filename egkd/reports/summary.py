"""``egkd report``: one Markdown/CSV table of every finished run under a folder (their metrics.json files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from egkd.data.tasks import get_task
from egkd.errors import EgkdError
from egkd.reports.tables import to_markdown, write_csv

HEADER = ["task", "run", "method", "student", "dev metrics", "fidelity", "consistency", "params (M)",
          "speed vs teacher", "s / epoch"]


def _row(run: Path, m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    spec = get_task(m["task"])
    scores = ", ".join(f"{k} {m[k]:.2f}" for k in spec.metrics)
    fid = m.get("fidelity_agreement", m.get("fidelity_pearson"))
    rho = m.get("explanations", {}).get("consistency", {}).get("spearman")
    method = cfg.get("method", "")
    if method == "egkd":
        method = f"egkd-{cfg.get('explainer')}"
    return [
        spec.name,
        run.name,
        method,
        cfg.get("student", "") if cfg.get("teacher") else "(teacher)",
        scores,
        "-" if fid is None else f"{fid:.1f}",
        "-" if rho is None else f"{rho:.2f}",
        f"{m['parameters'] / 1e6:.1f}",
        f"{m['speedup']:.2f}x" if "speedup" in m else "-",
        f"{m.get('training', {}).get('seconds_per_epoch', 0):.0f}",
    ]


def summarize(folder: str | Path, out: str | Path | None = None) -> str:
    """Markdown table of the runs in ``folder`` (sorted by task, teachers first); also CSV next to ``out``."""
    import yaml

    root = Path(folder)
    runs = sorted(p.parent for p in root.glob("*/metrics.json"))
    if not runs:
        raise EgkdError(f"no finished runs (*/metrics.json) under {root}")
    rows = []
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        cfg = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
        rows.append(_row(run, m, cfg))
    rows.sort(key=lambda r: (r[0], r[3] != "(teacher)", r[1]))
    text = to_markdown(HEADER, rows)
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        write_csv(out.with_suffix(".csv"), HEADER, rows)
    return text
