"""The teacher cache: the frozen teacher's outputs and explanations, computed once and reused by every run.

The teacher is frozen and the inputs are fixed, so its logits and explanations never change: computing them
once removes the teacher's forward and backward passes from every later training step. An entry is keyed on
(teacher weights, tokenized data, explainer family and its parameters, max length); a file whose stored key
differs is rebuilt, never used. Entries are safetensors files (no pickle).

Contents per family, one row per training example, in dataset order, padded to ``max_seq_length``:

* always: ``logits [N, C]``, ``target [N]`` (the explained class), ``idx [N]``;
* ``gradient``: ``map [N, L]`` (saliency, gradient x input or integrated gradients);
* ``perturbation``: ``map [N, L]`` (leave-one-unit-out scores) and ``occluded [N, L, C]``, the teacher's
  output distribution with unit u occluded (``occluded[:, u]``, units numbered as in :func:`unit_index`;
  NaN for units a ``max_units`` cache did not occlude);
* ``selection``: ``rationale [N, L]`` (uint8), ``on_rationale [N, C]`` and ``on_complement [N, C]``, the
  teacher's outputs on the rationale alone and on everything but the rationale.

Building is resumable (finished shards are kept in ``<key>.partial/``) and splits across processes under
``accelerate launch`` (shard i goes to process i mod world size).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader

from egkd.data.tokenize import Collator
from egkd.errors import EgkdError
from egkd.explain import get_explainer, rationale_inputs, top_r_rationale, unit_mask
from egkd.explain.base import model_inputs, resolve_target
from egkd.explain.occlusion import Occlusion
from egkd.locks import exclusive
from egkd.paths import cache_root
from egkd.reports.console import Bar, console

FORMAT = 1
FAMILIES = ("logits", "gradient", "perturbation", "selection")


@dataclass(frozen=True)
class CacheSpec:
    """What to compute: a family, its explainer spec, the target kind and (selection) the budget."""

    family: str = "logits"
    explainer: str = "gxi"  # gradient: saliency | gxi | ig[:steps=..]; selection: the map that top-r ranks
    target: str = "pred"  # pred | gold | all (gradient family: one map per class)
    budget: float = 0.2  # selection: fraction of units in the rationale
    selector: str = "topr"  # selection: topr (top-r of the explainer's map) | amortized
    units: str = "token"  # token | word: maps over words (students with another tokenizer), see _word_outputs
    max_units: int = 0  # perturbation: occlude at most this many sampled units per example (0: all)

    def describe(self) -> dict[str, Any]:
        d = {"family": self.family, "target": self.target}
        if self.family in ("gradient", "selection"):
            d["explainer"] = self.explainer
        if self.family == "selection":
            d.update(budget=self.budget, selector=self.selector)
        if self.units != "token":
            d["units"] = self.units
        if self.family == "perturbation" and self.max_units:
            d["max_units"] = self.max_units
        return d


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (names, shapes, bytes): changes whenever the teacher does."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(teacher_fp: str, data_fp: str, spec: CacheSpec, max_seq_length: int) -> str:
    payload = {"format": FORMAT, "teacher": teacher_fp, "data": data_fp, "spec": spec.describe(),
               "max_seq_length": max_seq_length}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


class TeacherCache:
    """A loaded cache entry: per-row tensors plus a lookup from a batch's ``idx`` to rows."""

    def __init__(self, tensors: dict[str, Tensor], key: str, path: Path) -> None:
        self.tensors, self.key, self.path = tensors, key, path
        idx = tensors["idx"].long()
        self.row_of = torch.full((int(idx.max()) + 1,), -1, dtype=torch.long)
        self.row_of[idx] = torch.arange(len(idx))

    def info(self) -> dict[str, Any]:
        """What building this entry cost (from its metadata): key, rows and seconds, for run records."""
        with safe_open(str(self.path), framework="pt") as f:
            meta = f.metadata() or {}
        return {"key": self.key, "rows": int(meta.get("rows", 0)), "seconds": float(meta.get("seconds", "nan")),
                "spec": json.loads(meta.get("spec", "{}"))}

    def rows(self, batch: dict[str, Tensor], names: tuple[str, ...], length: int | None = None) -> dict[str, Tensor]:
        """The cached entries of the batch's examples, per-token ones cut to the batch's length."""
        rows = self.row_of[batch["idx"].cpu()]
        if (rows < 0).any():
            raise EgkdError(f"the teacher cache {self.path} lacks some examples of this batch; rebuild it")
        device = batch["input_ids"].device
        length = length or batch["input_ids"].shape[1]
        out = {}
        for n in names:
            t = self.tensors[n][rows]
            if n in ("map", "occluded", "rationale"):
                t = t[:, :length]
            out[n] = t.to(device)
        return out


