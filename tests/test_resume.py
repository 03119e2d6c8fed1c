"""A run killed right after a checkpoint and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import TINY_RUN_FLAGS, cli_main, load_tensors, read_json, run_cli

pytestmark = pytest.mark.slow

TASK_METRICS = ("task", "split", "n_examples", "accuracy", "fidelity_agreement")


def _args(teacher, glue_dir, out):
    # 2 epochs of 13 steps; --save-every 5 puts the first checkpoint mid-epoch (step 5), so resuming must
    # also skip the batches already seen in that epoch and restore the RNG state of the dropout
    return ["distill", "--teacher", teacher, "--student", "layers:1", "--method", "kd", "--epochs", "2",
            "--learning-rate", "1e-3", "--save-every", "5", "--seed", "7", "--data-dir", glue_dir, "--out", out,
            *TINY_RUN_FLAGS]


@pytest.fixture(scope="module")
def runs(tiny_teacher, glue_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    full, resumed = root / "full", root / "resumed"
    assert cli_main(*_args(tiny_teacher, glue_dir, full)) == 0
    crashed = run_cli(*_args(tiny_teacher, glue_dir, resumed), env={"EGKD_CRASH_AFTER_CHECKPOINT": "1"},
                      check=False)
    assert crashed.returncode == 137, crashed.stderr[-3000:]
    state = read_json(resumed / "checkpoints" / "last" / "state.json")
    assert (state["epoch"], state["step"], state["batch_in_epoch"]) == (0, 5, 5)
    assert not (resumed / "metrics.json").exists()
    assert cli_main("distill", "--out", resumed, "--resume") == 0
    return full, resumed


def test_resumed_weights_equal_uninterrupted(runs):
    full, resumed = runs
    a, b = load_tensors(full / "model.safetensors"), load_tensors(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key


def test_resumed_metrics_equal_uninterrupted(runs):
    full, resumed = runs
    m_full, m_resumed = read_json(full / "metrics.json"), read_json(resumed / "metrics.json")
    for key in TASK_METRICS:
        assert m_full[key] == m_resumed[key], key
    assert m_full["training"]["steps"] == m_resumed["training"]["steps"] == 26
    assert m_full["training"]["best_step"] == m_resumed["training"]["best_step"]
    assert read_json(full / "train_history.json") == read_json(resumed / "train_history.json")
    assert (full / "predictions_dev.jsonl").read_text() == (resumed / "predictions_dev.jsonl").read_text()


def test_resume_with_other_learning_rate_is_refused(runs, capsys):
    _, resumed = runs
    before = (resumed / "config.yaml").read_text()
    weights = (resumed / "model.safetensors").read_bytes()
    code = cli_main("distill", "--out", resumed, "--resume", "--learning-rate", "5e-3")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("egkd: error:") and "other settings" in err[-1]
    assert "Traceback" not in "\n".join(err)
    # the refused attempt leaves the run as it was, so a plain --resume still works afterwards
    assert yaml.safe_load((resumed / "config.yaml").read_text())["learning_rate"] == pytest.approx(1e-3)
    assert (resumed / "config.yaml").read_text() == before
    assert (resumed / "model.safetensors").read_bytes() == weights


class _FlatBuffer(torch.nn.Module):
    """Two parameters that are views of one buffer, as cuDNN lays out an LSTM's weights on a GPU."""

    def __init__(self, fill: float) -> None:
        super().__init__()
        flat = torch.arange(10, dtype=torch.float32) + fill
        self.a = torch.nn.Parameter(flat[:4])
        self.b = torch.nn.Parameter(flat[4:])


def test_weights_that_are_views_of_one_buffer_round_trip(tmp_path):
    from safetensors.torch import save_model

    from egkd.training.checkpoint import load_weights, save_weights

    src, dst = _FlatBuffer(0.0), _FlatBuffer(100.0)
    assert src.a.untyped_storage().data_ptr() == src.b.untyped_storage().data_ptr()
    with pytest.raises(RuntimeError):  # what the checkpoint used before, and why it was replaced
        save_model(src, str(tmp_path / "refused.safetensors"))
    save_weights(src, tmp_path / "model.safetensors")
    load_weights(dst, tmp_path / "model.safetensors")
    torch.testing.assert_close(dst.a, src.a)
    torch.testing.assert_close(dst.b, src.b)
    with pytest.raises(RuntimeError, match="Missing key"):  # strict: a checkpoint of another model is refused
        load_weights(torch.nn.Linear(2, 2), tmp_path / "model.safetensors")
