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
from contextlib import nullcontext
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


def build_teacher_cache(teacher, tokenizer, dataset, spec: CacheSpec, max_seq_length: int,
                        batch_size: int = 32, root: Path | None = None, show: bool = True) -> TeacherCache:
    """Load the entry for (teacher, data, spec, length), computing the missing part if needed."""
    if spec.family not in FAMILIES:
        raise EgkdError(f"unknown cache family {spec.family!r}; choose one of {', '.join(FAMILIES)}")
    state = PartialState()
    root = Path(root or cache_root() / "teacher")
    key = cache_key(weights_fingerprint(teacher), dataset._fingerprint, spec, max_seq_length)
    path = root / f"{key}.safetensors"
    # Two separate runs (two grid processes, say) may need the same entry at once: the second waits until the
    # first has finished it, then loads it, instead of writing into the same partial folder. The ranks of one
    # accelerate launch share a build through their shards, so only the main process takes the lock.
    def say_wait() -> None:
        if show:
            console.print(f"waiting for another run to finish building the teacher cache entry {key} "
                          f"({spec.family}); it is loaded once built")

    lock = exclusive(root / f".{key}.lock", on_wait=say_wait) if state.is_main_process else nullcontext()
    with lock:
        state.wait_for_everyone()  # the other ranks wait while the main process waits for another run's build
        if path.is_file():
            with safe_open(str(path), framework="pt") as f:
                stored = (f.metadata() or {}).get("key")
            if stored == key:
                if show and state.is_main_process:
                    console.print(f"teacher cache hit: {spec.family} ({path.name})")
                return TeacherCache(load_file(str(path)), key, path)
            if state.is_main_process:
                path.unlink()  # a file whose key does not match is never used

        partial = root / f"{key}.partial"
        if state.is_main_process:
            partial.mkdir(parents=True, exist_ok=True)
        state.wait_for_everyone()
        collate = Collator(tokenizer)
        shard_rows = 512
        n_shards = (len(dataset) + shard_rows - 1) // shard_rows
        mine = [i for i in range(n_shards) if i % state.num_processes == state.process_index]
        todo = [i for i in mine if not (partial / f"{i:06d}.safetensors").is_file()]
        teacher_was_training = teacher.training
        teacher.eval()
        device = next(teacher.parameters()).device
        start = time.perf_counter()
        n_rows = sum(min(len(dataset), (i + 1) * shard_rows) - i * shard_rows for i in todo)
        bar = Bar(f"teacher cache ({spec.family})", total=n_rows, enabled=show and state.is_main_process)
        for i in todo:
            shard = dataset.select(range(i * shard_rows, min(len(dataset), (i + 1) * shard_rows)))
            parts: dict[str, list[Tensor]] = {}
            for batch in DataLoader(shard, batch_size=batch_size, collate_fn=collate):
                batch = {k: v.to(device) for k, v in batch.items()}
                for name, t in _batch_outputs(teacher, batch, spec, tokenizer.pad_token_id or 0,
                                              tokenizer.mask_token_id, max_seq_length).items():
                    parts.setdefault(name, []).append(t.detach().cpu())
                bar.update(len(batch["idx"]))
            tmp = partial / f".{i:06d}.tmp"
            save_file({k: torch.cat(v).contiguous() for k, v in parts.items()}, str(tmp))
            tmp.rename(partial / f"{i:06d}.safetensors")
        bar.close()
        teacher.train(teacher_was_training)
        seconds = time.perf_counter() - start
        state.wait_for_everyone()
        if state.is_main_process:
            shards = [load_file(str(partial / f"{i:06d}.safetensors")) for i in range(n_shards)]
            tensors = {k: torch.cat([s[k] for s in shards]).contiguous() for k in shards[0]}
            meta = {"key": key, "spec": json.dumps(spec.describe()), "rows": str(len(dataset)),
                    "seconds": f"{seconds:.3f}"}
            tmp = root / f".{key}.tmp"
            save_file(tensors, str(tmp), metadata=meta)
            tmp.rename(path)
            shutil.rmtree(partial, ignore_errors=True)
            if show:
                console.print(f"teacher cache built: {spec.family}, {len(dataset)} examples in {seconds:.1f} s "
                              f"({1000 * seconds / max(1, len(dataset)):.1f} s per 1,000)")
        state.wait_for_everyone()
        return TeacherCache(load_file(str(path)), key, path)
