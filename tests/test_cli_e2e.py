"""The whole pipeline through the command line: finetune (fixture) -> distill -> evaluate -> predict.

The distillation runs as a real ``python -m egkd.cli`` subprocess; the later commands go through the same entry
point (``egkd.cli.main``) in this process, which saves a few seconds of imports each.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_RUN_FLAGS, cli_main, read_json, run_cli

from egkd.config import RunConfig, build_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def student_run(tiny_teacher, glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "student"
    run_cli("distill", "--teacher", tiny_teacher, "--student", "layers:1", "--method", "kd", "--epochs", "1",
            "--learning-rate", "1e-3", "--data-dir", glue_dir, "--out", out, *TINY_RUN_FLAGS)
    return out


def test_distill_writes_a_run(student_run):
    for name in ("config.yaml", "metrics.json", "model.safetensors", "config.json", "tokenizer.json",
                 "predictions_dev.jsonl", "train_history.json", "README.md"):
        assert (student_run / name).is_file(), name
    assert (student_run / "checkpoints" / "last" / "state.json").is_file()
    assert not (student_run / "best").exists()


def test_evaluate_metrics(student_run, tiny_teacher, capsys):
    (student_run / "metrics.json").unlink()
    assert cli_main("evaluate", student_run, "--max-eval-examples", "300") == 0
    metrics = read_json(student_run / "metrics.json")
    assert metrics["task"] == "sst2" and metrics["split"] == "dev"
    assert metrics["n_examples"] == 300  # not the run's 200: evaluate takes its own --max-eval-examples
    for key in ("accuracy", "fidelity_agreement", "parameters", "throughput", "teacher", "compression", "speedup"):
        assert key in metrics, key
    assert 0.0 <= metrics["accuracy"] <= 100.0
    assert 0.0 <= metrics["fidelity_agreement"] <= 100.0
    assert metrics["throughput"] > 0
    # a 1-layer student of a 2-layer teacher: fewer parameters, same embeddings
    assert 1.0 < metrics["compression"] < 2.0
    assert metrics["parameters"] < metrics["teacher"]["parameters"]
    shown = capsys.readouterr()
    assert "accuracy" in shown.out + shown.err


def test_student_folder_loads_and_reproduces_predictions(student_run, glue_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from egkd.data.glue import load_split

    model = AutoModelForSequenceClassification.from_pretrained(student_run).eval()
    tokenizer = AutoTokenizer.from_pretrained(student_run)
    assert model.config.num_hidden_layers == 1
    records = [json.loads(line) for line in (student_run / "predictions_dev.jsonl").read_text().splitlines()]
    metrics = read_json(student_run / "metrics.json")
    assert len(records) == metrics["n_examples"]
    ds = load_split("sst2", "dev", glue_dir, max_examples=len(records))
    enc = tokenizer(list(ds["text_a"]), truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        preds = model(**enc).logits.argmax(-1).numpy()
    assert [r["idx"] for r in records] == list(ds["idx"])
    assert [r["label"] for r in records] == list(ds["label"])
    assert preds.tolist() == [r["prediction"] for r in records]
    teacher_preds = np.array([r["teacher_prediction"] for r in records])
    assert metrics["fidelity_agreement"] == pytest.approx(100.0 * np.mean(preds == teacher_preds))
    assert metrics["accuracy"] == pytest.approx(100.0 * np.mean(preds == np.array(ds["label"])))


def test_config_yaml_round_trips(student_run, tiny_teacher):
    saved = yaml.safe_load((student_run / "config.yaml").read_text())
    cfg = build_config(student_run / "config.yaml")
    assert cfg.to_dict() == saved
    assert set(saved) == set(RunConfig().to_dict())
    assert (cfg.task, cfg.student, cfg.method, cfg.max_seq_length, cfg.max_train_examples) == (
        "sst2", "layers:1", "kd", 32, 200)
    assert cfg.teacher == str(tiny_teacher)
    assert cfg.learning_rate == pytest.approx(1e-3)


def test_predict_test_split(student_run, tmp_path):
    out = tmp_path / "SST-2.tsv"
    assert cli_main("predict", student_run, "--split", "test", "--out", out) == 0
    with out.open() as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["index", "prediction"]
    assert len(rows) == 1821 + 1
    assert [int(r[0]) for r in rows[1:]] == list(range(1821))
    assert {r[1] for r in rows[1:]} <= {"0", "1"}


def test_yaml_config_with_flag_override(tiny_teacher, glue_dir, tmp_path):
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(yaml.safe_dump({
        "task": "sst2", "teacher": str(tiny_teacher), "student": "layers:0", "method": "kd",
        "data-dir": str(glue_dir), "max_train_examples": 32, "max-eval-examples": 32, "max_seq_length": 16,
        "epochs": 1, "batch_size": 16, "alpha": 0.25, "temperature": 3.0, "log_with": "csv",
    }))
    out = tmp_path / "run"
    assert cli_main("distill", "--config", run_yaml, "--alpha", "0.75", "--out", out) == 0
    cfg = build_config(out / "config.yaml")
    assert cfg.alpha == 0.75  # the flag overrides the YAML
    assert cfg.temperature == 3.0  # YAML values the flags leave alone survive
    assert cfg.student == "layers:0" and cfg.max_seq_length == 16 and cfg.max_train_examples == 32
    assert read_json(out / "metrics.json")["n_examples"] == 32
