"""BiLSTM and CNN students distilled end to end through the CLI, saved, loaded back and re-predicted."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import cli_main, read_json, run_cli

pytestmark = pytest.mark.slow

FLAGS = ["--task", "sst2", "--max-train-examples", "100", "--max-eval-examples", "100", "--max-seq-length", "32",
         "--batch-size", "16", "--epochs", "1", "--learning-rate", "1e-3", "--log-with", "csv"]


def _distill(tmp_path_factory, teacher, glue_dir, student, method, explainer=None, subprocess=False):
    out = tmp_path_factory.mktemp("small") / "run"
    args = ["distill", "--teacher", teacher, "--student", student, "--method", method, "--data-dir", glue_dir,
            "--out", out, *FLAGS]
    if explainer:
        args += ["--explainer", explainer]
    if subprocess:
        run_cli(*args)
    else:
        assert cli_main(*args) == 0
    return out


def _reproduces(run, glue_dir, cls_name):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import egkd.models  # noqa: F401  (registers the small students)
    from egkd.data.glue import load_split

    model = AutoModelForSequenceClassification.from_pretrained(run).eval()
    assert type(model).__name__ == cls_name
    tokenizer = AutoTokenizer.from_pretrained(run)
    records = [json.loads(line) for line in (run / "predictions_dev.jsonl").read_text().splitlines()]
    ds = load_split("sst2", "dev", glue_dir, max_examples=len(records))
    enc = tokenizer(list(ds["text_a"]), truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        preds = model(**enc).logits.argmax(-1).tolist()
    assert preds == [r["prediction"] for r in records]
    metrics = read_json(run / "metrics.json")
    for key in ("accuracy", "fidelity_agreement", "parameters", "throughput", "compression", "speedup"):
        assert key in metrics, key
    assert metrics["parameters"] < metrics["teacher"]["parameters"]


@pytest.mark.parametrize("student,cls_name", [("bilstm:hidden=16,embed=16", "BiLSTMForSequenceClassification"),
                                              ("cnn:filters=8,kernels=2-3,embed=16", "CNNForSequenceClassification")])
def test_kd(student, cls_name, tiny_teacher, glue_dir, tmp_path_factory):
    run = _distill(tmp_path_factory, tiny_teacher, glue_dir, student, "kd")
    _reproduces(run, glue_dir, cls_name)


def test_bilstm_egkd_every_family_subprocess(tiny_teacher, glue_dir, tmp_path_factory, capsys):
    run = _distill(tmp_path_factory, tiny_teacher, glue_dir, "bilstm:hidden=16,embed=16,tokenizer=wordpiece-2k",
                   "egkd", "gradient+perturbation+selection", subprocess=True)
    _reproduces(run, glue_dir, "BiLSTMForSequenceClassification")
    history = read_json(run / "train_history.json")
    assert history
    # word-level evaluation of explanations against the teacher (its own tokenization of the same rows)
    assert cli_main("evaluate", run, "--explanations", "--max-eval-examples", "40") == 0
    e = read_json(run / "metrics.json")["explanations"]
    assert e["units"] == "word" and e["consistency"]["n_examples"] == 40
    assert -1.0 <= e["consistency"]["spearman"] <= 1.0
    # faithfulness on the student's own tokens, its own [MASK]; the teacher's on its own (evaluate scores both)
    assert e["faithfulness_units"] == "own tokens" and set(e["faithfulness"]) == {"student", "teacher"}
    for side in e["faithfulness"].values():
        assert side["n_examples"] == 40 and side["n_scored"] == 40
        assert -1.0 <= side["comprehensiveness"] <= 1.0 and -1.0 <= side["sufficiency"] <= 1.0
        assert -1.0 <= side["random_order"]["comprehensiveness"] <= 1.0
    shown = " ".join(capsys.readouterr().err.split())  # the CLI prints it, as for a transformer student
    assert "(on words); student comprehensiveness" in shown and "(random order: " in shown


def test_cnn_egkd_gradient_and_perturbation(tiny_teacher, glue_dir, tmp_path_factory, egkd_cache):
    run = _distill(tmp_path_factory, tiny_teacher, glue_dir, "cnn:filters=8,kernels=2-3,embed=16", "egkd",
                   "gradient+perturbation")
    _reproduces(run, glue_dir, "CNNForSequenceClassification")
    from safetensors import safe_open

    specs = []
    for path in (egkd_cache / "teacher").glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            specs.append(json.loads(f.metadata()["spec"]))
    assert {"family": "gradient", "target": "pred", "explainer": "gxi", "units": "word"} in specs
    assert any(s["family"] == "perturbation" and s.get("units") == "word" for s in specs)


def test_word_students_refuse_pkd(tiny_teacher, glue_dir, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("small") / "pkd"
    code = cli_main("distill", "--teacher", tiny_teacher, "--student", "cnn:filters=4", "--method", "pkd",
                    "--data-dir", glue_dir, "--out", out, *FLAGS)
    assert code != 0
    assert "own" in capsys.readouterr().err


def test_augmented_bilstm_learns_the_copies_from_the_teacher(tiny_teacher, glue_dir, tmp_path, capsys):
    """--augment adds teacher-labelled copies: the run trains on more rows than the slice, gold-less ones too."""
    out = tmp_path / "aug"
    assert cli_main("distill", "--teacher", tiny_teacher, "--student", "bilstm:hidden=16,embed=16", "--method",
                    "egkd", "--explainer", "gradient", "--augment", "2", "--data-dir", glue_dir, "--out", out,
                    *FLAGS) == 0
    shown = capsys.readouterr()
    n_train = int(re.search(r"on\s+sst2\s+\((\d+)\s+train", shown.out + shown.err).group(1))
    assert 100 < n_train <= 300
    assert (out / "model.safetensors").is_file()
    assert cli_main("distill", "--teacher", tiny_teacher, "--student", "layers:1", "--method", "ft", "--augment",
                    "1", "--data-dir", glue_dir, "--out", tmp_path / "ft", *FLAGS) == 2
