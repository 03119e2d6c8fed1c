"""Issue 3, end to end through the command line: every EGKD family and AD-KD on the tiny model.

The gradient family's ``distill`` runs as a real ``python -m egkd.cli`` subprocess; the other cases and
``evaluate``, ``explain`` and ``cache`` go through the same entry point (``egkd.cli.main``) in this process,
which saves 10-15 s of imports each on a busy 2-core machine.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from conftest import cli_main, read_json, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

FLAGS = ["--task", "sst2", "--max-train-examples", "100", "--max-eval-examples", "100", "--max-seq-length", "32",
         "--batch-size", "16", "--log-with", "csv", "--log-every", "1", "--epochs", "1", "--learning-rate", "1e-3"]
CASES = {
    "gradient": (["--method", "egkd", "--explainer", "gradient"], ["loss_gradient"]),
    "perturbation": (["--method", "egkd", "--explainer", "perturbation"], ["loss_perturbation"]),
    "selection": (["--method", "egkd", "--explainer", "selection"], ["loss_selection"]),
    "gradient+perturbation": (["--method", "egkd", "--explainer", "gradient+perturbation"],
                              ["loss_gradient", "loss_perturbation"]),
    "gradient-multi-view": (["--method", "egkd", "--explainer", "gradient", "--explain-target", "all"],
                            ["loss_gradient"]),
    "adkd": (["--method", "adkd", "--adkd-steps", "2"], ["loss_adkd"]),
    "gradient-projected-decayed": (["--method", "egkd", "--explainer", "gradient", "--explain-project",
                                    "--explain-decay", "0.5"], ["loss_gradient", "loss_explain_cos"]),
}




@pytest.fixture(scope="module")
def distilled(tiny_teacher, glue_dir, tmp_path_factory):
    """Run each case's distillation once (by name) and return its run folder."""
    root = tmp_path_factory.mktemp("egkd-cli")
    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in done:
            out = root / name.replace("+", "_")
            args = ["distill", "--teacher", tiny_teacher, "--student", "layers:1", "--data-dir", glue_dir,
                    "--out", out, *CASES[name][0], *FLAGS]
            if name == "gradient":
                run_cli(*args, env={"OMP_NUM_THREADS": "1"})
            else:
                torch.set_num_threads(1)
                assert cli_main(*args) == 0, name
            done[name] = out
        return done[name]

    return run


def loss_rows(run: Path) -> dict[str, list[float]]:
    """logs/metrics.csv is long format (step, name, value): the values of each logged name."""
    with (run / "logs" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["name"], []).append(float(r["value"]))
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_distill_each_family_through_the_cli(distilled, name):
    run = distilled(name)
    metrics = read_json(run / "metrics.json")
    assert 0 <= metrics["accuracy"] <= 100
    logged = loss_rows(run)
    for column in ["loss", "loss_kd", *CASES[name][1]]:
        assert logged.get(column), (column, sorted(logged))
        assert all(math.isfinite(v) for v in logged[column]), column


def test_a_projected_run_logs_the_cosine_of_the_two_gradients_and_no_cap(distilled):
    logged = loss_rows(distilled("gradient-projected-decayed"))
    assert all(-1.0 <= c <= 1.0 for c in logged["loss_explain_cos"])
    assert set(logged["loss_explain_scale"]) == {1.0}  # projection alone caps nothing


def test_evaluate_with_explanations(distilled, capsys):
    run = distilled("gradient")
    (run / "metrics.json").unlink()
    assert cli_main("evaluate", run, "--explanations", "--max-eval-examples", "60",
                    "--max-explain-examples", "30") == 0
    metrics = read_json(run / "metrics.json")
    rho = metrics["explanations"]["consistency"]["spearman"]
    assert -1.0 <= rho <= 1.0
    assert "consistency spearman" in capsys.readouterr().err
    # another explainer goes beside gxi's metrics, which stay as they were
    assert cli_main("evaluate", run, "--explanations", "--explainer", "ig:steps=4", "--max-eval-examples", "60",
                    "--max-explain-examples", "30") == 0
    again = read_json(run / "metrics.json")
    assert again["explanations"] == metrics["explanations"]
    assert "IntegratedGradients(steps=4" in again["explanations_ig"]["explainer"]
    assert "explanations (ig:steps=4): consistency spearman" in " ".join(capsys.readouterr().err.split())


def test_explain_writes_a_page(distilled, tiny_teacher, glue_dir, tmp_path):
    out = tmp_path / "views"
    assert cli_main("explain", tiny_teacher, distilled("perturbation"), "--n", "3", "--out", out,
                    "--data-dir", glue_dir) == 0
    assert (out / "index.html").is_file()
    assert list(out.rglob("*.png"))


def test_cache_prints_the_entry_path(tiny_teacher, glue_dir, capsys):
    assert cli_main("cache", "--task", "sst2", "--teacher", tiny_teacher, "--explainer", "perturbation",
                    "--max-train-examples", "50", "--max-seq-length", "32", "--data-dir", glue_dir) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.endswith(".safetensors") and Path(printed).is_file()
