"""Plain lines for when stderr is not a terminal (pipes, CI, systemd, cron): record, snap, recover, fleets.

Progress is one line every few seconds at most; states, notices and files one line each as they come. Lines
are written whole under a lock: events arrive from several threads (receiver, capture, fleet workers).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from orchestrator.events import FileFinished, FileStarted, Notice, Progress, SnapProgress, StateChanged
from orchestrator.ui.format import format_duration, format_integrity, format_size


class PlainLog:
    """One line an event worth a line. `announce_files=False` leaves out the "receiving ..." line of a file
    that has just started (snap: the `.tmp` name says nothing yet; the picture is told when it is saved)."""

    def __init__(self, stream: IO[str] | None = None, every_s: float = 5.0, prefix: str = "",
                 announce_files: bool = True, lock: threading.Lock | None = None) -> None:
        self._stream = stream or sys.stderr
        self._every = every_s
        # The first progress line is said at once (monotonic time may be small: a machine just booted).
        self._last = float("-inf")
        self._prefix = prefix
        self._announce_files = announce_files
        # Frames the camera had dropped at the last line said: a new drop is said at once.
        self._dropped = 0
        # Shared by the logs that write to one stream (a fleet's), so that their lines never interleave.
        self._lock = lock or threading.Lock()

    def _say(self, text: str) -> None:
        with self._lock:
            self._stream.write(time.strftime("%H:%M:%S ") + self._prefix + text + "\n")
            self._stream.flush()

    def __call__(self, event: object) -> None:
        if isinstance(event, Progress):
            now = time.monotonic()
            if event.frames_dropped and event.frames_dropped > self._dropped:
                new, self._dropped = event.frames_dropped - self._dropped, event.frames_dropped
                self._say(f"warning: the camera dropped {new:,} frame(s): {format_integrity(event)}")
            if now - self._last < self._every:
                return
            self._last = now
            left = f", {format_duration(event.duration_s - event.elapsed_s)} left" if event.duration_s else ""
            camera = format_integrity(event)
            self._say(f"{format_duration(event.elapsed_s)} elapsed{left}: {format_size(event.bytes_total)}, "
                      f"{event.rate_bps / 1e6:.2f} Mbit/s now, {event.average_bps / 1e6:.2f} average"
                      + (f"; camera: {camera}" if camera else ""))
        elif isinstance(event, SnapProgress):
            if event.taking:
                self._say(f"image {event.taking} of {event.count}: taking")
        elif isinstance(event, StateChanged):
            self._say(f"{event.state.value}{': ' + event.detail if event.detail else ''}")
        elif isinstance(event, Notice):
            self._say(f"{event.level}: {event.message}")
        elif isinstance(event, FileStarted):
            if self._announce_files:
                self._say(f"receiving {event.path.name} from {event.peer}")
        elif isinstance(event, FileFinished):
            what = "removed (--discard-partial)" if event.removed else event.status.value
            self._say(f"{event.path.name}: {format_size(event.bytes)}, {what}")

    @contextmanager
    def running(self) -> Iterator[None]:
        yield


class FleetLog:
    """Several Pis: the plain log with each line prefixed by its Pi. Events come tagged (`.pi`, `.event`)."""

    def __init__(self, pis: list[str], stream: IO[str] | None = None) -> None:
        lock = threading.Lock()
        self._logs = {pi: PlainLog(stream, prefix=f"[{pi}] ", lock=lock) for pi in pis}
        self._general = PlainLog(stream, lock=lock)

    def __call__(self, tagged: Any) -> None:
        self._logs.get(tagged.pi, self._general)(tagged.event)

    @contextmanager
    def running(self) -> Iterator[None]:
        yield
