"""``egkd bench cost``: the training-step cost of every method, as a ratio to vanilla KD, in one process.

Every method runs the *same* batches through the *same* step code as the training loop
(:func:`egkd.training.loop.forward` and the method's loss terms, then backward, clipping and fused AdamW).
Steps are interleaved round-robin over the methods and the median is kept, so a noisy shared machine
shifts every method alike; only ratios are reported as results. The one-off cost of building each teacher
cache is reported per 1,000 examples.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from egkd.bench.protocol import IG_LITE_MAPS, IG_MAPS
from egkd.bench.records import describe_machine, machine
from egkd.cache import CacheSpec, build_teacher_cache
from egkd.config import RunConfig
from egkd.data.tasks import get_task
from egkd.data.tokenize import Collator
from egkd.errors import EgkdError
from egkd.losses.terms import total_loss
from egkd.models.students import build_student, count_parameters, load_classifier
from egkd.reports.console import Bar, console
from egkd.reports.tables import to_markdown, write_csv
from egkd.training.loop import Teacher, forward

# name -> (method, explainer family, whether the teacher's logits are cached, other RunConfig options)
METHODS: dict[str, tuple[str, str | None, bool, dict[str, Any]]] = {
    "kd": ("kd", None, True, {}),
    "kd-live": ("kd", None, False, {}),
    "pkd": ("pkd", None, False, {}),
    "egkd-gradient": ("egkd", "gradient", True, {}),
    # the gradient family on IG maps, as the grid runs it; its lite twin: the student's map on an eighth of each batch
    "egkd-gradient-ig": ("egkd", "gradient", True, IG_MAPS),
    "egkd-gradient-ig-lite": ("egkd", "gradient", True, IG_LITE_MAPS),
    "egkd-perturbation": ("egkd", "perturbation", True, {}),
    "egkd-selection": ("egkd", "selection", True, {}),
    "egkd-gradient+perturbation": ("egkd", "gradient+perturbation", True, {}),
    "egkd-all": ("egkd", "gradient+perturbation+selection", True, {}),  # the grid's egkd-all: every family at once
    "adkd": ("adkd", None, False, {}),
}


def _fixed_length_batches(cfg: RunConfig, tokenizer, n_batches: int) -> tuple[Any, list[dict]]:
    """``n_batches`` batches of exactly ``max_seq_length`` tokens (examples that fill it after truncation)."""
    from egkd.api import load_tokenized

    ds = load_tokenized(get_task(cfg.task), "train", tokenizer, cfg)
    full = [i for i, ids in enumerate(ds["input_ids"]) if len(ids) == cfg.max_seq_length]
    need = n_batches * cfg.batch_size
    if len(full) < need:
        raise EgkdError(f"only {len(full)} {cfg.task} examples fill {cfg.max_seq_length} tokens; "
                        f"lower --max-seq-length or --steps")
    subset = ds.select(full[:need])
    dl = DataLoader(subset, batch_size=cfg.batch_size, collate_fn=Collator(tokenizer))
    return subset, list(dl)


def bench_cost(teacher: str, student: str = "layers:1,3,5", task: str = "sst2", methods: list[str] | None = None,
               batch_size: int = 32, max_seq_length: int = 32, steps: int = 10, warmup: int = 2,
               data_dir: str | None = None, out: str | Path | None = None, threads: int | None = None,
               **options: Any) -> list[dict[str, Any]]:
    """Time ``steps`` training steps of each method on the same batches; return one row per method."""
    methods = methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise EgkdError(f"unknown bench method(s) {unknown}; known: {', '.join(METHODS)}")
    if threads:
        torch.set_num_threads(threads)
    spec = get_task(task)
    base = RunConfig(task=spec.name, data_dir=data_dir, teacher=teacher, student=student, batch_size=batch_size,
                     max_seq_length=max_seq_length, **options)
    t_built = load_classifier(teacher, spec, expect_head=not teacher.startswith("sentence-transformers/"))
    t_built.model.eval()
    s_built = build_student(student, t_built, spec)
    subset, batches = _fixed_length_batches(base, t_built.tokenizer, steps + warmup)

    from egkd.api import build_terms, cache_specs

    scratch = tempfile.mkdtemp(prefix="egkd-bench-")
    runs: dict[str, dict[str, Any]] = {}
    cache_cost: dict[CacheSpec, float] = {}
    for name in methods:
        method, family, cached, extra = METHODS[name]
        cfg = replace(base, method=method, explainer=family or "gradient", teacher_cache=cached, **extra)
        terms = build_terms(cfg, s_built)
        caches, entries = {}, []
        for cspec in cache_specs(cfg, terms):
            start = time.perf_counter()  # the first build of an entry is real (a fresh folder); later ones hit it
            caches[cspec.family] = build_teacher_cache(t_built.model, t_built.tokenizer, subset, cspec,
                                                       max_seq_length, root=Path(scratch), show=False)
            entries.append(cspec)
            cache_cost.setdefault(cspec, 1000 * (time.perf_counter() - start) / len(subset))
        model = copy.deepcopy(s_built.model).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        runs[name] = {"model": model, "optimizer": optimizer, "terms": terms, "caches": caches,
                      "teacher": Teacher(t_built.model, torch.device("cpu")),
                      "need_hidden": any(t.needs_hidden for t in terms), "times": [], "entries": entries}

    bar = Bar("timing steps", total=len(batches) * len(runs))
    for i, batch in enumerate(batches):
        for run in runs.values():  # round-robin: machine noise hits every method alike
            start = time.perf_counter()
            out_ = forward(run["model"], batch, run["terms"], run["teacher"], run["caches"], run["need_hidden"], i)
            loss, _ = total_loss(run["terms"], out_)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(run["model"].parameters(), 1.0)
            run["optimizer"].step()
            run["optimizer"].zero_grad(set_to_none=True)
            if i >= warmup:
                run["times"].append(time.perf_counter() - start)
            bar.update()
    bar.close()
    shutil.rmtree(scratch, ignore_errors=True)

    kd = statistics.median(runs["kd"]["times"]) if "kd" in runs else None
    kd_live = statistics.median(runs["kd-live"]["times"]) if "kd-live" in runs else None
    rows = []
    for name, run in runs.items():
        med = statistics.median(run["times"])
        rows.append({
            "method": name,
            "seconds_per_step": med,
            "vs_kd": med / kd if kd else None,
            "vs_kd_live": med / kd_live if kd_live else None,
            "cache_s_per_1000": sum(cache_cost[e] for e in run["entries"]) or None,
        })
    header = ["method", "s/step (median)", "x KD (cached logits)", "x KD (live teacher)", "cache s / 1,000 ex."]
    table = [[r["method"], f"{r['seconds_per_step']:.3f}",
              f"{r['vs_kd']:.2f}" if r["vs_kd"] else "-",
              f"{r['vs_kd_live']:.2f}" if r["vs_kd_live"] else "-",
              f"{r['cache_s_per_1000']:.1f}" if r["cache_s_per_1000"] else "-"] for r in rows]
    where = describe_machine({**machine(), "gpu": None})  # the steps run on the CPU even where a GPU exists
    title = (f"egkd bench cost: {spec.name}, teacher {count_parameters(t_built.model) / 1e6:.1f}M params, student "
             f"{student} ({count_parameters(s_built.model) / 1e6:.1f}M), batch {batch_size} x {max_seq_length} "
             f"tokens, {steps} timed steps; {where}")
    console.print(title)
    console.print(to_markdown(header, table))
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cost.md").write_text(f"{title}\n\n" + to_markdown(header, table))
        write_csv(out / "cost.csv", header, table)
        (out / "cost.json").write_text(json.dumps({"title": title, "rows": rows}, indent=2))
    return rows