def _batch_outputs(teacher, batch: dict[str, Tensor], spec: CacheSpec, pad_id: int, mask_id: int | None,
                   max_len: int) -> dict[str, Tensor]:
    """The cache rows of one batch (padded to ``max_len`` along tokens)."""
    if spec.units == "word":
        from egkd.cache_words import word_outputs

        return word_outputs(teacher, batch, spec, pad_id, mask_id, max_len)
    with torch.no_grad():
        logits = teacher(**model_inputs(batch, teacher)).logits.float()
    target = resolve_target("pred" if spec.target == "all" else spec.target, logits, batch.get("labels"))
    b, length = batch["input_ids"].shape
    out: dict[str, Tensor] = {"logits": logits, "target": target, "idx": batch["idx"]}

    def pad(t: Tensor, value: float = 0.0) -> Tensor:
        shape = (b, max_len, *t.shape[2:])
        full = t.new_full(shape, value)
        full[:, :length] = t
        return full

    if spec.family == "gradient" and spec.target == "all":  # multi-view: one map per class, [B, L, C]
        explainer = get_explainer(spec.explainer)
        maps = [explainer.attribute(teacher, batch, torch.full_like(target, c)).float()
                for c in range(logits.shape[-1])]
        out["map"] = pad(torch.stack(maps, -1))
    elif spec.family == "gradient":
        out["map"] = pad(get_explainer(spec.explainer).attribute(teacher, batch, target).float())
    elif spec.family == "perturbation":
        occ = Occlusion(mode="mask", mask_token_id=mask_id, max_units=spec.max_units)
        scores, occluded = occ.attribute_with_outputs(teacher, batch, target)  # [B, L], [B, U, C], U <= L
        occluded = occluded.float()
        out["map"] = pad(scores.float())
        full = occluded.new_zeros(b, max_len, occluded.shape[-1])
        full[:, : occluded.shape[1]] = occluded
        out["occluded"] = full
    elif spec.family == "selection":
        scores = get_explainer(spec.explainer).attribute(teacher, batch, target).float()
        rationale = top_r_rationale(scores.abs(), unit_mask(batch), spec.budget)
        out["rationale"] = pad(rationale.to(torch.uint8))
        for name, keep in (("on_rationale", True), ("on_complement", False)):  # teacher logits on each input
            r_in = rationale_inputs(batch, rationale, keep=keep, pad_token_id=pad_id)
            with torch.no_grad():
                out[name] = teacher(**model_inputs(r_in, teacher)).logits.float()
    return out


SHARD_ROWS = 512


def build_teacher_cache(teacher, tokenizer, dataset, spec: CacheSpec, max_seq_length: int,
                        batch_size: int = 32, root: Path | None = None, show: bool = True) -> TeacherCache:
    """Load the entry for (teacher, data, spec, length), computing the missing part if needed.

    The entry is built in shards of :data:`SHARD_ROWS` examples under ``<key>.partial/``, each claimed by a file
    lock, so that every process that needs the entry at the same time builds a share of it: two grid processes
    on one task, or the ranks of one ``accelerate launch``. (Before, a second grid process waited up to 40
    minutes, idle, while the first built a perturbation entry alone.) An interrupted build resumes from its
    finished shards; whoever finds every shard finished merges them, under the entry's own lock.
    """
    if spec.family not in FAMILIES:
        raise EgkdError(f"unknown cache family {spec.family!r}; choose one of {', '.join(FAMILIES)}")
    state = PartialState()
    root = Path(root or cache_root() / "teacher")
    key = cache_key(weights_fingerprint(teacher), dataset._fingerprint, spec, max_seq_length)
    path, partial, lock = root / f"{key}.safetensors", root / f"{key}.partial", root / f".{key}.lock"
    if state.is_main_process:
        with exclusive(lock):
            if path.is_file() and not _holds(path, key):
                path.unlink()  # a file whose key does not match is never used
    state.wait_for_everyone()
    if path.is_file():
        if show and state.is_main_process:
            console.print(f"teacher cache hit: {spec.family} ({path.name})")
        return TeacherCache(load_file(str(path)), key, path)

    teacher_was_training = teacher.training
    teacher.eval()
    _build_shards(teacher, tokenizer, dataset, spec, max_seq_length, batch_size, partial, path, key,
                  show and state.is_main_process)
    teacher.train(teacher_was_training)
    state.wait_for_everyone()
    if state.is_main_process:
        with exclusive(lock):
            if not path.is_file():  # another run that found every shard finished may have merged them already
                seconds = _merge_shards(partial, path, key, spec, len(dataset))
                if show:
                    console.print(f"teacher cache built: {spec.family}, {len(dataset)} examples in {seconds:.1f} s "
                                  f"({1000 * seconds / max(1, len(dataset)):.1f} s per 1,000)")
            shutil.rmtree(partial, ignore_errors=True)
    state.wait_for_everyone()
    return TeacherCache(load_file(str(path)), key, path)


