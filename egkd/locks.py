"""File locks that let several processes share one results folder and one teacher cache.

Why: the grid is meant to be finished by several sessions, and on a 2-core machine two processes at once are
faster than one. Two processes must not train the same unit, a process that rewrites ``results.jsonl``
(``--rerun-stale``) must not drop a line that another process appends at that moment, and two runs that need
the same teacher cache entry must not build it into the same partial folder (:mod:`egkd.cache`).
``fcntl.flock`` locks belong to the open file and are released by the OS when a process dies, so a crashed run
never leaves a unit locked (the lock file left behind is harmless). Where ``fcntl`` does not exist (Windows) the
locks do nothing: run one process per results folder there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@contextmanager
def exclusive(path: Path, wait: bool = True, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Yields True while holding it; with ``wait=False`` yields False at once (holding nothing) when another
    process (or another open file in this one) holds it. ``on_wait`` is called once, before blocking, when
    the lock is held elsewhere: a wait can last as long as another run's cache build, and should say so.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        if fcntl is None:  # pragma: no cover - Windows
            yield True
            return
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
