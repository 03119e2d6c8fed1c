"""The results page's average table: the teacher, each task's headroom over the majority class, the averages."""

from __future__ import annotations

import pytest

from egkd.reports.glue import average_rows, headroom_note


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
