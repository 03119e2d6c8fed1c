"""Data-parallel distillation on CPU under ``accelerate launch`` with two processes.

``accelerate launch --cpu --num_processes 2`` starts ONE process unless MPI is set up (accelerate 1.x: its
simple launcher), so it would not test distribution at all. Two CPU processes come from the multi-process
launcher (torchrun underneath) with ``ACCELERATE_USE_CPU=1``; the test checks that the work really was split.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import TINY_RUN_FLAGS, read_json

pytestmark = pytest.mark.slow


def test_distill_two_cpu_processes(tiny_teacher, glue_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "egkd.cli", "distill", "--teacher", str(tiny_teacher), "--student", "layers:1", "--method", "kd",
           "--epochs", "1", "--learning-rate", "1e-3", "--data-dir", str(glue_dir), "--out", str(out),
           *TINY_RUN_FLAGS]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]
    metrics = read_json(out / "metrics.json")
    for key in ("accuracy", "fidelity_agreement", "parameters", "throughput"):
        assert key in metrics, key
    # 200 examples in batches of 16 = 13 batches; split over 2 processes each takes 7 optimizer steps
    assert metrics["training"]["steps"] == 7
    assert proc.stderr.count("distilling ") == 1  # only the main process reports
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 1
    assert (out / "checkpoints" / "last" / "rng_0.pt").is_file()
    assert (out / "checkpoints" / "last" / "rng_1.pt").is_file()
