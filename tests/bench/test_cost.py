"""``egkd bench cost``: every method's training step on the same batches, reported as a ratio to vanilla KD."""

from __future__ import annotations

import json

import pytest

from egkd.bench.cost import bench_cost
from egkd.errors import EgkdError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_cost_bench_times_every_method_on_the_same_batches_and_writes_its_table(tiny_teacher, glue_dir, tmp_path):
    methods = ["kd", "kd-live", "egkd-gradient", "egkd-gradient-ig", "egkd-gradient-ig-lite", "egkd-all"]
    rows = bench_cost(str(tiny_teacher), student="layers:1", task="rte", methods=methods, batch_size=4,
                      max_seq_length=32, steps=2, warmup=1, data_dir=str(glue_dir), out=tmp_path)
    by = {r["method"]: r for r in rows}
    assert list(by) == methods
    kd, live = by["kd"]["seconds_per_step"], by["kd-live"]["seconds_per_step"]
    for r in rows:  # the ratios are the medians' ratios, against KD with cached logits and with a live teacher
        assert r["seconds_per_step"] > 0
        assert r["vs_kd"] == pytest.approx(r["seconds_per_step"] / kd)
        assert r["vs_kd_live"] == pytest.approx(r["seconds_per_step"] / live)
    # one-off cache cost: KD's logits; the gradient family's maps; egkd-all every family's entry, so more than one
    assert by["kd-live"]["cache_s_per_1000"] is None
    assert by["egkd-all"]["cache_s_per_1000"] > by["egkd-gradient"]["cache_s_per_1000"] > 0
    # the IG teacher maps are their own entry (8 path points per example), not the gxi entry's time again
    assert by["egkd-gradient-ig"]["cache_s_per_1000"] > by["egkd-gradient"]["cache_s_per_1000"]
    # its lighter twin (the student's map on fewer examples) reuses that same entry
    assert by["egkd-gradient-ig-lite"]["cache_s_per_1000"] == by["egkd-gradient-ig"]["cache_s_per_1000"]
    saved = json.loads((tmp_path / "cost.json").read_text())
    assert [r["method"] for r in saved["rows"]] == methods and "student layers:1" in saved["title"]
    assert "1 threads, torch " in saved["title"]  # the machine it ran on, as the grid's records name it
    table = (tmp_path / "cost.md").read_text()
    assert "| egkd-all |" in table and (tmp_path / "cost.csv").is_file()


def test_cost_bench_refuses_an_unknown_method():
    with pytest.raises(EgkdError, match="unknown bench method"):
        bench_cost("unused", methods=["kd", "tinybert"])
