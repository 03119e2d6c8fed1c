"""The results page's average table (the teacher, each task's headroom over the majority class, the averages) and
its summary tables (one per student compared with KD)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from egkd.reports.glue import average_rows, headroom_note, summary_rows, summary_students


def test_average_table_shows_each_tasks_headroom_and_averages_complete_rows():
    teachers = {"rte": {"score": 60.0, "idx": list(range(250))}, "stsb": {"score": 80.0, "idx": list(range(1500))}}
    floors = {"rte": 55.0, "stsb": 0.0}  # majority class on RTE; a correlation's floor is 0
    stats = {"rte": {("layers:1", "kd"): {"score": 57.0}, ("layers:1", "ft"): {"score": 58.0}},
             "stsb": {("layers:1", "kd"): {"score": 60.0}}}
    header, rows, averages = average_rows(["rte", "stsb"], teachers, stats, floors)
    assert header[-2:] == ["average", "% of teacher"]
    assert rows[0] == ["(teacher)", "ft", "60.00", "80.00", "70.00", "100.0"]
    assert rows[1] == ["(headroom: teacher − majority)", "-", "5.00", "80.00", "-", "-"]
    kd = next(r for r in rows if r[1] == "kd")
    assert kd[2:] == ["57.00", "60.00", "58.50", "83.6"]  # (57 + 60) / 2; 58.5 / 70
    assert averages == {("layers:1", "kd"): pytest.approx(58.5)}
    ft = next(r for r in rows if r[1] == "ft" and r[0] == "layers:1")
    assert ft[4:] == ["(incomplete)", "-"]  # no STS-B run: no average
    note = headroom_note(["rte", "stsb"], teachers, floors)
    assert "RTE 5.00 points (one dev example: 0.40 accuracy points)" in note and "STS-B" not in note
    assert headroom_note(["stsb"], teachers, floors) == ""


def test_a_summary_for_the_main_student_and_each_other_student_compared_with_kd_on_two_tasks():
    def st(score, delta=None, significant=False):
        diff = SimpleNamespace(delta=delta, significant=significant) if delta is not None else None
        return {"score": score, "diff": diff, "consistency": 0.1}
    stats = {"rte": {("main", "kd"): st(50), ("main", "egkd-gradient"): st(53, 3.0, True),
                     ("small", "kd"): st(40), ("small", "ft"): st(41, 1.0), ("one", "kd"): st(40),
                     ("one", "ft"): st(40, 0.0), ("nokd", "ft"): st(40), ("nokd", "pkd"): st(40)},
             "stsb": {("main", "kd"): st(80), ("main", "egkd-gradient"): st(79, -1.0), ("main", "pkd"): st(80, 0.0),
                      ("small", "kd"): st(70), ("small", "ft"): st(69, -1.0), ("one", "kd"): st(70),
                      ("nokd", "ft"): st(70), ("nokd", "pkd"): st(70)}}
    # "one" ran another method beside KD on RTE only, "nokd" never ran KD: no table for them
    assert summary_students(stats) == ["main", "small"]
    assert summary_students({}) == []
    averages = {("small", "kd"): 55.0, ("small", "ft"): 55.0}
    teachers = {"rte": {"score": 60.0}, "stsb": {"score": 85.0}}
    header, rows = summary_rows("small", ["rte", "stsb"], teachers, stats, averages)
    assert header == ["method", "RTE", "STS-B", "average", "consistency (mean)"]
    assert rows == [["(teacher)", "60.00", "85.00", "72.50", "-"], ["kd", "40.00", "70.00", "55.00", "0.10"],
                    ["ft", "41.00 (+1.00)", "69.00 (-1.00)", "55.00 (+0.00)", "0.10"]]
    main = summary_rows("main", ["rte", "stsb"], teachers, stats, {})[1]
    assert [r[0] for r in main] == ["(teacher)", "kd", "pkd", "egkd-gradient"]  # the baselines first
    assert main[3][1:4] == ["53.00 (+3.00*)", "79.00 (-1.00)", "(incomplete)"]
    assert main[2][1] == "-"  # PKD did not run on RTE


def test_a_student_missing_a_task_is_averaged_over_its_tasks_beside_the_teacher_and_kd_on_the_same_ones():
    def st(score, delta=None):
        return {"score": score, "diff": SimpleNamespace(delta=delta, significant=False) if delta is not None else None,
                "consistency": 0.2}
    tasks = ["rte", "stsb", "sst2"]
    teachers = {"rte": {"score": 60.0}, "stsb": {"score": 80.0}, "sst2": {"score": 90.0}}
    stats = {"rte": {("small", "kd"): st(50), ("small", "ft"): st(52, 2.0)},
             "stsb": {("small", "kd"): st(70), ("small", "ft"): st(71, 1.0)},
             "sst2": {}}  # no SST-2 for this student
    _, rows, averages = average_rows(tasks, teachers, stats, {"rte": 55.0, "stsb": 0.0, "sst2": 50.0})
    kd = next(r for r in rows if r[:2] == ["small", "kd"])
    assert kd[-2:] == ["60.00 (2 tasks)", "85.7 (same 2)"]  # (50 + 70) / 2 against the teacher's (60 + 80) / 2
    assert averages == {}  # a partial average never enters the targets, which need every task
    _, rows = summary_rows("small", tasks, teachers, stats, averages)
    assert rows[0][-2] == "76.67 (2 tasks: 70.00)"  # the teacher's own average, then over the student's tasks
    assert rows[1][-2] == "60.00 (2 tasks)" and rows[2][-2] == "61.50 (+1.50; 2 tasks)"
    # a method run on fewer tasks still than KD: KD's difference on its own tasks, the teacher on both task sets
    stats["rte"][("small", "egkd-gradient-ig")] = st(54, 4.0)
    stats["stsb"] = {**stats["stsb"], ("small", "kd"): st(70)}
    stats["sst2"] = {("small", "kd"): st(88), ("small", "ft"): st(87, -1.0), ("small", "egkd-gradient-ig"): st(85, -3)}
    _, rows = summary_rows("small", tasks, teachers, stats, {("small", "kd"): 69.33, ("small", "ft"): 70.0})
    ig = next(r for r in rows if r[0] == "egkd-gradient-ig")
    assert ig[-2] == "69.50 (+0.50; 2 tasks)"  # (54 + 85) / 2 against KD's (50 + 88) / 2 on RTE and SST-2
    assert rows[0][-2] == "76.67 (2 tasks: 75.00)"
    # two rows on different task sets: the teacher's average on each, named by its tasks
    del stats["sst2"][("small", "ft")]
    _, rows = summary_rows("small", tasks, teachers, stats, {("small", "kd"): 69.33})
    assert rows[0][-2] == "76.67 (RTE+STS-B: 70.00; RTE+SST-2: 75.00)"
    assert next(r for r in rows if r[0] == "ft")[-2] == "61.50 (+1.50; 2 tasks)"
