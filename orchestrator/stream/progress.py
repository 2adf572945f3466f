"""Progress snapshots on the core's own clock: the data path only bumps counters, this reads them."""

from __future__ import annotations

import shutil
import time
from collections import deque
from pathlib import Path

from orchestrator.events import EventSink, Progress
from orchestrator.stream.frame_times import FrameTimes
from orchestrator.stream.receiver import Receiver

TICK_S = 0.5


class ProgressClock:
    def __init__(self, receiver: Receiver, on_event: EventSink, out_dir: Path,
                 duration_s: float | None, target_bps: int | None, frame_times: FrameTimes | None = None) -> None:
        self._receiver = receiver
        # The camera's timestamps, when it sends them: frames, frames dropped, the longest gap.
        self._frame_times = frame_times
        self._on_event = on_event
        self._out_dir = out_dir
        self._duration_s = duration_s
        self._target_bps = target_bps
        self._started = time.monotonic()
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=8)
        self._next = 0.0
        self._first_byte_at: float | None = None

    def restart(self) -> None:
        """Elapsed time counts from the moment the camera was started."""
        self._started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + TICK_S
        total = self._receiver.bytes_total
        frames = self._receiver.frames_total
        if total and self._first_byte_at is None:
            self._first_byte_at = now
        self._samples.append((now, total, frames))
        # Current rate over the last ~2 s of samples: smooth enough to read, quick enough to show a stall.
        then, then_bytes, then_frames = self._samples[0]
        rate = (total - then_bytes) * 8 / (now - then) if now > then else 0.0
        fps = (frames - then_frames) / (now - then) if now > then and frames else None
        since = now - self._first_byte_at if self._first_byte_at is not None else 0.0
        average = total * 8 / since if since > 0.5 else rate
        try:
            free: int | None = shutil.disk_usage(self._out_dir).free
        except OSError:
            free = None
        camera_frames = dropped = longest = None
        if self._frame_times is not None:
            camera_frames, dropped, longest = self._frame_times.integrity()
        self._on_event(Progress(
            elapsed_s=now - self._started, duration_s=self._duration_s, bytes_total=total, rate_bps=rate,
            average_bps=average, target_bps=self._target_bps, active_connections=self._receiver.active,
            free_bytes=free, fps=fps, camera_frames=camera_frames, frames_dropped=dropped, longest_gap_ms=longest,
        ))
