"""Subscribers that show the core's events: a rich Live dashboard on a terminal, a plain log otherwise.

Both only store what arrives; the dashboard draws on its own thread twice a second and the plain
log prints one line every few seconds, so neither can slow the socket. Each has start/stop (a context
manager) and the same `__call__(event)`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich.markup import escape

from orchestrator.events import (
    Event,
    FileFinished,
    FileStarted,
    Notice,
    PiHealthReport,
    Progress,
    State,
    StateChanged,
)

SPARK = " ▁▂▃▄▅▆▇█"


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.2f} TB"


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def build_sparkline(values: list[float], width: int = 30) -> str:
    """Pure: values scaled to their maximum, the newest on the right."""
    values = values[-width:]
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, round(v / top * (len(SPARK) - 1)))] for v in values)


def format_health(health: PiHealthReport) -> str:
    """One line: temperature, throttling in words, load, free memory, whether the pipeline runs."""
    parts = []
    if health.temp_c is not None:
        parts.append(f"{health.temp_c:.1f} °C")
    parts.append(", ".join(health.throttled) if health.throttled else "not throttled")
    if health.load1 is not None:
        parts.append(f"load {health.load1:.2f}")
    if health.mem_available_mb is not None:
        parts.append(f"{health.mem_available_mb} MB free")
    if health.pipeline_alive is not None:
        parts.append("pipeline running" if health.pipeline_alive else "pipeline NOT running")
    return ", ".join(parts)


def minutes_of_space(free_bytes: int | None, bps: float) -> float | None:
    if free_bytes is None or bps <= 0:
        return None
    return free_bytes * 8 / bps / 60


class _Model:
    """What both displays know: the latest snapshot and a minute of per-second rates."""

    def __init__(self) -> None:
        self.state = State.CONNECTING
        self.detail = ""
        self.progress: Progress | None = None
        self.history: deque[float] = deque(maxlen=60)
        self._last_sample = 0.0
        self.notices: deque[Notice] = deque(maxlen=4)
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
        elif isinstance(event, Notice):
            self.notices.append(event)
        elif isinstance(event, FileStarted):
            self.files_open += 1
        elif isinstance(event, FileFinished):
            self.files_open = max(0, self.files_open - 1)
            self.files_done.append(event)
        elif isinstance(event, PiHealthReport):
            self.health = event


class Dashboard:
    """The live view: state, time with a progress bar, bytes, Mbit/s against the target, a sparkline of
    the last minute, and free disk space in minutes of recording."""

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
            style = {"error": "bold red", "warning": "yellow"}.get(event.level, "")
            text = escape(event.message)  # messages hold [brackets] (IPv6, known_hosts names), not markup
            self._console.print(f"[{style}]{text}[/]" if style else text)

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
            progress = model.progress
            history = list(model.history)
            state, detail = model.state, model.detail
            health = model.health
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold cyan", justify="right")
        grid.add_column()
        colour = {State.FAILED: "red", State.INTERRUPTED: "yellow", State.DONE: "green"}.get(state, "white")
        grid.add_row("state", f"[{colour}]{state.value}[/] {detail}")
        if progress is not None:
            elapsed = format_duration(progress.elapsed_s)
            if progress.duration_s:
                remaining = format_duration(progress.duration_s - progress.elapsed_s)
                bar = ProgressBar(total=progress.duration_s, completed=min(progress.elapsed_s, progress.duration_s),
                                  width=30)
                time_row = Table.grid(padding=(0, 1))
                time_row.add_row(bar, f"{elapsed} elapsed, {remaining} left")
                grid.add_row("time", time_row)
            else:
                grid.add_row("time", f"{elapsed} elapsed (until Ctrl+C)")
            grid.add_row("received", f"{format_bytes(progress.bytes_total)} in {model.files_open} open file(s), "
                                     f"{len(model.files_done)} finished")
            target = f" of {progress.target_bps / 1e6:.1f} requested" if progress.target_bps else ""
            grid.add_row("Mbit/s", f"{progress.rate_bps / 1e6:6.2f} now, {progress.average_bps / 1e6:6.2f} average"
                                   f"{target}")
            if progress.fps is not None:
                grid.add_row("frames/s", f"{progress.fps:.1f}")
            grid.add_row("last minute", build_sparkline(history))
            rate = progress.average_bps or progress.rate_bps or float(progress.target_bps or 0)
            minutes = minutes_of_space(progress.free_bytes, rate)
            if progress.free_bytes is not None:
                hold = f", about {minutes:,.0f} min at this rate" if minutes is not None else ""
                grid.add_row("disk free", f"{format_bytes(progress.free_bytes)}{hold}")
        if health is not None:
            style = "red" if health.throttled or health.warnings else ""
            grid.add_row("Pi", f"[{style}]{format_health(health)}[/]" if style else format_health(health))
        return Panel(grid, title=self._title, expand=False)


class PlainLog:
    """Not a terminal: one line every few seconds, plus state changes, notices and files."""

    def __init__(self, stream: IO[str] | None = None, every_s: float = 5.0, prefix: str = "") -> None:
        self._stream = stream or sys.stderr
        self._every = every_s
        self._last = 0.0
        self._prefix = prefix

    def _say(self, text: str) -> None:
        self._stream.write(time.strftime("%H:%M:%S ") + self._prefix + text + "\n")
        self._stream.flush()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Progress):
            now = time.monotonic()
            if now - self._last < self._every:
                return
            self._last = now
            left = f", {format_duration(event.duration_s - event.elapsed_s)} left" if event.duration_s else ""
            self._say(f"{format_duration(event.elapsed_s)} elapsed{left}: {format_bytes(event.bytes_total)}, "
                      f"{event.rate_bps / 1e6:.2f} Mbit/s now, {event.average_bps / 1e6:.2f} average")
        elif isinstance(event, StateChanged):
            self._say(f"{event.state.value}{': ' + event.detail if event.detail else ''}")
        elif isinstance(event, Notice):
            self._say(f"{event.level}: {event.message}")
        elif isinstance(event, FileStarted):
            self._say(f"receiving {event.path.name} from {event.peer}")
        elif isinstance(event, FileFinished):
            what = "removed (--discard-partial)" if event.removed else event.status.value
            self._say(f"{event.path.name}: {format_bytes(event.bytes)}, {what}")

    @contextmanager
    def running(self) -> Iterator[None]:
        yield


class FleetDashboard:
    """Several Pis: one row each (state, Mbit/s, sparkline, frames/s, files, health), drawn on its own clock."""

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
            style = {"error": "bold red", "warning": "yellow"}.get(event.level, "")
            text = f"{tagged.pi}: {event.message}" if tagged.pi else event.message
            self._console.print(f"[{style}]{escape(text)}[/]" if style else escape(text))

    @contextmanager
    def running(self) -> Iterator[None]:
        from rich.live import Live

        with Live(self._render(), console=self._console, refresh_per_second=2, get_renderable=self._render):
            yield

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title="piorch record", expand=False)
        for name in ("Pi", "state", "time", "Mbit/s", "last minute", "frames/s", "files", "health"):
            table.add_column(name)
        with self._lock:
            rows = [(pi, m.state, m.detail, m.progress, list(m.history), len(m.files_done), m.health)
                    for pi, m in self._models.items()]
        for pi, state, detail, progress, history, done, health in rows:
            colour = {State.FAILED: "red", State.INTERRUPTED: "yellow", State.DONE: "green"}.get(state, "white")
            table.add_row(
                escape(pi), f"[{colour}]{state.value}[/]" + (f" {escape(detail)}" if state is State.FAILED else ""),
                format_duration(progress.elapsed_s) if progress else "",
                f"{progress.rate_bps / 1e6:.2f}" if progress else "",
                build_sparkline(history, 20),
                f"{progress.fps:.1f}" if progress and progress.fps is not None else "",
                str(done),
                escape(format_health(health)) if health else "",
            )
        return table


class FleetLog:
    """Several Pis, not a terminal: the plain log with each line prefixed by its Pi."""

    def __init__(self, pis: list[str], stream: IO[str] | None = None) -> None:
        self._logs = {pi: PlainLog(stream, prefix=f"[{pi}] ") for pi in pis}
        self._general = PlainLog(stream)

    def __call__(self, tagged: Any) -> None:
        self._logs.get(tagged.pi, self._general)(tagged.event)

    @contextmanager
    def running(self) -> Iterator[None]:
        yield


def render_summary(files: list[FileFinished] | tuple[FileFinished, ...], console: Any) -> None:
    """The table printed at the end: file, size, duration, average Mbit/s, status."""
    from rich.table import Table

    folders = sorted({str(item.path.parent) for item in files})
    table = Table(title=f"received in {', '.join(folders)}")
    for name in ("file", "size", "duration", "avg Mbit/s", "status"):
        table.add_column(name, justify="right" if name in ("size", "duration", "avg Mbit/s") else "left")
    for item in files:
        rate = item.bytes * 8 / item.duration_s / 1e6 if item.duration_s > 0 else 0.0
        status = "removed" if item.removed else item.status.value
        table.add_row(item.path.name, format_bytes(item.bytes), format_duration(item.duration_s), f"{rate:.2f}",
                      status)
    console.print(table)
