"""Keep glibc's allocator from handing big tensor buffers back to the kernel after every use.

glibc serves a request above its mmap threshold (at most 32 MiB, adjusted on the fly) with a fresh ``mmap`` and
unmaps it on ``free``. Integrated gradients push all their path points through the teacher at once (a batch of
32 at 8 steps and 128 tokens is a 200 MiB feed-forward activation), so every batch maps such buffers afresh and
faults their pages in again. Building RTE's IG teacher cache, glibc's defaults spent 56 of 205 CPU seconds in
the kernel and faulted in 87 GiB; with both thresholds raised, 7 s and 6 GiB, and the build took 0.76x the time
(the perturbation cache's 0.81x; measurements section 25, ``scripts/cache_build_bench.py ... --malloc``).
Training steps and the gradient x input cache, whose buffers stay below the threshold glibc adapts to, change
little (the IG variant's step 0.96x; KD's, the gxi family's and the gxi cache the same). The cost: the process
keeps its peak heap instead of returning it, and a training run reaches that peak again at every step anyway.

The CLI calls :func:`tune_malloc` once at start; a library user may call it too. ``GLIBC_TUNABLES`` (glibc's own
switch, read at process start) says the user chose the allocator's settings: they are left alone then.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# 1 GiB (mallopt takes an int): larger than any buffer a step of these models allocates
THRESHOLD = 1 << 30


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; returns whether they were set (False off glibc, or
    when ``GLIBC_TUNABLES`` is set: the user's settings win)."""
    if "GLIBC_TUNABLES" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, THRESHOLD))
