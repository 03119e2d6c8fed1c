"""Console output: one rich console, progress bars that stay quiet on non-main processes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
T = TypeVar("T")


def _progress() -> Progress:
    """Description, bar, n/total, elapsed, remaining and a free-text field (e.g. the loss)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console)


def track(items: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar (elapsed, remaining); a plain loop when disabled."""
    if not enabled:
        yield from items
        return
    with _progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)


class Bar:
    """A progress bar driven by hand, for loops whose body wants to post a status (e.g. the loss)."""

    def __init__(self, description: str, total: int, enabled: bool = True, completed: int = 0) -> None:
        self.enabled = enabled
        if enabled:
            self.progress = _progress()
            self.task = self.progress.add_task(description, total=total, completed=completed, info="")
            self.progress.start()

    def update(self, advance: int = 1, info: str | None = None) -> None:
        if self.enabled:
            kw = {"info": info} if info is not None else {}
            self.progress.update(self.task, advance=advance, **kw)

    def close(self) -> None:
        if self.enabled:
            self.progress.stop()
