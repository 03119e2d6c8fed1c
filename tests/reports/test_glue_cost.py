"""The task tables' training cost: per-epoch seconds over KD's, from the process's CPU seconds of the runs that
recorded them on a CPU wherever both methods have such runs (several units share a CPU machine's cores, which
inflates wall times), else from the wall seconds of every run; seed by seed where both methods ran the same seeds,
since the seeds of one grid session share a machine and another session's may not."""

from __future__ import annotations

import pytest

from egkd.reports.glue import _cost_ratio


def _run(wall: float, cpu: float | None = None, gpu: str | None = None, seed: int | None = None) -> dict:
    rec = {"seconds_per_epoch": wall, "machine": {"gpu": gpu}, "seed": seed}
    if cpu is not None:
        rec["cpu_seconds_per_epoch"] = cpu
    return rec


def test_cpu_seconds_when_every_run_of_both_recorded_them():
    # the method's second run was crowded (wall 300) but used the same CPU time: the ratio ignores the crowding
    egkd = [_run(140, 130), _run(300, 150)]
    kd = [_run(100, 100), _run(100, 100)]
    assert _cost_ratio(egkd, kd) == (pytest.approx(1.4), "CPU")


def test_only_the_runs_with_cpu_seconds_count_when_both_methods_have_some():
    # older runs (wall seconds only, crowded) sit beside one newer run of each that recorded CPU seconds
    egkd = [_run(400), _run(300), _run(150, 140)]
    kd = [_run(90), _run(200), _run(110, 100)]
    assert _cost_ratio(egkd, kd) == (pytest.approx(1.4), "CPU")


def test_cpu_seconds_are_paired_by_seed_across_machines():
    # seed 1 of both methods on a fast machine, seeds 2-3 on one twice as slow; the method has no seed 3:
    # the ratio of means would mix machines (150 / 83.3 = 1.8), the seeds both ran give the method's 2.0x
    egkd = [_run(100, 100, seed=1), _run(200, 200, seed=2)]
    kd = [_run(50, 50, seed=1), _run(100, 100, seed=2), _run(100, 100, seed=3)]
    assert _cost_ratio(egkd, kd) == (pytest.approx(2.0), "CPU")
    # no seed in common: every CPU run of each counts
    assert _cost_ratio([_run(140, 140, seed=5)], kd) == (pytest.approx(140 / (250 / 3)), "CPU")


def test_wall_seconds_when_either_method_has_no_cpu_run():
    kd = [_run(100)]  # older KD records only: the method's CPU seconds have nothing to be divided by
    assert _cost_ratio([_run(140, 130), _run(300)], kd) == (pytest.approx(2.2), "wall")
    assert _cost_ratio([_run(140), _run(300)], [_run(100, 100)]) == (pytest.approx(2.2), "wall")
    assert _cost_ratio([_run(10, 9, gpu="H200")], [_run(5, 9, gpu="H200")]) == (pytest.approx(2.0), "wall")
    assert _cost_ratio([_run(10, 9)], None)[0] is None  # no KD runs: no ratio


def test_wall_seconds_are_paired_by_seed_too():
    # an older method run (wall seconds only) beside KD's seed of its session and a later KD seed on a slower
    # machine: the seed both ran gives 3.0x, the means would give 300 / 150 = 2.0x
    kd = [_run(100, seed=42), _run(200, 190, seed=46)]
    assert _cost_ratio([_run(300, seed=42)], kd) == (pytest.approx(3.0), "wall")


def test_cost_target_line_names_the_families_within_and_past_it():
    from egkd.reports.glue import cost_line

    def stats(costs: dict[str, float]) -> dict:
        return {"rte": {("s", m): {"cost": c} for m, c in costs.items()}}

    two = stats({"egkd-gradient": 1.2, "egkd-all": 1.9})
    line = cost_line("s", {"egkd-gradient", "egkd-all"}, two, ["rte"], "reached")
    assert ": missed — within it: egkd-gradient 1.20x; past it: egkd-all 1.90x; adkd not run" in line
    line = cost_line("s", {"egkd-gradient"}, two, ["rte"], "reached")
    assert "1.5x part reached, AD-KD part not measured here — within it: egkd-gradient 1.20x;" in line
    # cheaper than 1.5x but not cheaper than AD-KD: past the target too
    line = cost_line("s", {"egkd-gradient"}, stats({"egkd-gradient": 1.2, "adkd": 1.1}), ["rte"], "reached")
    assert ": missed — past it: egkd-gradient 1.20x; adkd 1.10x" in line
    line = cost_line("s", {"egkd-gradient"}, stats({"egkd-gradient": 1.2, "adkd": 6.0}), ["rte"], "reached")
    assert ": reached — within it: egkd-gradient 1.20x; adkd 6.00x" in line
    assert cost_line("s", {"egkd-gradient"}, stats({"kd": 1.0}), ["rte"], "reached") is None
