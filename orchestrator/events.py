"""What the core reports. The dashboard, the plain log, JSON output and tests are all subscribers.

A subscriber is any callable taking one event; it must return quickly (the dashboard only stores the
event and draws on its own clock), so a slow terminal never slows the data path.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class State(str, enum.Enum):
    CONNECTING = "connecting"
    PROBING = "probing the Pi"
    LISTENING = "listening"
    STARTING = "starting camera"
    RECORDING = "recording"
    STALLED = "stalled"
    RESUMING = "reconnecting"
    STOPPING = "stopping"
    DONE = "done"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class FileStatus(str, enum.Enum):
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    # A `.tmp` left by a run that was killed, finalised later by `piorch recover` or the next run.
    RECOVERED = "recovered"
    # Everything that arrived before the link was lost; the recording resumed in the next file.
    LINK_LOST = "link-lost"


@dataclass(frozen=True)
class StateChanged:
    state: State
    detail: str = ""


@dataclass(frozen=True)
class Progress:
    """A snapshot taken on the core's clock (twice a second)."""

    elapsed_s: float
    duration_s: float | None  # None: until stopped
    bytes_total: int
    rate_bps: float  # over the last second, in bit/s
    average_bps: float
    target_bps: int | None
    active_connections: int
    free_bytes: int | None
    # Frames per second measured from the stream (H.264), None when not known.
    fps: float | None = None
    # From the camera's own timestamps (None: it sends none): frames it wrote, frames it dropped (gaps over
    # 1.5 frame intervals, counted in frames) and the longest gap between two frames, all so far.
    camera_frames: int | None = None
    frames_dropped: int | None = None
    longest_gap_ms: float | None = None


def minutes_of_space(free_bytes: int | None, bps: float) -> float | None:
    """How many minutes of recording at `bps` bit/s fit in `free_bytes` (None when either is unknown)."""
    if free_bytes is None or bps <= 0:
        return None
    return free_bytes * 8 / bps / 60


@dataclass(frozen=True)
class FileStarted:
    path: Path
    peer: str


@dataclass(frozen=True)
class FileFinished:
    path: Path
    manifest: Path | None
    bytes: int
    sha256: str
    status: FileStatus
    duration_s: float
    removed: bool = False
    # Why the raw stream could not be made into the container that was asked for (the raw file is kept
    # and `path` is it); None when no container was asked for or the remux worked.
    remux_error: str | None = None
    # Frames the camera dropped in this file, by its own timestamps; None when it sent none.
    frames_dropped: int | None = None


@dataclass(frozen=True)
class PiHealthReport:
    """Read every few seconds over the recording's own SSH connection (no second camera client)."""

    temp_c: float | None
    throttled: tuple[str, ...]
    load1: float | None
    mem_available_mb: int | None
    pipeline_alive: bool | None
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class SnapProgress:
    """Where a snap stands: `done` of `count` images saved; `taking` = the image being taken (0: waiting
    for its turn, `next_in_s` seconds from now)."""

    done: int
    count: int
    taking: int
    next_in_s: float = 0.0


# Bytes per pixel of the first plane, by FFmpeg's pixel format name (I420: the luma plane).
_BYTES_PER_PIXEL = {"yuv420p": 1, "rgb24": 3, "bgr24": 3, "rgba": 4, "bgra": 4}


@dataclass(frozen=True)
class RawLayout:
    """How raw pixels lie in a file or a stream, frame after frame. `record` reports it before a raw video
    starts (the Python API's decoder needs the frame size before the first byte); manifests carry it as `raw`.

    I420 (`yuv420p`) is a luma plane of `rows` rows of `stride` bytes, then U and V of half of both. A tool
    that writes its camera buffers whole pads each row to the buffer's stride and the picture to `rows`.
    """

    pixel_format: str  # FFmpeg's name: yuv420p (I420), rgb24, bgr24, rgba, bgra
    width: int
    height: int
    stride: int  # bytes from the start of one row of the first plane to the next
    rows: int  # rows of the first plane: the height, or more where the buffer is padded
    fps: float | None = None  # video only
    # The camera's YUV is full range (JPEG, sYCC) for the libcamera tools; None: not known (legacy).
    full_range: bool | None = None

    @classmethod
    def packed(cls, pixel_format: str, width: int, height: int, fps: float | None = None,
               full_range: bool | None = None) -> RawLayout:
        """Rows of exactly the picture's width, no padding."""
        return cls(pixel_format, width, height, width * _BYTES_PER_PIXEL[pixel_format], height, fps, full_range)

    @property
    def bytes_per_pixel(self) -> int:
        return _BYTES_PER_PIXEL[self.pixel_format]

    @property
    def frame_bytes(self) -> int:
        if self.pixel_format == "yuv420p":
            return self.stride * self.rows + 2 * (self.stride // 2) * (self.rows // 2)
        return self.stride * self.rows

    @property
    def padded(self) -> bool:
        return self.stride != self.width * self.bytes_per_pixel or self.rows != self.height

    @property
    def bits_per_second(self) -> int:
        return round(self.frame_bytes * 8 * (self.fps or 0))

    def describe(self) -> dict[str, object]:
        """The manifest's `raw` object."""
        info: dict[str, object] = {"pixel_format": self.pixel_format, "width": self.width, "height": self.height,
                                   "stride": self.stride, "rows": self.rows, "frame_bytes": self.frame_bytes}
        if self.fps is not None:
            info["fps"] = self.fps
        if self.full_range is not None:
            info["color_range"] = "full" if self.full_range else "limited"
        return info


@dataclass(frozen=True)
class Notice:
    level: str  # "info", "warning" or "error"
    message: str


Event = StateChanged | Progress | FileStarted | FileFinished | Notice | PiHealthReport | RawLayout
EventSink = Callable[[Event], None]


class Ending(str, enum.Enum):
    """How a camera run (and the file it was writing) ended: the one vocabulary, read in one place."""

    DONE = "done"  # the camera finished by itself, the sender closed
    SEGMENT = "segment"  # a file only: cut there, the stream goes on in the next file
    STOPPED = "stopped"  # the user stopped it (Ctrl+C, SIGTERM, leaving the `with` block)
    OVERRAN = "overran"  # it ran past its own time limit and piorch stopped it
    STALLED = "stalled"  # no data for the stall timeout: the link is taken as lost
    LOST = "lost"  # the SSH connection went away under the run
    FAILED = "failed"  # receiving or writing on the laptop failed (disk full, folder gone): `error` says why

    @property
    def link_fault(self) -> bool:
        return self in (Ending.STALLED, Ending.LOST)

    @property
    def piorch_stops_camera(self) -> bool:
        """Endings after which the camera may still run on the Pi and piorch must stop it."""
        return self in (Ending.STOPPED, Ending.OVERRAN, Ending.FAILED)
