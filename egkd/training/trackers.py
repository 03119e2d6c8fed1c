"""The Accelerator of a run, with its trackers: TensorBoard (accelerate's) and a plain CSV file (ours)."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.tracking import GeneralTracker, on_main_process

from egkd.config import RunConfig


class CSVTracker(GeneralTracker):
    """Appends every logged dict to ``logs/metrics.csv`` (long format: step, name, value), readable anywhere."""

    name = "csv"
    requires_logging_directory = True

    @on_main_process
    def __init__(self, run_name: str, logging_dir: str | Path) -> None:
        super().__init__()
        self.path = Path(logging_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.write_text("step,name,value\n")

    @property
    def tracker(self) -> Path:
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict[str, Any]) -> None:
        pass

    @on_main_process
    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    writer.writerow([step, k, v])


def process_state() -> PartialState:
    """The process state; the first call decides whether this is one of several CPU processes.

    Accelerate's ``PartialState`` becomes multi-CPU only when created with ``cpu=True`` and, unlike
    ``Accelerator``, ignores ``ACCELERATE_USE_CPU``. Created bare, the processes of a CPU-only launch
    (``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu``, ``torchrun``) each believed they were the only
    (main) process and raced on the same run folder and teacher cache.
    """
    from accelerate.utils import parse_flag_from_env

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or (several and not torch.cuda.is_available()))


def make_accelerator(cfg: RunConfig, out_dir: Path) -> Accelerator:
    """One Accelerator per run; trackers write under ``out_dir/logs``."""
    process_state()
    logs = out_dir / "logs"
    trackers: list[Any] = []
    if "csv" in cfg.log_with:
        trackers.append(CSVTracker("egkd", logs))
    if "tensorboard" in cfg.log_with:
        trackers.append("tensorboard")
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=trackers or None,
        project_dir=str(logs),
    )
    flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in cfg.to_dict().items()}
    accelerator.init_trackers("egkd", config=flat)
    return accelerator
