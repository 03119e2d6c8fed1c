"""Bad input ends with one line ``egkd: error: ...`` on stderr and exit status 2, never a traceback.

The first case runs ``python -m egkd.cli`` in a subprocess (real exit status and stderr); the others call the
same entry point, ``egkd.cli.main``, in this process to save the imports of a new interpreter each.
"""

from __future__ import annotations

import re

import pytest
from conftest import TINY_RUN_FLAGS, TINY_TEACHER_MODEL, cli_main, run_cli


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("egkd: error:")]
    assert len(errors) == 1, err[-3000:]
    assert lines[-1] == errors[0], err[-3000:]
    return errors[0]


def test_unknown_task_subprocess(tmp_path):
    proc = run_cli("finetune", "--task", "sst3", "--model", TINY_TEACHER_MODEL, "--out", tmp_path / "run",
                   check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr  # exactly one line
    line = _one_error_line(proc.stderr)
    assert "unknown task 'sst3'" in line and "sst2" in line


def _fails(capsys, *args: str) -> str:
    code = cli_main(*args)
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    return _one_error_line(err)


def test_missing_data_folder(capsys, tmp_path, minilm_path):
    line = _fails(capsys, "finetune", "--model", TINY_TEACHER_MODEL, "--data-dir", "/nonexistent/glue",
                  "--out", tmp_path / "run", *TINY_RUN_FLAGS)
    assert "/nonexistent/glue" in line and "does not exist" in line


def test_tsv_without_expected_columns(capsys, tmp_path, minilm_path):
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("text\tpolarity\na fine film\t1\na dull film\t0\n")
    line = _fails(capsys, "finetune", "--model", TINY_TEACHER_MODEL, "--data-dir", tmp_path / "glue",
                  "--out", tmp_path / "run", *TINY_RUN_FLAGS)
    assert "train.tsv" in line and "missing column 'sentence'" in line and "text, polarity" in line


def test_teacher_with_other_label_count(capsys, tmp_path, tiny_teacher, glue_dir):
    line = _fails(capsys, "distill", "--task", "stsb", "--teacher", tiny_teacher, "--student", "layers:1",
                  "--data-dir", glue_dir, "--out", tmp_path / "run", "--max-seq-length", "32")
    assert "2 output(s)" in line and "stsb needs 1" in line


def test_existing_output_folder_without_overwrite(capsys, tmp_path, tiny_teacher):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    line = _fails(capsys, "distill", "--teacher", tiny_teacher, "--student", "layers:1", "--out", out)
    assert "already holds a run" in line and "--overwrite" in line
    assert (out / "metrics.json").read_text() == "{}"  # untouched


@pytest.mark.parametrize("args, expected", [
    (["--method", "magic"], "unknown method 'magic'"),
    (["--student", "layers:5"], "do not exist"),
    (["--alpha", "2"], "--alpha"),
])
def test_bad_distill_options(capsys, tmp_path, tiny_teacher, glue_dir, args, expected):
    line = _fails(capsys, "distill", "--teacher", tiny_teacher, "--student", "layers:1", "--data-dir", glue_dir,
                  "--out", tmp_path / "run", *TINY_RUN_FLAGS, *args)
    assert expected in line


@pytest.mark.slow
def test_nan_loss_is_a_clear_error(capsys, tmp_path, tiny_teacher, glue_dir):
    # the learning rate makes the weights overflow within a few steps; the loop must stop with a clear message
    out = tmp_path / "run"
    line = _fails(capsys, "distill", "--teacher", tiny_teacher, "--student", "layers:1", "--method", "kd",
                  "--learning-rate", "1e10", "--warmup-ratio", "0", "--max-grad-norm", "0", "--epochs", "1",
                  "--data-dir", glue_dir, "--out", out, *TINY_RUN_FLAGS)
    assert re.search(r"\b(nan|inf)\b", line), line
    assert "--learning-rate" in line
    assert not (out / "metrics.json").exists()
