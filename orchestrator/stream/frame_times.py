"""The camera's frame timestamps as they arrive over SSH, handed to the files that hold those frames.

One `CameraRun` a start of the camera: its clock starts at 0 with its first frame (a camera started again
after a lost link starts a new run). Timestamps come in on the thread that follows the pipeline (`add_lines`:
the lines of the camera's timecode file, as each poll read them); a file claims its frames' times by frame
order when it is finished (`take(first_frame, count)`), on the receiver's closer thread or the job's; the progress clock
reads the live counters. Frame n of a connection is the camera's n-th timestamp: the sinks count frames in
the order the camera wrote them, which is the order it wrote its timestamps.

`FrameTimes` is one recording's list of runs. A sink takes the run that is current when its connection
opens (`current`), so a straggling connection of an old run never takes the new run's times.
"""

from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass

from orchestrator.stream.timecodes import Integrity, IntegrityCounter, measure, parse_timecode_line

# The live counter takes times in order; a camera that writes them in decode order (libx264 with B-frames
# writes each packet's presentation time) is put back in order over this many frames.
REORDER_FRAMES = 8


class CameraRun:
    """The timestamps of one camera run."""

    def __init__(self, fps: float | None = None) -> None:
        self._fps = fps
        self._changed = threading.Condition()
        self._times: list[float] = []
        self._window: list[float] = []
        self._counter = IntegrityCounter(fps)
        self._closed = False
        # Lines that were neither a frame time nor the header (a garbled line is counted, never fatal).
        self.bad_lines = 0

    def add_lines(self, lines: list[str]) -> None:
        """Lines of the camera's timecode file, in order (its header and blank lines are skipped)."""
        values: list[float] = []
        for text in lines:
            try:
                # The common line, a time, at the cost of one float(); anything else is looked at closely.
                quick = float(text)
                if quick >= 0:  # False for NaN too
                    values.append(quick)
                    continue
            except ValueError:
                pass
            try:
                value = parse_timecode_line(text)
            except ValueError:
                self.bad_lines += 1
                continue
            if value is not None:
                values.append(value)
        if values:
            self.add(*values)

    def add(self, *times_ms: float) -> None:
        with self._changed:
            if self._closed:
                return
            self._times.extend(times_ms)
            window = self._window
            for time_ms in times_ms:
                heapq.heappush(window, time_ms)
                if len(window) > REORDER_FRAMES:
                    self._counter.add(heapq.heappop(window))
            self._changed.notify_all()

    def close(self) -> None:
        """No more timestamps will come (the pipeline ended): waiting files take what there is."""
        with self._changed:
            while self._window:
                self._counter.add(heapq.heappop(self._window))
            self._closed = True
            self._changed.notify_all()

    @property
    def closed(self) -> bool:
        with self._changed:
            return self._closed

    @property
    def count(self) -> int:
        with self._changed:
            return len(self._times)

    def integrity(self) -> Integrity:
        """The live readout over the whole run: frames (every timestamp come), dropped frames and the longest
        gap (up to the last REORDER_FRAMES, until the run is closed)."""
        with self._changed:
            counted = self._counter.result()
            return Integrity(len(self._times), counted.frames_dropped, counted.longest_gap_ms, counted.fps_measured)

    def wait_for(self, frames: int | None, timeout: float) -> bool:
        """Wait until `frames` timestamps have come (None: until the run is closed) or the run is closed;
        False at the deadline."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (frames is None or len(self._times) < frames) and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def take(self, first: int, count: int | None, timeout: float) -> FileTimes:
        """The times of frames first .. first + count - 1 (count None: every frame from `first` on, once the
        run is closed), waiting up to `timeout` for them to arrive. Fewer when they never came."""
        self.wait_for(None if count is None else first + count, timeout)
        with self._changed:
            end = len(self._times) if count is None else min(len(self._times), first + count)
            times = tuple(self._times[first:end])
            before = self._times[first - 1] if 0 < first <= len(self._times) else None
        return FileTimes(times, before, self._fps, count)

    def time_of(self, frame: int, timeout: float) -> float | None:
        """Frame `frame`'s time, waiting up to `timeout` for it; None when it did not come."""
        self.wait_for(frame + 1, timeout)
        with self._changed:
            return self._times[frame] if frame < len(self._times) else None


@dataclass(frozen=True)
class FileTimes:
    """The camera's timestamps of one file's frames, in the order the camera wrote them."""

    times: tuple[float, ...]
    # The run's time of the frame before this file's first (the gap into a segment counts for that segment).
    before: float | None
    fps: float | None
    # Frames the file holds by the parser's count (None: not counted); more than len(times) means some of
    # its frames have no timestamp (the camera was killed before writing it, or the link was lost).
    frames: int | None

    @property
    def missing(self) -> int:
        return max(0, self.frames - len(self.times)) if self.frames is not None else 0

    def integrity(self) -> Integrity:
        """Frames, dropped frames (the gap into the file's first frame included), longest gap, measured fps."""
        ordered = sorted(self.times)
        whole = measure(([self.before] if self.before is not None else []) + ordered, self.fps)
        span = ordered[-1] - ordered[0] if ordered else 0.0
        fps = round((len(ordered) - 1) * 1000.0 / span, 3) if span > 0 else None
        return Integrity(len(ordered), whole.frames_dropped, whole.longest_gap_ms, fps)


class FrameTimes:
    """One recording's camera runs, the current one last."""

    def __init__(self, fps: float | None = None) -> None:
        self._fps = fps
        self._lock = threading.Lock()
        self._runs: list[CameraRun] = []

    def begin_run(self) -> CameraRun:
        run = CameraRun(self._fps)
        with self._lock:
            self._runs.append(run)
        return run

    @property
    def current(self) -> CameraRun | None:
        with self._lock:
            return self._runs[-1] if self._runs else None

    def integrity(self) -> tuple[int, int, float]:
        """Over every run so far: frames, frames dropped, the longest gap in milliseconds."""
        with self._lock:
            runs = list(self._runs)
        results = [run.integrity() for run in runs]
        return (sum(r.frames for r in results), sum(r.frames_dropped for r in results),
                max((r.longest_gap_ms for r in results), default=0.0))
