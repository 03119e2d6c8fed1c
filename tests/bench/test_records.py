"""The machine a record names: its CPU model, since per-epoch seconds from two machines are not comparable."""

from __future__ import annotations

import platform
from pathlib import Path

from egkd.bench.records import cpu_model, describe_machine, machine


def test_the_cpu_is_named_by_its_model_where_linux_says_it():
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    expected = names[0] if names else (platform.processor() or platform.machine())
    assert cpu_model() == expected
    host = machine()
    assert host["cpu"] == expected
    assert describe_machine(host).startswith(f"{expected} (")
