"""Wall time of one teacher cache entry built by one process, then by two processes at once (each one thread).

    python scripts/cache_build_bench.py results/teachers/cola cola perturbation 2048

Each build starts from an empty cache folder. Before 2026-12-04 a second run that needed an entry waited idle
while the first built all of it; now each run builds the shards no one else holds (egkd.cache), so two runs on
two cores should take about half the wall time of one. Prints a Markdown table; run it on an otherwise idle
machine with at least two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from egkd.reports.tables import to_markdown

BUILD = """
import json, sys
from egkd import api
from egkd.cache import CacheSpec, build_teacher_cache
from egkd.config import RunConfig
from egkd.data.tasks import get_task
from egkd.models.students import load_classifier
teacher_dir, task_name, family, n, root = sys.argv[1:6]
task = get_task(task_name)
length = 64 if task.name in ("cola", "sst2") else 128
teacher = load_classifier(teacher_dir, task, expect_head=True)
ds = api.load_tokenized(task, "train", teacher.tokenizer, RunConfig(task=task.name, max_seq_length=length), int(n),
                        all_processes=False)
spec = CacheSpec(family, max_units=16 if family == "perturbation" else 0)
entry = build_teacher_cache(teacher.model, teacher.tokenizer, ds, spec, length, root=root, show=False)
print(json.dumps(entry.info()))
"""


def build(processes: int, args: list[str]) -> tuple[float, float]:
    """(wall seconds, the entry's recorded seconds: the sum over its shards) with ``processes`` runs at once."""
    with tempfile.TemporaryDirectory() as root:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", BUILD, *args, root], env=env, stdout=subprocess.PIPE,
                                  text=True) for _ in range(processes)]
        outs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - start
        if any(p.returncode for p in procs):
            raise SystemExit("a build failed")
        return wall, json.loads(outs[0].strip().splitlines()[-1])["seconds"]


def main(teacher_dir: str, task: str, family: str = "perturbation", n: str = "2048") -> None:
    rows = []
    for processes in (1, 2):
        wall, shard_seconds = build(processes, [teacher_dir, task, family, n])
        rows.append([str(processes), f"{wall:.0f}", f"{shard_seconds:.0f}"])
    print(to_markdown([f"runs building one {task} {family} entry ({n} examples)", "wall s",
                       "shard s (the entry's recorded cost)"], rows))
    print(f"\nwall time, two runs over one: {float(rows[1][1]) / float(rows[0][1]):.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
