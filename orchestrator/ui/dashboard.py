"""The live views on a terminal: one Pi (a panel), several Pis (a row each).

Both only store what arrives (`__call__` takes the lock, updates the model and returns); rich's Live draws
on its own thread twice a second, so a slow terminal never slows the socket. Notices print above the view.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.text import Text

from orchestrator.events import (
    Event,
    FileFinished,
    FileStarted,
    Notice,
    PiHealthReport,
    Progress,
    State,
    StateChanged,
    minutes_of_space,
)
from orchestrator.ui.format import (
    WARNING_STYLE,
    build_sparkline,
    format_duration,
    format_health,
    format_size,
    integrity_text,
    notice_text,
    state_text,
)


class _Model:
    """What both dashboards know of one Pi: the latest snapshot and a minute of per-second rates."""

    def __init__(self) -> None:
        self.state = State.CONNECTING
        self.detail = ""
        self.progress: Progress | None = None
        self.history: deque[float] = deque(maxlen=60)
        self._last_sample = float("-inf")  # the first sample is kept, whatever the clock reads
        self.files_open = 0
        self.files_done: list[FileFinished] = []
        self.health: PiHealthReport | None = None

    def update(self, event: Event) -> None:
        if isinstance(event, Progress):
            self.progress = event
            now = time.monotonic()
            if now - self._last_sample >= 1.0:
                self._last_sample = now
                self.history.append(event.rate_bps)
        elif isinstance(event, StateChanged):
            self.state, self.detail = event.state, event.detail
        elif isinstance(event, FileStarted):
            self.files_open += 1
        elif isinstance(event, FileFinished):
            self.files_open = max(0, self.files_open - 1)
            self.files_done.append(event)
        elif isinstance(event, PiHealthReport):
            self.health = event


def _dropped_text(progress: Progress | None) -> Text:
    """A fleet row's count of dropped frames: empty without camera timestamps, warning colour above 0."""
    if progress is None or progress.frames_dropped is None:
        return Text("")
    return Text(f"{progress.frames_dropped:,}", style=WARNING_STYLE if progress.frames_dropped else "")


def _health_text(health: PiHealthReport) -> Text:
    return Text(format_health(health), style="red" if health.throttled or health.warnings else "")


class Dashboard:
    """One Pi: state, time with a progress bar, bytes, Mbit/s against the target, a sparkline of the last
    minute, free disk space in minutes of recording, and the Pi's health."""

    def __init__(self, title: str, console: Any = None) -> None:
        from rich.console import Console

        self._title = title
        self._console = console or Console(stderr=True)
        self._model = _Model()
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._model.update(event)
        if isinstance(event, Notice):
            self._console.print(notice_text(event))

    @contextmanager
    def running(self) -> Iterator[None]:
        from rich.live import Live

        with Live(self._render(), console=self._console, refresh_per_second=2, transient=False,
                  get_renderable=self._render):
            yield

    def _render(self) -> Any:
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        with self._lock:
            model = self._model
            progress, history = model.progress, list(model.history)
            state, detail, health = model.state, model.detail, model.health
            files_open, files_done = model.files_open, len(model.files_done)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold cyan", justify="right")
        grid.add_column()
        grid.add_row("state", state_text(state, detail))
        if progress is not None:
            elapsed = format_duration(progress.elapsed_s)
            if progress.duration_s:
                remaining = format_duration(progress.duration_s - progress.elapsed_s)
                bar = ProgressBar(total=progress.duration_s, completed=min(progress.elapsed_s, progress.duration_s),
                                  width=30)
                time_row = Table.grid(padding=(0, 1))
                time_row.add_row(bar, Text(f"{elapsed} elapsed, {remaining} left"))
                grid.add_row("time", time_row)
            else:
                grid.add_row("time", Text(f"{elapsed} elapsed (until Ctrl+C)"))
            grid.add_row("received", Text(f"{format_size(progress.bytes_total)} in {files_open} open file(s), "
                                          f"{files_done} finished"))
            target = f" of {progress.target_bps / 1e6:.1f} requested" if progress.target_bps else ""
            grid.add_row("Mbit/s", Text(f"{progress.rate_bps / 1e6:6.2f} now, {progress.average_bps / 1e6:6.2f} "
                                        f"average{target}"))
            if progress.fps is not None:
                grid.add_row("frames/s", Text(f"{progress.fps:.1f}"))
            camera = integrity_text(progress)
            if camera is not None:
                # The camera's own clock: frames it dropped show as they happen, in the warning colour.
                grid.add_row("camera", camera)
            grid.add_row("last minute", Text(build_sparkline(history)))
            rate = progress.average_bps or progress.rate_bps or float(progress.target_bps or 0)
            minutes = minutes_of_space(progress.free_bytes, rate)
            if progress.free_bytes is not None:
                hold = f", about {minutes:,.0f} min at this rate" if minutes is not None else ""
                grid.add_row("disk free", Text(f"{format_size(progress.free_bytes)}{hold}"))
        if health is not None:
            grid.add_row("Pi", _health_text(health))
        return Panel(grid, title=Text(self._title), expand=False)


class FleetDashboard:
    """Several Pis: one row each (state, Mbit/s, sparkline, frames/s, files, health), drawn on its own clock.

    Events come tagged with their Pi (`.pi`, `.event`: jobs.fleet.FromPi).
    """

    def __init__(self, pis: list[str], console: Any = None) -> None:
        from rich.console import Console

        self._console = console or Console(stderr=True)
        self._models = {pi: _Model() for pi in pis}
        self._lock = threading.Lock()

    def __call__(self, tagged: Any) -> None:
        event = tagged.event
        with self._lock:
            model = self._models.get(tagged.pi)
            if model is not None:
                model.update(event)
        if isinstance(event, Notice):
            self._console.print(notice_text(event, f"{tagged.pi}: " if tagged.pi else ""))

    @contextmanager
    def running(self) -> Iterator[None]:
        from rich.live import Live

        with Live(self._render(), console=self._console, refresh_per_second=2, get_renderable=self._render):
            yield

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title="piorch record", expand=False)
        for name in ("Pi", "state", "time", "Mbit/s", "last minute", "frames/s", "dropped", "files", "health"):
            table.add_column(name)
        with self._lock:
            rows = [(pi, m.state, m.detail, m.progress, list(m.history), len(m.files_done), m.health)
                    for pi, m in self._models.items()]
        for pi, state, detail, progress, history, done, health in rows:
            table.add_row(
                # Only a failure's reason is worth the room in a row; other details are in the log.
                Text(pi), state_text(state, detail if state is State.FAILED else ""),
                format_duration(progress.elapsed_s) if progress else "",
                f"{progress.rate_bps / 1e6:.2f}" if progress else "",
                build_sparkline(history, 20),
                f"{progress.fps:.1f}" if progress and progress.fps is not None else "",
                _dropped_text(progress),
                str(done),
                _health_text(health) if health else "",
            )
        return table
