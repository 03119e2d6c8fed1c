"""The file locks that let several processes share one results folder."""

from __future__ import annotations

import json
import threading

from egkd.bench.glue import Unit, unit_lock
from egkd.bench.records import append_record, read_results, results_lock
from egkd.locks import exclusive


def test_a_held_lock_refuses_a_second_holder_until_released(tmp_path):
    path = tmp_path / "locks" / "x.lock"
    with exclusive(path) as first:
        assert first
        # flock locks belong to the open file: a second open, even in this process, stands for another process
        with exclusive(path, wait=False) as second:
            assert not second
    with exclusive(path, wait=False) as again:
        assert again


def test_a_blocked_wait_says_so_once_and_a_free_lock_says_nothing(tmp_path):
    path = tmp_path / "x.lock"
    calls: list[str] = []
    with exclusive(path, on_wait=lambda: calls.append("free")):
        pass
    assert calls == []
    got: list[bool] = []

    def second_holder() -> None:
        with exclusive(path, on_wait=lambda: calls.append("blocked")) as mine:
            got.append(mine)

    with exclusive(path):
        waiter = threading.Thread(target=second_holder)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive() and calls == ["blocked"] and got == []  # told once, then blocked
    waiter.join(timeout=10)
    assert not waiter.is_alive() and got == [True] and calls == ["blocked"]


def test_unit_locks_are_per_unit(tmp_path):
    a, b = Unit("rte", "layers:1", "kd", 42), Unit("rte", "layers:1", "kd", 43)
    with unit_lock(tmp_path, a) as mine:
        assert mine
        with unit_lock(tmp_path, a) as other, unit_lock(tmp_path, b) as free:
            assert not other and free


def test_an_append_waits_for_a_rewrite_in_progress(tmp_path):
    """A record appended while another process rewrites results.jsonl (``--rerun-stale``) lands after it."""
    (tmp_path / "results.jsonl").write_text(json.dumps({"key": "old"}) + "\n")
    writer = threading.Thread(target=append_record, args=(tmp_path, {"key": "new"}))
    with results_lock(tmp_path):
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive()  # blocked on the lock
        (tmp_path / "results.jsonl").write_text(json.dumps({"key": "rewritten"}) + "\n")
    writer.join(timeout=10)
    assert not writer.is_alive()
    assert list(read_results(tmp_path)) == ["rewritten", "new"]
