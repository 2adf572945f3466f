"""The camera's own frame timestamps: "# timecode format v2" (one millisecond time a frame, as
`raspivid -pts` and `rpicam-vid --save-pts` write it, and as mkvmerge reads it), and what they say about
the recording's integrity: frames, dropped frames, the longest gap, the measured rate.

Pure: lines in, numbers out. A gap larger than 1.5 frame intervals means the camera dropped frames there:
round(gap / interval) - 1 of them. The interval is the one asked for (`fps`); without it, or when the camera
plainly runs slower than asked (the typical gap is itself over 1.5 asked intervals: a sensor mode that cannot
reach the rate), the median of the recent gaps.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

HEADER = "# timecode format v2"
# A gap counts as dropped frames when it is longer than this many frame intervals.
DROP_FACTOR = 1.5


def parse_timecode_line(line: str) -> float | None:
    """`33.370` -> 33.37 (milliseconds); the header, comments and blank lines -> None; ValueError otherwise."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    value = float(text)
    if value != value or value < 0:  # NaN or negative: not a camera time
        raise ValueError(f"not a frame time: {text!r}")
    return value


def build_timecode_text(times_ms: Iterable[float]) -> str:
    """The sidecar's text: the header, then one time a line with three decimals (the tools' own form)."""
    return HEADER + "\n" + "".join(f"{time:.3f}\n" for time in times_ms)


@dataclass(frozen=True)
class Integrity:
    frames: int
    frames_dropped: int
    # The longest time between two frames, in milliseconds (0 with fewer than two frames).
    longest_gap_ms: float
    # Frames per second over the whole span (None with fewer than two frames).
    fps_measured: float | None


class IntegrityCounter:
    """Follows timestamps as they come (live), counting frames and the frames the camera dropped."""

    def __init__(self, fps: float | None = None) -> None:
        self._interval = 1000.0 / fps if fps else None
        self._first: float | None = None
        self._last: float | None = None
        self._gaps: list[float] = []
        self.frames = 0
        self.frames_dropped = 0
        self.longest_gap_ms = 0.0

    def add(self, time_ms: float) -> int:
        """Count one frame; return how many frames were dropped just before it."""
        self.frames += 1
        previous, self._last = self._last, time_ms
        if previous is None:
            self._first = time_ms
            return 0
        gap = time_ms - previous
        self.longest_gap_ms = max(self.longest_gap_ms, gap)
        interval = self._interval
        if interval is None:
            # The typical gap so far, this one included (a few dropped frames do not move a median).
            interval = statistics.median([*self._gaps, gap])
        elif gap > DROP_FACTOR * interval and self._gaps:
            # Looked at only when it could change the answer, from the gaps before this one (the first gap
            # is judged by the asked rate alone).
            typical = statistics.median_low(self._gaps)
            if typical > DROP_FACTOR * interval:
                interval = typical
        self._gaps.append(gap)
        if len(self._gaps) > 256:
            del self._gaps[:128]
        dropped = round(gap / interval) - 1 if interval > 0 and gap > DROP_FACTOR * interval else 0
        self.frames_dropped += dropped
        return dropped

    def result(self) -> Integrity:
        span = (self._last or 0.0) - (self._first or 0.0)
        fps = (self.frames - 1) * 1000.0 / span if self.frames > 1 and span > 0 else None
        return Integrity(self.frames, self.frames_dropped, round(self.longest_gap_ms, 3),
                         round(fps, 3) if fps else None)


def measure(times_ms: Sequence[float], fps: float | None = None) -> Integrity:
    """A whole file's times at once (in order). Its typical gap (the lower median) is the interval when no
    rate was asked, or when it shows a camera slower than asked; else the asked rate's interval, from the
    first frame on (the live counter can only learn the typical gap as it goes)."""
    frames = len(times_ms)
    gaps = [b - a for a, b in pairwise(times_ms)]
    if not gaps:
        return Integrity(frames, 0, 0.0, None)
    longest = max(gaps)
    interval = 1000.0 / fps if fps else None
    # The median is needed only where it could change the answer: some gap is long for the asked rate.
    if interval is None or longest > DROP_FACTOR * interval:
        typical = statistics.median_low(gaps)
        if interval is None or typical > DROP_FACTOR * interval:
            interval = typical
    limit = DROP_FACTOR * interval
    dropped = sum(round(gap / interval) - 1 for gap in gaps if gap > limit) if interval > 0 else 0
    span = times_ms[-1] - times_ms[0]
    measured = (frames - 1) * 1000.0 / span if span > 0 else None
    return Integrity(frames, dropped, round(longest, 3), round(measured, 3) if measured else None)
