"""``egkd report RESULTS``: the GLUE comparison page rendered from ``results.jsonl`` of ``egkd bench glue``.

Everything on the page is computed here from the runner's records: means ± std over seeds, each method against
vanilla KD with a paired bootstrap interval pooled over seeds (:mod:`egkd.evaluation.bootstrap`), explanation
consistency and faithfulness, training cost per epoch as a ratio to KD, parameters and inference speed relative
to the teacher, the issue's targets (reached or not, by how much) and two plots.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from egkd.bench.glue import FIRST_SEED, best_try, differing, read_grids, stale_units
from egkd.bench.protocol import (
    FT_LEARNING_RATE_FACTORS,
    FT_WEIGHT_DECAYS,
    JOINT_ALPHAS,
    REGRESSION_KD_GRID,
    SECOND_AXES,
    TASK_PLAN,
    TUNING_GRID,
    ft_tries,
    tuning_grid,
)
from egkd.bench.records import describe_machine, read_results
from egkd.data.glue import load_split
from egkd.data.tasks import get_task
from egkd.errors import EgkdError
from egkd.evaluation.bootstrap import Difference, batched_metric, paired_bootstrap
from egkd.reports.tables import to_markdown, write_csv

Group = list[dict[str, Any]]  # the records of one (task, student, method), one per seed
EGKD_PREFIX = "egkd"


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` over seeds; one seed has no spread, so it shows the value alone (not a misleading ± 0)."""
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def groups_of(records: dict[str, dict[str, Any]]) -> tuple[dict[str, dict], dict[tuple[str, str, str], Group]]:
    """(task -> teacher record, (task, student, method) -> seed records sorted by seed)."""
    teachers = {r["task"]: r for r in records.values() if r["kind"] == "teacher"}
    groups: dict[tuple[str, str, str], Group] = defaultdict(list)
    for r in records.values():
        if r["kind"] == "student":
            groups[(r["task"], r["student"], r["method"])].append(r)
    return teachers, {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def read_folders(roots: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """The records of several results folders (e.g. one grid run on a CPU, SST-2 on a GPU machine); a unit
    recorded in two folders is refused: which one the page should show is the user's call."""
    records: dict[str, dict[str, Any]] = {}
    origin: dict[str, Path] = {}
    for root in roots:
        for key, rec in read_results(root).items():
            if key in records:
                raise EgkdError(f"unit {key} is in {origin[key]} and in {root}: "
                                "remove it from one results.jsonl, or render the folders separately")
            records[key], origin[key] = rec, root
    return records


def device(record: dict[str, Any]) -> str:
    """Where a unit ran: its GPU's name, else "CPU" (costs and speeds are only comparable on one device)."""
    return record["machine"].get("gpu") or "CPU"


def task_devices(records: dict[str, dict[str, Any]]) -> dict[str, str]:
    """task -> the device its units ran on ("mixed" if several)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for r in records.values():
        seen[r["task"]].add(device(r))
    return {t: d.pop() if len(d) == 1 else "mixed" for t, d in seen.items()}


class DevLabels:
    """Gold dev labels by ``idx``, read from the GLUE files when first needed: records keep only their
    predictions, so the data is never copied into the results."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir, self._by_task = data_dir, {}

    def __call__(self, task: str, idx: list[int]) -> np.ndarray:
        if task not in self._by_task:
            ds = load_split(task, get_task(task).dev_splits[0], self.data_dir)
            self._by_task[task] = dict(zip(ds["idx"], ds["label"], strict=True))
        by_idx = self._by_task[task]
        return np.asarray([by_idx[i] for i in idx])


def seed_pairs(group: Group, baseline: Group) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Each run of ``group`` beside the baseline's run of the same seed, for the seeds both ran: paired comparisons
    (bootstrap, cost) set a method's seed against KD's, trained on the same data order in the same grid session."""
    base = {r["seed"]: r for r in baseline if r.get("seed") is not None}
    return [(r, base[r["seed"]]) for r in group if r.get("seed") in base]


def versus(group: Group, baseline: Group, metric: str, labels_of: DevLabels,
           n_resamples: int = 2000) -> Difference | None:
    """Paired bootstrap of ``metric``: group minus baseline over the seeds both ran, examples aligned by idx."""
    pairs = seed_pairs(group, baseline)
    if not pairs:
        return None
    idx = pairs[0][1]["idx"]
    labels = labels_of(pairs[0][1]["task"], idx)

    def aligned(rec: dict[str, Any]) -> np.ndarray:
        if rec["idx"] != idx:
            pos = dict(zip(rec["idx"], rec["predictions"], strict=True))
            return np.asarray([pos[i] for i in idx])
        return np.asarray(rec["predictions"])

    a = np.stack([aligned(r) for r, _ in pairs])
    b = np.stack([aligned(k) for _, k in pairs])
    return paired_bootstrap(metric, labels, a, b, n_resamples=n_resamples)


def _cost_ratio(group: Group, kd: Group | None) -> tuple[float | None, str]:
    """Seconds per epoch over KD's, and which seconds: the process's CPU seconds wherever both groups have runs
    that recorded them on a CPU (only those runs count then), since a CPU grid runs several units at once and their
    wall times measure the crowding as much as the method; wall seconds of every run otherwise (older records,
    GPUs). Either way the seconds are compared over the seeds both groups ran, where they share any (a grid runs a
    seed of every method in one session, on one machine, and one session's epochs took 1.6-1.9x the CPU seconds of
    another's); over all their runs otherwise."""
    cpu = "cpu_seconds_per_epoch"

    def on_cpu(runs: Group) -> Group:
        return [r for r in runs if r.get(cpu) and not r.get("machine", {}).get("gpu")]

    mine, base = on_cpu(group), on_cpu(kd or [])
    if mine and base:
        return _paired_ratio(mine, base, cpu), "CPU"
    wall = "seconds_per_epoch"
    mine, base = [r for r in group if r.get(wall)], [r for r in kd or [] if r.get(wall)]
    return (_paired_ratio(mine, base, wall) if mine and base else None), "wall"


def _paired_ratio(runs: Group, baseline: Group, field: str) -> float:
    """``field`` of ``runs`` over the baseline's: summed over the seeds both ran, or the means where they share none."""
    pairs = seed_pairs(runs, baseline)
    if pairs:
        return sum(r[field] for r, _ in pairs) / sum(k[field] for _, k in pairs)
    return statistics.fmean(r[field] for r in runs) / statistics.fmean(k[field] for k in baseline)


def task_rows(task: str, teacher: dict | None, groups: dict[tuple[str, str, str], Group], labels_of: DevLabels,
              n_resamples: int, floor: dict[str, float] | None
              ) -> tuple[list[str], list[list[str]], dict[tuple[str, str], dict[str, Any]]]:
    """The task's table (teacher on top, best student value per column in bold) and per-row numbers."""
    spec = get_task(task)
    header = ["student", "method", "seeds", *[f"{m} (mean ± std)" for m in spec.metrics],
              f"Δ {spec.main_metric} vs KD [95% CI]", "fidelity", "consistency", "comp. AOPC", "suff. AOPC",
              "params vs teacher", "speed vs teacher", "train cost vs KD"]
    rows: list[list[str]] = []
    if teacher:
        rows.append(["(teacher)", "ft", "1", *[f"{teacher['metrics'][m]:.2f}" for m in spec.metrics],
                     "-", "-", "-", "-", "-", "1.00", "1.00x", "-"])
    mine = {(s, m): g for (t, s, m), g in groups.items() if t == task}
    if floor:
        rows.append(["(majority class)", "-", "-", *[f"{floor[m]:.2f}" for m in spec.metrics], *["-"] * 8])
    stats: dict[tuple[str, str], dict[str, Any]] = {}
    for (student, method), group in sorted(mine.items()):
        kd = mine.get((student, "kd"))
        diff = versus(group, kd, spec.main_metric, labels_of, n_resamples) if kd and method != "kd" else None
        scores = {m: [r["metrics"][m] for r in group] for m in spec.metrics}
        st = {
            "score": statistics.fmean(scores[spec.main_metric]), "diff": diff,
            "consistency": _mean([r["consistency"] for r in group]), "fidelity": _mean([r["fidelity"] for r in group]),
            "consistency_ig": _mean([r.get("consistency_ig") for r in group]),
            "comp": _mean([r["comprehensiveness"] for r in group]), "suff": _mean([r["sufficiency"] for r in group]),
            "params": _mean([r["parameters"] / r["teacher_parameters"] for r in group if r["teacher_parameters"]]),
            "speed": _mean([r["speedup"] for r in group]), "n": len(group),
        }
        st["cost"], st["cost_basis"] = _cost_ratio(group, kd)
        stats[(student, method)] = st
        ci = "-" if diff is None else (f"{diff.delta:+.2f} [{diff.low:+.2f}, {diff.high:+.2f}]"
                                       + (" *" if diff.significant else ""))
        rows.append([student, method, str(len(group)),
                     *[_mean_std(v) for v in scores.values()], ci,
                     _fmt(st["fidelity"], 1), _fmt(st["consistency"]), _fmt(st["comp"], 3), _fmt(st["suff"], 3),
                     _fmt(st["params"]), "-" if st["speed"] is None else f"{st['speed']:.2f}x",
                     _fmt_cost(st["cost"], st["cost_basis"])])
    _bold_best(rows, header, start=sum(r[0].startswith("(") for r in rows))
    return header, rows, stats


def majority_floor(task: str, run: dict[str, Any], labels_of: DevLabels) -> dict[str, float] | None:
    """Every metric of always predicting the most frequent dev class (of ``run``'s dev examples): the floor a
    model must clear. None for regression, where a constant prediction has no correlation at all."""
    spec = get_task(task)
    if spec.is_regression:
        return None
    labels = labels_of(task, run["idx"])
    majority = np.full_like(labels, np.bincount(labels).argmax())
    return {m: float(batched_metric(m, majority, labels)) for m in spec.metrics}


def _fmt_cost(ratio: float | None, basis: str) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x" + (" (CPU)" if basis == "CPU" else "")


def _bold_best(rows: list[list[str]], header: list[str], start: int) -> None:
    """Mark the best student value of each metric and of consistency (higher is better)."""
    for col, name in enumerate(header):
        if not (name.endswith("(mean ± std)") or name == "consistency"):
            continue
        values = [(float(r[col].split(" ")[0]), i) for i, r in enumerate(rows[start:], start) if r[col] != "-"]
        if len(values) > 1:
            best = max(values)[0]
            for v, i in values:
                if v == best:
                    rows[i][col] = f"**{rows[i][col]}**"


def partial_average(key: tuple[str, str], tasks: list[str], stats: dict[str, dict[tuple[str, str], dict]]
                    ) -> tuple[float, list[str]] | None:
    """The mean main metric of a row that lacks some tasks, over the tasks it has (at least two), and those
    tasks: a student not run on every task (no SST-2 on CPUs) is still compared with the teacher and with its
    KD row on the same tasks, never with a five-task average."""
    have = [t for t in tasks if key in stats.get(t, {})]
    if len(have) < 2 or len(have) == len(tasks):
        return None
    return statistics.fmean(stats[t][key]["score"] for t in have), have


def average_rows(tasks: list[str], teachers: dict[str, dict], stats: dict[str, dict[tuple[str, str], dict]],
                 floors: dict[str, float]) -> tuple[list[str], list[list[str]], dict[tuple[str, str], float]]:
    """Main metric per task and the average over every task (a row that lacks some: over the tasks it has, beside
    the teacher's over the same, :func:`partial_average`): the teacher first, then each task's headroom (the
    teacher over ``floors``, the majority class), so a reader sees how little room some tasks leave a method to
    differ in."""
    header = ["student", "method", *tasks, "average", "% of teacher"]
    teacher_avg = _mean([teachers[t]["score"] for t in tasks if t in teachers])
    room = {t: teachers[t]["score"] - floors[t] for t in tasks if t in teachers and t in floors}
    rows = [["(teacher)", "ft", *[_fmt(teachers[t]["score"]) if t in teachers else "-" for t in tasks],
             _fmt(teacher_avg), "100.0"],
            ["(headroom: teacher − majority)", "-", *[_fmt(room.get(t)) for t in tasks], "-", "-"]]
    averages = {}
    keys = sorted({k for s in stats.values() for k in s})
    for key in keys:
        scores = [stats[t].get(key, {}).get("score") for t in tasks]
        complete = all(s is not None for s in scores)
        avg = _mean(scores) if complete else None
        if avg is not None:
            averages[key] = avg
        if complete:
            cells = [_fmt(avg), _fmt(100 * avg / teacher_avg, 1) if teacher_avg else "-"]
        elif (part := partial_average(key, tasks, stats)) and all(t in teachers for t in part[1]):
            base = statistics.fmean(teachers[t]["score"] for t in part[1])
            cells = [f"{part[0]:.2f} ({len(part[1])} tasks)", f"{100 * part[0] / base:.1f} (same {len(part[1])})"]
        else:
            cells = ["(incomplete)", "-"]
        rows.append([*key, *[_fmt(s) for s in scores], *cells])
    return header, rows, averages


def coverage_rows(tasks: list[str], groups: dict[tuple[str, str, str], Group]) -> tuple[list[str], list[list[str]]]:
    """Seeds finished per (student, method) and task: what a session planning the rest of a grid reads first."""
    header = ["student", "method", *[get_task(t).folder for t in tasks], "seeds in all"]
    rows = []
    for student, method in sorted({(s, m) for _, s, m in groups}):
        n = [len(groups.get((t, student, method), [])) for t in tasks]
        rows.append([student, method, *[str(k) if k else "-" for k in n], str(sum(n))])
    return header, rows


def summary_students(stats: dict[str, dict[tuple[str, str], dict]]) -> list[str]:
    """The students worth a summary table, the one with results on the most (task, method) pairs first (the
    page's main student); after it every other student that ran KD and another method on at least two tasks."""
    coverage = Counter(s for t in stats.values() for s, _ in t)
    if not coverage:
        return []
    ranked = sorted(coverage, key=lambda s: (-coverage[s], s))

    def compared(student: str) -> bool:
        both = [t for t in stats.values() if (student, "kd") in t and any(s == student and m != "kd" for s, m in t)]
        return len(both) >= 2
    return ranked[:1] + [s for s in ranked[1:] if compared(s)]


def summary_rows(student: str, tasks: list[str], teachers: dict[str, dict],
                 stats: dict[str, dict[tuple[str, str], dict]],
                 averages: dict[tuple[str, str], float]) -> tuple[list[str], list[list[str]]]:
    """The one table a reader looks for first: one student, every method as a row, each task's mean main metric
    with its difference to KD (``*``: the interval excludes zero), the average, and the mean consistency. The
    per-task tables below hold the spreads, intervals and the other columns."""
    header = ["method", *[get_task(t).folder for t in tasks], "average", "consistency (mean)"]
    rows = [["(teacher)", *[_fmt(teachers[t]["score"]) if t in teachers else "-" for t in tasks],
             _fmt(_mean([teachers[t]["score"] for t in tasks if t in teachers])), "-"]]
    kd_avg = averages.get((student, "kd"))
    baselines = ["kd", "ft", "pkd", "adkd"]  # the methods a reader knows first, then the explanation families
    methods = sorted({m for t in stats.values() for s, m in t if s == student},
                     key=lambda m: (baselines.index(m) if m in baselines else len(baselines), m))
    seen: list[list[str]] = []  # the task sets of rows averaged over fewer tasks than the page has
    for method in methods:
        cells = []
        for t in tasks:
            st = stats[t].get((student, method))
            d = st and st["diff"]
            cells.append("-" if st is None else _fmt(st["score"]) + (
                f" ({d.delta:+.2f}{'*' if d.significant else ''})" if d else ""))
        avg = averages.get((student, method))
        gap = f" ({avg - kd_avg:+.2f})" if avg is not None and kd_avg is not None and method != "kd" else ""
        average = "(incomplete)" if avg is None else _fmt(avg) + gap
        part = partial_average((student, method), tasks, stats)
        if avg is None and part:
            kd_same = [stats[t].get((student, "kd"), {}).get("score") for t in part[1]]  # KD on the same tasks
            gap = f"{part[0] - statistics.fmean(kd_same):+.2f}; " if method != "kd" and None not in kd_same else ""
            average = f"{part[0]:.2f} ({gap}{len(part[1])} tasks)"
            if part[1] not in seen:
                seen.append(part[1])
        cons = _mean([stats[t][(student, method)]["consistency"] for t in tasks if (student, method) in stats[t]])
        rows.append([method, *cells, average, _fmt(cons)])
    # the teacher on the same tasks; named by their count, or by the tasks themselves where rows differ in them
    shown = [f"{len(s)} tasks" if len(seen) == 1 else "+".join(get_task(t).folder for t in s) for s in seen]
    same = [f"{name}: {_fmt(_mean([teachers[t]['score'] for t in s]))}" for name, s in zip(shown, seen, strict=True)
            if all(t in teachers for t in s)]
    if same:
        rows[0][-2] += f" ({'; '.join(same)})"
    return header, rows


def headroom_note(tasks: list[str], teachers: dict[str, dict], floors: dict[str, float]) -> str:
    """Which tasks leave little room over the majority class, and what one dev example is worth there."""
    tight = [t for t in tasks if t in teachers and teachers[t]["score"] - floors[t] < 10]
    if not tight:
        return ""
    said = ", ".join(f"{get_task(t).folder} {teachers[t]['score'] - floors[t]:.2f} points (one dev example: "
                     f"{100 / len(teachers[t]['idx']):.2f} accuracy points)" for t in tight)
    return (f"Headroom: how far each teacher is above always answering the majority class (above 0 for a "
            f"correlation). Little room on {said}: differences there are bounded by it and are the noisiest; they "
            "move the plain average (which the 97 % target uses) by little, and are called improvements only where "
            "their bootstrap interval excludes zero.\n\n")


def partial_comparison(stats: dict, tasks: list[str], student: str, egkd: set[str]) -> str:
    """Each EGKD family against KD on the tasks where both ran (the full target needs every task)."""
    parts = []
    for m in sorted(egkd):
        diffs = [(t, d) for t in tasks if (d := stats[t].get((student, m), {}).get("diff")) is not None]
        if diffs:
            wins = sum(d.delta > 0 for _, d in diffs)
            sig = [f"{t} {d.delta:+.2f}" for t, d in diffs if d.significant]
            parts.append(f"{m} ahead of KD on {wins}/{len(diffs)} of the tasks where both ran"
                         + (f"; significant differences: {', '.join(sig)}" if sig else ", nowhere significantly"))
    return "; ".join(parts)


def targets(tasks: list[str], teachers: dict[str, dict], stats: dict[str, dict[tuple[str, str], dict]],
            averages: dict[tuple[str, str], float], devices: dict[str, str] | None = None) -> list[str]:
    """The issue's four targets, each stated as reached or missed, with the measured number. The cost target
    is judged per device (``devices``: task -> where its units ran), since ratios differ between a CPU and a GPU."""
    missing = [t for t in TASK_PLAN if t not in tasks]
    lines = [f"Judged on the tasks that have results ({', '.join(tasks)})"
             + (f"; not yet on {', '.join(missing)}, so no target is met for the five-task grid yet" if missing
                else "") + ".\n"]
    reached = "reached so far" if missing else "reached"
    # the student with results on the most tasks first: the targets are meant for the full grid
    coverage = Counter(s for t in stats.values() for s in {s for s, _ in t})
    for student in sorted(coverage, key=lambda s: (-coverage[s], s)):
        egkd = {m for t in stats.values() for s, m in t if s == student and m.startswith(EGKD_PREFIX)}
        kd_avg = averages.get((student, "kd"))
        best = max(((averages[(student, m)], m) for m in egkd if (student, m) in averages), default=None)
        if best and kd_avg is not None:
            per_task = [stats[t][(student, best[1])]["diff"] for t in tasks]
            wins = sum(d is not None and d.delta > 0 for d in per_task)
            sig = sum(d is not None and d.significant and d.delta > 0 for d in per_task)
            gain = best[0] - kd_avg
            lines.append(f"- **{student}: best EGKD family beats KD by >= 1.0 on the average and on each task**: "
                         f"{reached if gain >= 1.0 and wins == len(tasks) else 'missed'} — {best[1]} "
                         f"{gain:+.2f} on the {len(tasks)}-task average; ahead on {wins}/{len(tasks)} tasks, "
                         f"significantly (95% CI excludes 0) on {sig}. Per family: "
                         f"{partial_comparison(stats, tasks, student, egkd)}.")
        else:
            so_far = partial_comparison(stats, tasks, student, egkd)
            lines.append(f"- **{student}: EGKD vs KD average**: not measurable yet (needs KD and an EGKD family on "
                         f"every task of the grid)" + (f"; so far {so_far}" if so_far else "") + ".")
        t_avg = _mean([teachers[t]["score"] for t in tasks if t in teachers])
        kept = [(100 * v / t_avg, m) for (s, m), v in averages.items() if s == student and t_avg]
        if kept:
            best_kept = max(kept)
            lines.append(f"- **{student} keeps >= 97 % of the teacher's average**: "
                         f"{reached if best_kept[0] >= 97 else 'missed'} — "
                         f"best {best_kept[0]:.1f} % ({best_kept[1]}).")
        by_device: dict[str, list[str]] = defaultdict(list)
        for t in tasks:
            if any(s == student for s, _ in stats[t]):
                by_device[(devices or {}).get(t, "CPU")].append(t)
        for dev, dev_tasks in sorted(by_device.items()):
            where = f" (on {dev}: {', '.join(dev_tasks)})" if len(by_device) > 1 else ""
            line = cost_line(student, egkd, stats, dev_tasks, reached, where)
            if line:
                lines.append(line)
        for m in sorted(egkd):
            cons = [stats[t].get((student, m), {}).get("consistency") for t in tasks]
            losses = [t for t in tasks if (d := stats[t].get((student, m), {}).get("diff")) is not None
                      and d.significant and d.delta < 0]
            have = [(t, c) for t, c in zip(tasks, cons, strict=True) if c is not None]
            if have:
                ok = min(c for _, c in have) >= 0.6 and not losses
                status = "missed" if not ok else reached if len(have) == len(tasks) else "reached so far"
                lines.append(f"- **{student} {m}: consistency >= 0.6 on every task, at no loss of accuracy**: "
                             f"{status} — " + ", ".join(f"{t} {c:.2f}" for t, c in have)
                             + "".join(f", {t} not run" for t, c in zip(tasks, cons, strict=True) if c is None)
                             + (f"; significantly below KD on {', '.join(losses)}" if losses else
                                "; nowhere significantly below KD") + ig_consistency_note(stats, tasks, student, m)
                             + ".")
    return lines


def ig_consistency_note(stats: dict[str, dict[tuple[str, str], dict]], tasks: list[str], student: str,
                        method: str) -> str:
    """The same consistency measured with integrated-gradient maps, where the units were scored with them: the
    target's column uses gxi maps, which the gradient family is trained on and which a small student's may not
    be faithful (see the section *Consistency with integrated gradients*)."""
    have = [(t, c) for t in tasks if (c := stats[t].get((student, method), {}).get("consistency_ig")) is not None]
    if not have:
        return ""
    return "; with integrated-gradient maps " + ", ".join(f"{t} {c:.2f}" for t, c in have)


def cost_line(student: str, egkd: set[str], stats: dict[str, dict[tuple[str, str], dict]], tasks: list[str],
              reached: str, where: str = "") -> str | None:
    """The cost target on ``tasks`` (``where``: the device they ran on): each EGKD family's mean per-epoch time
    over KD's (CPU or wall seconds, as in the task tables), and AD-KD's. The target holds only if every family
    does; the line names the ones within 1.5x and the ones past it, since a user picks one family, not all."""
    costs = {m: _mean([stats[t].get((student, m), {}).get("cost") for t in tasks]) for m in egkd | {"adkd"}}
    egkd_costs = {m: c for m, c in costs.items() if m in egkd and c is not None}
    if not egkd_costs:
        return None
    ad = costs.get("adkd")
    within = {m: c for m, c in egkd_costs.items() if c <= 1.5 and (ad is None or c < ad)}
    past = {m: c for m, c in egkd_costs.items() if m not in within}
    if past:
        status = "missed"
    else:
        status = reached if ad is not None else "1.5x part reached, AD-KD part not measured here"

    def listed(ratios: dict[str, float]) -> str:
        return ", ".join(f"{m} {c:.2f}x" for m, c in sorted(ratios.items()))

    parts = ([f"within it: {listed(within)}"] if within else []) + ([f"past it: {listed(past)}"] if past else [])
    return (f"- **{student}: EGKD costs <= 1.5x KD per epoch and less than AD-KD**{where}: {status} — "
            + "; ".join(parts) + (f"; adkd {ad:.2f}x" if ad is not None else "; adkd not run") + " (time per epoch "
            "of the grid's runs, as in the task tables; see the cost benchmark for same-batch ratios).")


def cache_rows(records: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The one-off cost of every teacher cache the grid's runs used (each entry once), with the first unit that used
    it: a task has one entry per teacher build (a teacher rebuilt on a fresh machine gets new caches) and per
    student vocabulary, and the first user says which build a row is and when it was made."""
    seen: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {}
    for r in sorted(records.values(), key=lambda r: r["finished"]):
        for entry in (r.get("teacher_caches") or {}).values():
            seen.setdefault(entry["key"], (r["task"], entry, r))
    rows = []
    for task, e, first in sorted(seen.values(), key=lambda te: (list(TASK_PLAN).index(te[0]),
                                                                 te[1]["spec"].get("family"), te[2]["finished"])):
        spec = e["spec"]
        what = ", ".join([spec.get("family", "?")] + [f"{k} {spec[k]}" for k in ("explainer", "target", "units")
                                                      if k in spec])
        per_k = 1000 * e["seconds"] / max(1, e["rows"])
        rows.append([task, what, str(e["rows"]), f"{e['seconds']:.0f}", f"{per_k:.1f}",
                     f"{first['key']} ({first['finished'][:10]})"])
    return ["task", "cache", "examples", "seconds (once)", "s per 1,000 examples", "first used by"], rows


def erasure_rows(tasks: list[str], groups: dict[tuple[str, str, str], Group]) -> tuple[list[str], list[list[str]]]:
    """Each student's AOPC beside a random erasure order of the same tokens, for the seeds scored with both.

    Why: erasing any token with [MASK] moves some students a lot whatever their map says, so AOPC alone
    rewards sensitivity to [MASK]; only the gap to the random order credits the map's ranking.
    """
    rows = []
    for (task, student, method), group in sorted(groups.items(), key=lambda kv: (tasks.index(kv[0][0]), kv[0][1:])):
        both = [r for r in group if r.get("comprehensiveness") is not None
                and r.get("comprehensiveness_random") is not None]
        if not both:
            continue
        comp, comp_r, suff, suff_r = (_mean([r[f] for r in both]) for f in (
            "comprehensiveness", "comprehensiveness_random", "sufficiency", "sufficiency_random"))
        rows.append([task, student, method, str(len(both)), _fmt(comp, 3), _fmt(comp_r, 3), f"{comp - comp_r:+.3f}",
                     _fmt(suff, 3), _fmt(suff_r, 3), f"{suff - suff_r:+.3f}"])
    return ["task", "student", "method", "seeds", "comp. AOPC", "comp. random", "comp. - random",
            "suff. AOPC", "suff. random", "suff. - random"], rows


def ig_rows(tasks: list[str], groups: dict[tuple[str, str, str], Group]) -> tuple[list[str], list[list[str]]]:
    """Consistency and faithfulness measured with integrated gradients beside gxi's, for the seeds scored with both
    (``egkd bench glue --rescore --rescore-explainer ig``).

    Why: the grid's consistency is measured on gradient x input maps, the very maps the gradient family is
    trained to match, and a small student's gxi maps can be no better than random erasure while its IG maps
    are faithful (docs/measurements.md, section 18); IG asks the same question of a map that says what the
    student does.
    """
    rows = []
    for (task, student, method), group in sorted(groups.items(), key=lambda kv: (tasks.index(kv[0][0]), kv[0][1:])):
        both = [r for r in group if r.get("consistency_ig") is not None and r.get("consistency") is not None]
        if not both:
            continue
        gxi, ig = _mean([r["consistency"] for r in both]), _mean([r["consistency_ig"] for r in both])
        gains = [r["comprehensiveness_ig"] - r["comprehensiveness_random_ig"] for r in both
                 if r.get("comprehensiveness_ig") is not None and r.get("comprehensiveness_random_ig") is not None]
        rows.append([task, student, method, str(len(both)), _fmt(gxi), _fmt(ig),
                     f"{_mean(gains):+.3f}" if gains else "-"])
    return ["task", "student", "method", "seeds", "consistency (gxi)", "consistency (IG)",
            "IG comp. - random"], rows


def versus_rows(tasks: list[str], groups: dict[tuple[str, str, str], Group], pairs: Sequence[tuple[str, str]],
                labels_of: DevLabels, n_resamples: int) -> tuple[list[str], list[list[str]]]:
    """Method A against method B (not only against KD), wherever both ran a (task, student): the same paired
    bootstrap as the task tables' column vs KD, and the cost and consistencies side by side.

    Why: an ablation (e.g. a schedule of one method's weight) is a comparison between two egkd methods; setting
    each beside KD and comparing the two intervals by eye is not a test of their difference.
    """
    methods = {m for _, _, m in groups}
    unknown = sorted({m for pair in pairs for m in pair} - methods)
    if unknown:
        raise EgkdError(f"--versus: no runs of {', '.join(unknown)} in these results; methods: "
                        f"{', '.join(sorted(methods))}")

    def side_by_side(field: str, x: Group, y: Group, digits: int = 2) -> str:
        return f"{_fmt(_mean([r.get(field) for r in x]), digits)} / {_fmt(_mean([r.get(field) for r in y]), digits)}"

    rows = []
    in_task_order = sorted(groups.items(), key=lambda kv: (tasks.index(kv[0][0]), kv[0][1]))
    for a, b in pairs:
        for (task, student, method), group in in_task_order:
            seeds = {r["seed"] for r, _ in seed_pairs(group, groups.get((task, student, b), []))}
            if method != a or not seeds:
                continue
            mine, theirs = ([r for r in groups[(task, student, m)] if r["seed"] in seeds] for m in (a, b))
            d = versus(mine, theirs, get_task(task).main_metric, labels_of, n_resamples)
            rows.append([task, student, a, b, str(len(seeds)), side_by_side("score", mine, theirs),
                         f"{d.delta:+.2f} [{d.low:+.2f}, {d.high:+.2f}]" + (" *" if d.significant else ""),
                         side_by_side("consistency", mine, theirs), side_by_side("consistency_ig", mine, theirs),
                         _fmt_cost(*_cost_ratio(mine, theirs))])
    return ["task", "student", "A", "B", "seeds (both)", "main metric A / B", "Δ A - B [95% CI]",
            "consistency (gxi) A / B", "consistency (IG) A / B", "train cost A vs B"], rows


def tuning_rows(records: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The ``--tune`` tries of every (task, student, method): each setting's dev score on the first seed, the
    chosen one in bold (by the runner's own rule), and how many seed runs have that setting."""
    tries: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in records.values():
        if r["kind"] == "tune":
            tries[(r["task"], r["student"], r["method"])][r["setting"]] = r
    rows = []
    for (task, student, method), by_setting in sorted(tries.items(), key=lambda kv: (list(TASK_PLAN).index(
            kv[0][0]), kv[0][1], kv[0][2])):
        grid = tries_of(task, student, method, by_setting)
        # a try recorded with other settings than the grid's now (the grid changed) is not that setting's try
        # (in grid order: best_try breaks a tie by it, as the runner does)
        current = {i: by_setting[i] for i in sorted(by_setting)
                   if i < len(grid) and not differing(grid[i], by_setting[i]["options"])}
        best = best_try(list(current.values()))["setting"] if len(current) == len(grid) else None
        cells = []
        for i, setting in enumerate(grid):
            name = ", ".join(f"{k}={v}" for k, v in setting.items())
            cell = f"{name}: " + (_fmt(current[i]["score"]) if i in current else "not run"
                                  + (" (stale try)" if i in by_setting else ""))
            cells.append(f"**{cell}**" if i == best else cell)
        seeds = [r for r in records.values() if r["kind"] == "student" and (r["task"], r["student"], r["method"])
                 == (task, student, method)]
        at_best = sum(best is not None and not differing(grid[best], r["options"]) for r in seeds)
        fixed = "-" if best is None else f"{at_best} of {len(seeds)}"
        rows.append([task, student, method, "; ".join(cells), fixed])
    return ["task", "student", "method", "dev score per setting (first seed; chosen in bold)",
            "seeds run at the chosen setting"], rows


def tries_of(task: str, student: str, method: str, by_setting: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The tuning settings these recorded tries were drawn from: ``--tune-alpha``'s or ``--tune-lr``'s nine where
    every try matches them (a plain try never does: it keeps the default of the second knob that try 0 of the nine
    moves), else ``--tune``'s three. The two wide grids agree only at the defaults of their second knob (tries 1, 4
    and 7) and where they are the same grid (KD on a regression task, ft): a table whose finished tries are all
    among those three reads as ``--tune-alpha``'s, with the right values at the tries that ran."""
    for axis in SECOND_AXES:
        wide = tuning_grid(task, method, student, second=axis)
        if all(i < len(wide) and not differing(wide[i], r["options"]) for i, r in by_setting.items()):
            return wide
    return tuning_grid(task, method, student)


def plots(out: Path, tasks: list[str], stats: dict[str, dict[tuple[str, str], dict]],
          teachers: dict[str, dict]) -> list[Path]:
    """Main metric against training cost (x KD) and against consistency: one panel per task (tasks differ in
    scale and not every student ran every task), colour = method, marker = student, teacher as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for s in stats.values() for k in s})
    methods = sorted({m for _, m in keys})
    students = sorted({s for s, _ in keys})
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    markers = {s: "osD^v<>P*X"[i % 10] for i, s in enumerate(students)}
    written = []
    for name, x_key, x_label in (("cost", "cost", "training cost per epoch (x KD)"),
                                 ("consistency", "consistency", "consistency (Spearman)")):
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks) + 2, 4), squeeze=False)
        for ax, task in zip(axes[0], tasks, strict=True):
            for key, st in stats[task].items():
                if st[x_key] is not None:
                    ax.scatter(st[x_key], st["score"], color=colours[key[1]], marker=markers[key[0]], s=40)
            if task in teachers:
                ax.axhline(teachers[task]["score"], color="grey", linestyle="--", linewidth=1)
            ax.set_title(f"{get_task(task).folder} ({get_task(task).main_metric}; dashed: teacher)", fontsize=9)
            ax.set_xlabel(x_label)
            ax.grid(alpha=0.3)
        handles = [plt.Line2D([], [], color=colours[m], marker="o", linestyle="", label=m) for m in methods]
        handles += [plt.Line2D([], [], color="black", marker=markers[s], linestyle="", label=s) for s in students]
        fig.legend(handles=handles, loc="center right", fontsize=7)
        fig.tight_layout(rect=(0, 0, 1 - 2 / (4.5 * len(tasks) + 2), 1))
        path = out.with_name(f"{out.stem}-metric-vs-{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def protocol(roots: Sequence[Path], records: dict[str, dict[str, Any]]) -> str:
    """How the numbers were made, and how much of the planned grids (of every folder) they cover."""
    folders = {root: read_grids(root) for root in roots}
    grids = [g for gs in folders.values() for g in gs]
    teacher_model = folders[roots[0]][-1].teacher_model if folders[roots[0]] else "all-MiniLM-L6-v2"
    lines = ["## Protocol\n",
             f"- One teacher per task: {teacher_model} fine-tuned on the task "
             "(3 epochs, 2 for SST-2; lr 5e-5, batch 32), shared by every student and method; its caches "
             "(logits, explanations) are built once.",
             "- Students: " + ", ".join(f"`{k}`" for k in sorted({r['student'] for r in records.values()
                                                                  if r['student']}))
             + ". Every method trains with the same optimiser, epochs (4; 3 for CoLA and SST-2), lr (1e-4 for "
             "transformer students, 1e-3 for BiLSTM/CNN" + "".join(
                 f"; {lr:g} for every student of the grids run with `--learning-rate {lr:g}`"
                 for lr in sorted({g.learning_rate for g in grids if g.learning_rate}))
             + "), batch 32, KD weight alpha 0.9 and T 2; the method "
             "adds its own terms at egkd's defaults (`egkd distill --help`); for the randomly initialised "
             "BiLSTM/CNN the explanation terms' gradient is capped at the gold+KD gradient's norm "
             "(`--explain-grad-ratio 1`), and the perturbation cache occludes 16 sampled units per example.",
             "- Lengths: 128 tokens (RTE, MRPC, STS-B), 64 (CoLA, SST-2); SST-2 trains on its first 20,000 "
             "examples.",
             f"- Seeds {FIRST_SEED}, {FIRST_SEED + 1}, ...; dev predictions of every run are kept in results.jsonl.",
             "- Explanation metrics on the first 200 dev examples of every run."]
    tuned = sorted({m for g in grids if g.tune for m in g.methods})
    ft = ("learning_rate=" + ", ".join(f"{f:g}x" for f in FT_LEARNING_RATE_FACTORS) + " the student's ("
          + ", ".join(f"{t['learning_rate']:g}" for t in ft_tries("layers")) + " for a transformer student)")
    tuned_tasks = [t for t in TASK_PLAN if any(g.tune and t in g.tasks for g in grids)]
    if tuned:
        rest = [t for t in TASK_PLAN if t not in tuned_tasks and any(r["task"] == t for r in records.values())]
        lines.append(f"- Tuning (`--tune`, on {', '.join(tuned_tasks)}"
                     + (f"; {', '.join(rest)} ran every method at the defaults above" if rest else "")
                     + "): on the first seed each method tried the same number of settings, its own three ("
                     + "; ".join(f"{m}: " + (ft if m == "ft" else ", ".join(
                         ",".join(f"{k}={v}" for k, v in t.items()) for t in TUNING_GRID[m])) for m in tuned)
                     + ("; kd on a regression task, where the temperature does not enter its MSE: "
                        + ", ".join(f"alpha={t['alpha']}" for t in REGRESSION_KD_GRID)
                        if "kd" in tuned and any(get_task(t).is_regression for t in tuned_tasks) else "")
                     + "); " + ("the grids run with `--tune-alpha` or `--tune-lr` crossed them with three of a "
                                "second knob (below); " if any(g.second_axis for g in grids) else "")
                     + "the best dev score was fixed for the other seeds (the Tuning table says how many "
                     "have run at it).")
    else:
        lines.append("- No tuning: every method at the defaults above (the same budget, zero, for all).")
    if any(g.tune_alpha for g in grids):
        lines.append("- With `--tune-alpha` (the grids below that say so) each method tried nine settings: its three "
                     "crossed with the KD weight " + ", ".join(f"alpha={a}" for a in JOINT_ALPHAS)
                     + "; KD on a regression task, whose three are alphas already, crossed them with "
                     + ", ".join(f"{f:g}x" for f in FT_LEARNING_RATE_FACTORS) + " the student's learning rate, and ft "
                     "its learning rates with weight_decay=" + ", ".join(f"{w:g}" for w in FT_WEIGHT_DECAYS) + ".")
    if any(g.tune_lr for g in grids):
        lines.append("- With `--tune-lr` (the grids below that say so) each method tried nine settings: its three "
                     "crossed with " + ", ".join(f"{f:g}x" for f in FT_LEARNING_RATE_FACTORS) + " the student's "
                     "learning rate; KD on a regression task and ft, whose own three already move it, tried the "
                     "same nine as under `--tune-alpha` (alpha, and the weight decay, crossed with the learning "
                     "rate).")
    for root, folder_grids in folders.items():
        readme = root / "README.md"
        lines.append(f"\nGrids run into `{root}` (each resumes with the same command)"
                     + (f"; how and where: `{readme}`" if readme.is_file() else "") + ":\n")
        lines.extend(grid_lines(folder_grids, records))
    return "\n".join(lines) + "\n"


def grid_lines(grids: list, records: dict[str, dict[str, Any]]) -> list[str]:
    """One line per grid: its command and how many of its units have finished. A grid whose units all belong
    to a later or larger grid (the same grid run again with more seeds) is left out: its command adds nothing."""
    lines = []
    planned_units = [list(g.units()) for g in grids]
    planned_keys = [{u.key for u in units} for units in planned_units]
    for i, (g, planned) in enumerate(zip(grids, planned_units, strict=True)):
        if any(planned_keys[i] < other or (planned_keys[i] == other and j > i)
               for j, other in enumerate(planned_keys) if j != i):
            continue
        missing = [u for u in planned if u.key not in records]
        # e.g. seeds run before tuning chose another setting; a unit that a later grid also runs is judged
        # by that grid (its settings are the last ones asked for), not reported stale here
        later = set().union(*planned_keys[i + 1:])
        stale = [s for s in stale_units(g, records) if s[0] not in later]
        lines.append(f"- `{g.command()}`: {len(planned) - len(missing)} of {len(planned)} units finished"
                     + (" (not yet run: " + ", ".join(f"`{u.key}`" for u in missing[:8])
                        + (f" and {len(missing) - 8} more" if len(missing) > 8 else "") + ")" if missing else "")
                     + (f"; {len(stale)} of them ran with settings the grid has since changed (e.g. "
                        f"`{stale[0][0]}`: {', '.join(stale[0][1])}; `--rerun-stale` reruns them)" if stale else "")
                     + ".")
    return lines


def render(results: str | Path | Sequence[str | Path], out: str | Path | None = None, n_resamples: int = 2000,
           data_dir: str | Path | None = None, pairs: Sequence[tuple[str, str]] = ()) -> str:
    """The Markdown page; with ``out`` also written there, with one CSV per task and the two PNG plots.
    ``data_dir``: the GLUE folder the dev labels are read from (default as everywhere: $GLUE_DIR, ../shared).
    ``pairs``: (A, B) method pairs compared directly, beside the tables' comparison of every method with KD."""
    roots = [Path(results)] if isinstance(results, (str, Path)) else [Path(r) for r in results]
    records = read_folders(roots)
    if not records:
        raise EgkdError(f"no results in {roots[0] / 'results.jsonl'}: run `egkd bench glue --out {roots[0]}` first")
    teachers, groups = groups_of(records)
    tasks = [t for t in TASK_PLAN if t in teachers or any(k[0] == t for k in groups)]
    stamp = max(r["finished"] for r in records.values())
    hosts = sorted({describe_machine(r["machine"]) for r in records.values()})
    devices = task_devices(records)
    sources = ", ".join(f"`{root / 'results.jsonl'}`" for root in roots)
    parts = [f"# GLUE comparison\n\nRendered {datetime.now(timezone.utc):%Y-%m-%d} by `egkd report` from "
             f"{sources} ({len(records)} finished units, last finished {stamp}). "
             f"Machine(s): {'; '.join(hosts)}.\n"]
    parts.append("Dev sets; `*` marks a difference whose 95 % paired-bootstrap interval (examples resampled, "
                 f"{n_resamples} resamples, pooled over the seeds both methods ran) excludes zero: only those are "
                 "improvements. Best student value per column in bold. Consistency: mean per-example Spearman of "
                 "gradient x input maps, student vs teacher; AOPC: ERASER comprehensiveness (higher is better) and "
                 "sufficiency (lower is better) of the student's own maps, in probability of the predicted "
                 "class (STS-B: in label units of the raw output, so not comparable across tasks); a student with its "
                 "own vocabulary (BiLSTM) is erased on its own tokens with its own [MASK]. AOPC also grows with how "
                 "much a student reacts to [MASK] at all, whatever its map ranks: the section *Faithfulness against "
                 "a random erasure order* below sets each map beside a random order of the same tokens "
                 "(docs/measurements.md, sections 16-17). Train cost vs "
                 "KD: seconds per epoch of these runs over KD's, teacher caches excluded: the process's CPU seconds "
                 "from the runs of both that recorded them on a CPU, wherever each has some (marked `(CPU)`; they do "
                 "not grow when other units share the cores), else wall seconds, which on a shared machine are noisy; "
                 "either way seed by seed where both ran the same seeds, since the seeds of one grid session share a "
                 "machine and two sessions' machines differed by up to 1.9x; "
                 "`egkd bench cost` measures the same ratio on identical batches in one process.\n")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    parts.append(protocol(roots, records))
    header, rows = coverage_rows(tasks, groups)
    parts.append("## Coverage\n\nSeeds finished per student, method and task (tuning tries not counted; `-`: not "
                 "run). The grid commands above resume where these stop.\n\n" + to_markdown(header, rows))
    stats: dict[str, dict[tuple[str, str], dict]] = {}
    labels_of = DevLabels(data_dir)
    floors = {}  # each task's majority-class floor, every metric (None for regression)
    for t in tasks:
        run = next((g[0] for k, g in groups.items() if k[0] == t), teachers.get(t))
        floors[t] = majority_floor(t, run, labels_of) if run else None
    for task in tasks:
        header, rows, stats[task] = task_rows(task, teachers.get(task), groups, labels_of, n_resamples, floors[task])
        spec = get_task(task)
        where = {"CPU": "", "mixed": "; units ran on several devices: cost and speed mix them"}.get(
            devices[task], f"; ran on {devices[task]}: cost and speed are ratios there")
        parts.append(f"## {spec.folder} (dev, main metric {spec.main_metric}{where})\n\n" + to_markdown(header, rows))
        if out:
            write_csv(Path(out).with_name(f"{Path(out).stem}-{task}.csv"), header, rows)
    header, rows = erasure_rows(tasks, groups)
    if rows:
        parts.append("## Faithfulness against a random erasure order\n\nThe AOPC columns above beside the same "
                     "erasure in a random order of the example's tokens (`RandomOrder`, seeded by the tokens), for "
                     "the seeds scored with both (units scored before 2026-12-06 whose run folders are on another "
                     "machine have no random order). A map is faithful where comprehensiveness gains over random "
                     "(higher is better) and sufficiency gains below it (more negative is better); a high AOPC with "
                     "no gain only says the student reacts to [MASK].\n\n" + to_markdown(header, rows))
    header, rows = ig_rows(tasks, groups)
    if rows:
        parts.append("## Consistency with integrated gradients\n\nThe consistency above compares gradient x input "
                     "maps, which the gradient family is trained to match and which, for a small transformer student, "
                     "can be no better than a random erasure order (docs/measurements.md, section 18). Here the same "
                     "students asked with integrated gradients (8 steps from [PAD]; scored as they finish for "
                     "`egkd-gradient-ig`, whose students learn IG maps, and by `egkd bench glue --rescore "
                     "--rescore-explainer ig` for the others, which needs their run folders), over the seeds scored "
                     "with both, and how far the student's IG map beats a random erasure order (comprehensiveness "
                     "AOPC minus random's). A method with fewer seeds here than in its task table was scored on the "
                     "seeds whose run folders are on this machine.\n\n"
                     + to_markdown(header, rows))
    if pairs:
        header, rows = versus_rows(tasks, groups, pairs, labels_of, n_resamples)
        parts.append("## Paired comparisons (`--versus`)\n\nEach pair over the seeds both methods ran, with the same "
                     "paired bootstrap as the tables' column vs KD (`*`: the interval excludes zero); the scores, "
                     "consistencies and cost are over those seeds too, so they can differ from the task tables' "
                     "where one method has more seeds.\n\n"
                     + (to_markdown(header, rows) if rows else "No (task, student) has runs of both methods of a "
                        "pair with a seed in common.\n"))
        if out and rows:
            write_csv(Path(out).with_name(f"{Path(out).stem}-versus.csv"), header, rows)
    header, rows = cache_rows(records)
    if rows:
        parts.append("## One-off teacher cache cost\n\nBuilt once per (teacher, data, explainer, length) and "
                     "reused by every seed and method; not included in the training cost above.\n\n"
                     + to_markdown(header, rows))
    header, rows = tuning_rows(records)
    if rows:
        parts.append("## Tuning (`--tune`)\n\nEach method's tries on the first seed; the chosen setting is fixed "
                     "for its other seeds. Seeds that ran before tuning keep their old setting, in the tables above "
                     "too, until `--rerun-stale` reruns them; the last column counts the seeds already at the "
                     "chosen one. Tasks without a row ran every method at the defaults.\n\n"
                     + to_markdown(header, rows))
    main_floor = {t: floors[t][get_task(t).main_metric] if floors[t] else 0.0 for t in tasks}  # 0: a correlation
    header, rows, averages = average_rows(tasks, teachers, stats, main_floor)
    parts.append("## Average over tasks (main metric)\n\n" + headroom_note(tasks, teachers, main_floor)
                 + to_markdown(header, rows))
    for i, student in enumerate(summary_students(stats)):
        intro = ("Each task's main metric (mean over seeds; RTE, SST-2 accuracy, MRPC F1, STS-B Pearson, CoLA "
                 "Matthews) and, in brackets, the difference to KD; `*`: its 95 % interval excludes zero. The average "
                 "is over every task; a student that lacks some is averaged over the tasks it has, marked `(n "
                 "tasks)`, and the teacher row adds its own average over those tasks." if i == 0 else
                 "The same table for another student; how many seeds each cell holds: the Coverage table.")
        parts.insert(2 + i, f"## Summary: student `{student}`\n\n{intro}\n\n"
                     + to_markdown(*summary_rows(student, tasks, teachers, stats, averages)))
    parts.append("## Targets\n\n" + "\n".join(targets(tasks, teachers, stats, averages, devices)) + "\n")
    if out:
        out = Path(out)
        pngs = plots(out, tasks, stats, teachers)
        parts.append("## Plots\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n")
        out.write_text("\n".join(parts))
    return "\n".join(parts)
