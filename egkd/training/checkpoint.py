"""Atomic, safely loadable training checkpoints.

Why not ``accelerator.save_state``: it pickles RNG states (numpy arrays) that cannot be read back with
``torch.load(weights_only=True)``, and it writes in place, so a run killed mid-write leaves a half checkpoint.
Here the weights go to safetensors, everything else to plain tensors/lists loadable with ``weights_only=True``,
and a checkpoint is written into a temporary folder and renamed into place. Each checkpoint records the key
of the run that wrote it; resuming under another key is refused rather than silently continued.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from egkd.errors import EgkdError

CHECKPOINTS = "checkpoints"  # a run folder's resume checkpoints live in RUN/checkpoints/last
LAST = "last"


def checkpoint_dir(run_dir: Path) -> Path:
    """Where a run folder keeps its resume checkpoints (the loop writes them, the grid reads and deletes them)."""
    return Path(run_dir) / CHECKPOINTS


def can_resume(run_dir: Path) -> bool:
    """Whether a run folder holds a complete checkpoint to resume from (a half-written one is never renamed in)."""
    return (checkpoint_dir(run_dir) / LAST).is_dir()


def rng_state() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [version, list(mt), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],  # dropout on a GPU
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's state dict as safetensors, every tensor a plain CPU copy.

    Not safetensors' ``save_model``/``load_model``: they refuse tensors that share memory without covering all
    of it, which is how cuDNN keeps an LSTM's weights on a GPU (views of one flat buffer; the BiLSTM student
    could not checkpoint on an H200). Tied weights, if any, are stored under each name and loaded back into both.
    """
    save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}, str(path))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load :func:`save_weights` output; every parameter and buffer must be there (strict)."""
    model.load_state_dict(load_file(str(path)))


def save_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    is_main: bool,
    rank: int,
    barrier: Any,
) -> Path:
    """Write ``folder/last`` atomically. Every process writes its own RNG state; the main one the rest."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".incoming"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    torch.save(rng_state(), tmp / f"rng_{rank}.pt")
    barrier()
    if is_main:
        save_weights(model, tmp / "model.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        final = folder / LAST
        old = Path(tempfile.mkdtemp(dir=folder, prefix=".old-"))
        if final.exists():
            os.replace(final, old / LAST)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    barrier()
    return folder / LAST


def load_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    key: str,
    rank: int,
) -> dict[str, Any] | None:
    """Restore ``folder/last`` into the objects; return its state dict, or None if there is no checkpoint."""
    ckpt = folder / LAST
    if not (ckpt / "state.json").is_file():
        return None
    state = json.loads((ckpt / "state.json").read_text())
    if state.get("key") != key:
        raise EgkdError(
            f"the checkpoint in {ckpt} was written by a run with other settings; resume with the same "
            "options, or start again with --overwrite"
        )
    load_weights(model, ckpt / "model.safetensors")
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
    rng_file = ckpt / f"rng_{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    return state