def _holds(path: Path, key: str) -> bool:
    """Whether the entry file at ``path`` was written for ``key`` (its stored key; never trust the name)."""
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("key") == key


def _build_shards(teacher, tokenizer, dataset, spec: CacheSpec, max_seq_length: int, batch_size: int,
                  partial: Path, path: Path, key: str, show: bool) -> None:
    """Compute the shards no one has finished: first those no other process holds (without waiting), then,
    waiting on each, those that others were building (and any whose builder died). Stops early once the whole
    entry exists (another run merged it)."""
    state = PartialState()
    n_shards = (len(dataset) + SHARD_ROWS - 1) // SHARD_ROWS
    # the ranks of one accelerate launch start on different shards; separate runs meet through the locks
    order = sorted(range(n_shards), key=lambda i: (i % state.num_processes != state.process_index, i))
    finished = {i for i in range(n_shards) if _shard(partial, i).is_file()}  # by an interrupted build, say
    bar = Bar(f"teacher cache ({spec.family})", total=len(dataset), enabled=show,
              completed=sum(_rows(len(dataset), i) for i in finished))
    said: list[bool] = []

    def say_wait() -> None:
        if show and not said:
            said.append(True)
            console.print(f"another run is building part of the teacher cache entry {key} ({spec.family}); "
                          "waiting for that part (this run has built the rest)")

    for wait in (False, True):
        for i in order:
            if path.is_file():
                break
            if i not in finished and not _shard(partial, i).is_file():
                partial.mkdir(parents=True, exist_ok=True)
                with exclusive(partial / f".{i:06d}.lock", wait=wait, on_wait=say_wait) as mine:
                    if not mine or path.is_file():
                        continue
                    if not _shard(partial, i).is_file():  # free, or left unfinished by a holder that died
                        _build_shard(teacher, tokenizer, dataset, spec, max_seq_length, batch_size, partial, i)
            if i not in finished:
                finished.add(i)
                bar.update(_rows(len(dataset), i))
    bar.close()


def _shard(partial: Path, i: int) -> Path:
    return partial / f"{i:06d}.safetensors"


def _rows(n: int, i: int) -> int:
    """How many examples shard ``i`` of ``n`` holds."""
    return min(n, (i + 1) * SHARD_ROWS) - i * SHARD_ROWS


def _build_shard(teacher, tokenizer, dataset, spec: CacheSpec, max_seq_length: int, batch_size: int,
                 partial: Path, i: int) -> None:
    """Compute shard ``i`` and write it atomically, with the seconds it took (summed into the entry's cost)."""
    start = time.perf_counter()
    device = next(teacher.parameters()).device
    shard = dataset.select(range(i * SHARD_ROWS, i * SHARD_ROWS + _rows(len(dataset), i)))
    parts: dict[str, list[Tensor]] = {}
    for batch in DataLoader(shard, batch_size=batch_size, collate_fn=Collator(tokenizer)):
        batch = {k: v.to(device) for k, v in batch.items()}
        for name, t in _batch_outputs(teacher, batch, spec, tokenizer.pad_token_id or 0, tokenizer.mask_token_id,
                                      max_seq_length).items():
            parts.setdefault(name, []).append(t.detach().cpu())
    tmp = partial / f".{i:06d}.tmp"
    save_file({k: torch.cat(v).contiguous() for k, v in parts.items()}, str(tmp),
              metadata={"seconds": f"{time.perf_counter() - start:.3f}"})
    tmp.rename(_shard(partial, i))


def _merge_shards(partial: Path, path: Path, key: str, spec: CacheSpec, n_rows: int) -> float:
    """Write the entry from its finished shards; returns its cost: the shards' seconds, whoever built them."""
    n_shards = (n_rows + SHARD_ROWS - 1) // SHARD_ROWS
    shards, seconds = [], 0.0
    for i in range(n_shards):
        with safe_open(str(_shard(partial, i)), framework="pt") as f:
            seconds += float((f.metadata() or {}).get("seconds", 0.0))  # shards of older builds did not say
        shards.append(load_file(str(_shard(partial, i))))
    tensors = {k: torch.cat([s[k] for s in shards]).contiguous() for k in shards[0]}
    meta = {"key": key, "spec": json.dumps(spec.describe()), "rows": str(n_rows), "seconds": f"{seconds:.3f}"}
    tmp = path.parent / f".{key}.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    tmp.rename(path)
    return seconds
