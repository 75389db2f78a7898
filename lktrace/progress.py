"""A progress line on the terminal for work that takes more than a couple of seconds."""

from __future__ import annotations

import time
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lktrace.console import err

#: Seconds of work before the line appears: quick runs print nothing.
DELAY = 2.0


class Meter:
    """Counts events replayed and files done; draws a rich progress line on stderr
    once the work has run for :data:`DELAY` seconds (never when stderr is not a terminal)."""

    def __init__(self, events: int, files: int, what: str = "replaying") -> None:
        self.events, self.files, self.what = events, files, what
        self.start = time.monotonic()
        self.done_events = self.done_files = 0
        self._progress: Progress | None = None
        self._bars: tuple = ()
        self.enabled = err.is_terminal

    def rows(self, n: int) -> None:
        """``n`` more events read."""
        self.done_events += n
        self._draw()

    def file_done(self, path: Path) -> None:
        self.done_files += 1
        self._draw(path.name)

    def _draw(self, name: str = "") -> None:
        if not self.enabled:
            return
        if self._progress is None:
            if time.monotonic() - self.start < DELAY:
                return
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self._progress.start()
            bars = [self._progress.add_task(self.what + " events", total=self.events, rate="")]
            if self.files > 1:
                bars.append(self._progress.add_task("files", total=self.files, rate=""))
            self._bars = tuple(bars)
        rate = self.done_events / max(time.monotonic() - self.start, 1e-9)
        self._progress.update(
            self._bars[0], completed=self.done_events, rate=f"{rate / 1e6:.2f} M events/s"
        )
        if len(self._bars) > 1:
            self._progress.update(self._bars[1], completed=self.done_files, rate=name)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
