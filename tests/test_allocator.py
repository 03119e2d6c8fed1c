"""The allocator tuning must keep a freed big buffer in the heap for the next request instead of unmapping it
(measured in a subprocess: mallopt's settings are process-wide and cannot be undone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# malloc'ed, written and freed ten times, as a step's activations are; 64 MiB is past glibc's largest dynamic
# mmap threshold (32 MiB), so by default every round trip is a fresh mapping whose pages fault in again
PROBE = """
import ctypes, json, resource, sys
from egkd.allocator import tune_malloc
tuned = tune_malloc() if sys.argv[1] == "tune" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def round_trip(n=64 << 20):
    p = libc.malloc(n)
    libc.memset(p, 1, n)
    libc.free(p)
round_trip()  # the first one faults its pages in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_trip()
print(json.dumps({"tuned": tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def run_probe(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | env
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=environ, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_malloc_keeps_freed_buffers_for_the_next_request():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    default, tuned = run_probe("default"), run_probe("tune")
    assert default["faults"] >= 9 * pages  # glibc unmapped each freed buffer: ten fresh mappings faulted in
    assert tuned["tuned"] is True and tuned["faults"] < pages // 10  # the freed buffer came back from the heap
    # a user who set glibc's own switch keeps their settings
    assert run_probe("tune", GLIBC_TUNABLES="")["tuned"] is False
