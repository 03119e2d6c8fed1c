"""Wall time of one teacher cache entry built by one process, then by two processes at once (each one thread);
or, with ``--malloc``, built by two processes at once, one with glibc's default allocator settings and one with
egkd's (:mod:`egkd.allocator`).

    python scripts/cache_build_bench.py results/teachers/cola cola perturbation 2048
    python scripts/cache_build_bench.py results/teachers/rte rte gradient 192 --explainer ig --malloc

Each build starts from an empty cache folder. Before 2026-12-04 a second run that needed an entry waited idle
while the first built all of it; now each run builds the shards no one else holds (egkd.cache), so two runs on
two cores should take about half the wall time of one. With ``--malloc`` each run has its own folder, so both
build the whole entry side by side on the same machine at the same time. Prints a Markdown table; run it on an
otherwise idle machine with at least two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from egkd.reports.tables import to_markdown

BUILD = """
import json, resource, sys
teacher_dir, task_name, family, explainer, n, root, malloc = sys.argv[1:8]
if malloc == "egkd":
    from egkd.allocator import tune_malloc
    assert tune_malloc(), "glibc's mallopt is not available here"
from egkd import api
from egkd.cache import CacheSpec, build_teacher_cache
from egkd.config import RunConfig
from egkd.data.tasks import get_task
from egkd.models.students import load_classifier
task = get_task(task_name)
length = 64 if task.name in ("cola", "sst2") else 128
teacher = load_classifier(teacher_dir, task, expect_head=True)
ds = api.load_tokenized(task, "train", teacher.tokenizer, RunConfig(task=task.name, max_seq_length=length), int(n),
                        all_processes=False)
spec = CacheSpec(family, explainer=explainer, max_units=16 if family == "perturbation" else 0)
before = resource.getrusage(resource.RUSAGE_SELF)
entry = build_teacher_cache(teacher.model, teacher.tokenizer, ds, spec, length, root=root, show=False)
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({**entry.info(), "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
                  "faults": after.ru_minflt - before.ru_minflt}))
"""


def build(args: list[str], mallocs: list[str], shared: bool) -> tuple[float, list[dict]]:
    """(wall seconds, each run's info) with one run per entry of ``mallocs`` at once: ``egkd`` tunes glibc's
    allocator as the CLI does by default (a ``GLIBC_TUNABLES`` of the caller's is dropped: it would make egkd keep
    its hands off), ``default`` leaves it (``GLIBC_TUNABLES`` set empty); ``shared``: one cache folder for all
    runs (they split the shards), else a folder each (each builds the whole entry)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**{k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}, "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        procs = []
        for i, malloc in enumerate(mallocs):
            root = tmp if shared else os.path.join(tmp, str(i))
            run_env = {**env, "GLIBC_TUNABLES": ""} if malloc == "default" else env
            procs.append(subprocess.Popen([sys.executable, "-c", BUILD, *args, root, malloc], env=run_env,
                                          stdout=subprocess.PIPE, text=True))
        outs = [p.communicate()[0] for p in procs]
        wall = time.perf_counter() - start
        if any(p.returncode for p in procs):
            raise SystemExit("a build failed")
        return wall, [json.loads(out.strip().splitlines()[-1]) for out in outs]


def compare_processes(args: list[str], title: str) -> None:
    rows = []
    for processes in (1, 2):
        wall, infos = build(args, ["egkd"] * processes, shared=True)
        rows.append([str(processes), f"{wall:.0f}", f"{infos[0]['seconds']:.0f}"])
    print(to_markdown([f"runs building one {title}", "wall s", "shard s (the entry's recorded cost)"], rows))
    print(f"\nwall time, two runs over one: {float(rows[1][1]) / float(rows[0][1]):.2f}")


def compare_malloc(args: list[str], title: str) -> None:
    _, infos = build(args, ["default", "egkd"], shared=False)
    page = resource.getpagesize()
    rows = [[malloc, f"{info['seconds']:.0f}", f"{info['user']:.0f}", f"{info['sys']:.0f}",
             f"{info['faults'] * page / 2**30:.0f}"]
            for malloc, info in zip(("glibc default", "egkd"), infos, strict=True)]
    print(to_markdown([f"allocator, building one {title} each (at once)", "build s", "user CPU s", "system CPU s",
                       "GiB faulted in"], rows))
    print(f"\nbuild time, egkd's allocator settings over glibc's defaults: "
          f"{infos[1]['seconds'] / infos[0]['seconds']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher_dir")
    parser.add_argument("task")
    parser.add_argument("family", nargs="?", default="perturbation")
    parser.add_argument("n", nargs="?", default="2048", help="training examples in the entry")
    parser.add_argument("--explainer", default="gxi", help="map of the gradient family: saliency | gxi | ig")
    parser.add_argument("--malloc", action="store_true", help="compare glibc's allocator defaults with egkd's")
    a = parser.parse_args()
    args = [a.teacher_dir, a.task, a.family, a.explainer, a.n]
    title = f"{a.task} {a.family} entry ({a.n} examples{', ' + a.explainer if a.family == 'gradient' else ''})"
    (compare_malloc if a.malloc else compare_processes)(args, title)


if __name__ == "__main__":
    main()
