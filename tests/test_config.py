"""Run configuration: defaults <- YAML <- explicit options."""

from __future__ import annotations

import pytest

from egkd.config import RunConfig, build_config, load_yaml
from egkd.errors import EgkdError


def test_defaults():
    cfg = build_config()
    assert cfg == RunConfig()


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: mrpc\nlearning_rate: 0.001\nepochs: 2\nalpha: 0.5\n")
    cfg = build_config(path, alpha=0.8, epochs=None)
    assert cfg.task == "mrpc"  # from YAML
    assert cfg.learning_rate == 0.001  # from YAML
    assert cfg.epochs == 2  # None means "not given": YAML survives
    assert cfg.alpha == 0.8  # override wins
    assert cfg.batch_size == RunConfig().batch_size  # default


def test_dashes_in_yaml_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("max-seq-length: 64\nmax_train_examples: 10\nlog-with: csv\n")
    cfg = build_config(path)
    assert cfg.max_seq_length == 64
    assert cfg.max_train_examples == 10
    assert cfg.log_with == ["csv"]
    assert load_yaml(path)["max_seq_length"] == 64


def test_unknown_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("task: sst2\nlearnig_rate: 0.1\n")
    with pytest.raises(EgkdError, match="learnig_rate"):
        build_config(path)
    with pytest.raises(EgkdError, match="colour"):
        build_config(colour="red")


@pytest.mark.parametrize("text", ["task: [sst2\n", "- a\n- b\n"])
def test_bad_yaml(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(EgkdError):
        build_config(path)


def test_missing_yaml(tmp_path):
    with pytest.raises(EgkdError, match="does not exist"):
        build_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"learning_rate": -1.0}, {"alpha": 1.5}, {"mixed_precision": "fp8"},
                                 {"align_loss": "spearman"}])
def test_invalid_values(bad):
    with pytest.raises(EgkdError):
        build_config(**bad)


def test_save_round_trip(tmp_path):
    cfg = build_config(task="rte", alpha=0.3, log_with="csv,tensorboard", max_train_examples=7)
    cfg.save(tmp_path / "config.yaml")
    again = build_config(tmp_path / "config.yaml")
    assert again == cfg
    assert again.log_with == ["csv", "tensorboard"]


def test_an_unknown_alignment_loss_is_refused_before_training_and_names_the_known_ones():
    with pytest.raises(EgkdError, match="--align-loss must be one of mse, cosine, kl, topk, rank, not 'l1'"):
        build_config(align_loss="l1")
    assert build_config(align_loss="rank").align_loss == "rank"
