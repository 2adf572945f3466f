"""`snap` on a terminal: rich's progress bar of pictures taken, with notices and saved files printed above it.

rich redraws on its own thread, so an event only updates the bar's numbers and returns. Off a terminal,
snap uses the plain log (ui.log.PlainLog with announce_files=False).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.text import Text

from orchestrator.events import FileFinished, Notice, SnapProgress, StateChanged
from orchestrator.ui.format import notice_text


class SnapBar:
    def __init__(self, title: str, count: int, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._console = console or Console(stderr=True)
        # markup=False: the title holds the Pi's name as the user wrote it.
        self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[status]}", markup=False), TimeElapsedColumn(),
                                  console=self._console, transient=False)
        self._task = self._progress.add_task(title, total=count, status="connecting")

    def __call__(self, event: object) -> None:
        if isinstance(event, SnapProgress):
            status = (f"taking image {event.taking}" if event.taking
                      else f"next in {event.next_in_s:.0f} s" if event.next_in_s > 0 else "")
            self._progress.update(self._task, completed=event.done, status=status)
        elif isinstance(event, StateChanged):
            self._progress.update(self._task, status=event.state.value)
        elif isinstance(event, Notice):
            self._console.print(notice_text(event))
        elif isinstance(event, FileFinished):
            self._console.print(Text(f"{event.path.name}: {event.status.value}"))

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._progress:
            yield
