"""Where one connection's bytes go: a FileWriter per segment, frames counted on the way, a live-view tap.

The receiver's socket loop (or nc's output) calls `write` for each read and `finish` once; a sink decides
the files. Without H.264 parsing every byte goes to one file; with it, a `SegmentCutter` counts frames and,
when segments are asked for, cuts at I-frame boundaries so no byte is lost or doubled.

A sink talks to its receiver through `Outlet` only: it reports events and hands over each file that ended.
Both run off the receiving thread, so `write` and `finish` do nothing but parse and write.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from orchestrator.events import Ending, Event, FileStarted, Notice
from orchestrator.settings import ReceiveSettings
from orchestrator.stream.frame_times import CameraRun
from orchestrator.stream.h264 import SegmentCutter
from orchestrator.stream.manifest import reserve_manifest, utc_now
from orchestrator.stream.mjpeg import JpegSplitter
from orchestrator.stream.writer import FileLock, FileWriter, ReceivedFile, WriteFailed, describe_os_error

# "Never cut": the cutter still counts frames and I-frames.
NO_CUT = 1 << 62

Tap = Callable[[bytes | memoryview], None]


class Outlet(Protocol):
    """What a sink needs from the receiver that feeds it. `Receiver` implements it."""

    def report(self, event: Event) -> None:
        """Pass an event to the subscribers, from a thread other than the receiving one, in order."""

    def hand_over(self, finalize: Callable[[], ReceivedFile]) -> None:
        """A file ended: `finalize` (fsync, hash, rename; it never raises) runs on the receiver's closer
        thread, and its result goes to the receiver's `on_file`, in the order files were handed over."""


class Sink(Protocol):
    """What the receiver needs of a sink: the bytes in, one `finish`, and counters read on any thread."""

    bytes_received: int

    @property
    def frames(self) -> int: ...

    def write(self, data: bytes | memoryview) -> None: ...

    def finish(self, ended_by: Ending, error: str = "") -> None: ...


def make_sink(outlet: Outlet, settings: ReceiveSettings, peer: str, suffix: str, tap: Tap | None,
              camera_run: CameraRun | None = None) -> Sink:
    """`camera_run`: the camera run whose timestamps this connection's frames have (frame_times.py)."""
    if settings.split_jpeg:
        return FramesSink(outlet, settings, peer, tap, camera_run)
    return StreamSink(outlet, settings, peer, suffix, tap, camera_run)


class StreamSink:
    def __init__(self, outlet: Outlet, settings: ReceiveSettings, peer: str, suffix: str, tap: Tap | None,
                 camera_run: CameraRun | None = None) -> None:
        self._outlet = outlet
        self._camera_run = camera_run
        self._peer = peer
        self._out_dir = settings.out_dir
        self._suffix = suffix
        frames = settings.segment_frames or NO_CUT
        self._cutter = SegmentCutter(frames) if settings.parse_h264 or settings.segment_frames else None
        self._writer: FileWriter | None = None
        self._segment = 0
        self._tap = tap
        # Raw video: every frame has this many bytes, so counting frames is a division.
        self._raw_frame_bytes = settings.raw_frame_bytes
        self._raw_layout = settings.raw_layout
        self.bytes_received = 0

    @property
    def frames(self) -> int:
        """Frames seen so far on this connection (0 when the stream is not parsed)."""
        if self._raw_frame_bytes:
            return self.bytes_received // self._raw_frame_bytes
        return self._cutter.parser.frames if self._cutter is not None else 0

    def _write(self, data: bytes | memoryview) -> None:
        """Into the current file, opened first where there is none; a new file is announced once its first
        bytes are written, so that the hand-over (and the closer thread's start) never holds them back."""
        writer = self._writer
        if writer is not None:
            writer.write(data)
            return
        self._segment += 1
        writer = self._writer = FileWriter(self._out_dir, self._suffix, self._peer, self._camera_run,
                                           self._raw_layout)
        try:
            writer.write(data)
        finally:
            self._outlet.report(FileStarted(writer.tmp_path, self._peer))

    def _close(self, ended_by: Ending, error: str = "") -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        frames = iframes = None
        first_frame = 0
        if self._raw_frame_bytes:
            frames = writer.bytes_written // self._raw_frame_bytes  # whole frames; raw video is never cut
        elif self._cutter is not None and len(self._cutter.closed) >= self._segment:
            stats = self._cutter.closed[self._segment - 1]
            frames, iframes = stats.frames, stats.iframes
            # Frames of this connection before this segment: where its timestamps start in the camera's run.
            first_frame = sum(earlier.frames for earlier in self._cutter.closed[: self._segment - 1])
        writer.end(ended_by, frames, iframes, self._segment, error, first_frame)
        # A cut: the finished segment is complete whatever happens to the rest of the stream.
        self._outlet.hand_over(writer.finalize)

    def write(self, data: bytes | memoryview) -> None:
        self.bytes_received += len(data)
        if self._tap is not None:
            self._tap(data)
        if self._cutter is None:
            self._write(data)
            return
        for piece in self._cutter.feed(data):
            if piece.new_segment and self._writer is not None:
                self._close(Ending.SEGMENT)
            self._write(piece.data)

    def finish(self, ended_by: Ending, error: str = "") -> None:
        """The connection ended; write what the cutter still held, hand over the last file."""
        if self._cutter is not None:
            try:
                for piece in self._cutter.finish():
                    if piece.new_segment and self._writer is not None:
                        self._close(Ending.SEGMENT)
                    self._write(piece.data)
            except (WriteFailed, OSError) as exc:  # the file's status must say it, not a traceback
                ended_by, error = Ending.FAILED, str(exc)
        if self._writer is None:
            if ended_by is Ending.DONE:
                # A connection that carried nothing (a camera that failed at once, a port probe): no file.
                self._outlet.report(Notice("warning", f"a connection from {self._peer} closed without data"))
            return
        self._close(ended_by, error)


class FramesSink:
    """MJPEG split on the laptop: each JPEG of the connection becomes `OUT/<uuid>/frame_000001.jpg`, ...

    The folder is `OUT/<uuid>.tmp/` until the connection ends. An image that arrived cut short (no
    end-of-image marker: the connection ended inside it) is kept apart as `frame_NNNNNN.jpg.partial`, so
    every `.jpg` is a whole picture. The stream's SHA-256 is kept whole (MJPEG rates are low enough to hash
    inline), so the manifest still proves what arrived.
    """

    def __init__(self, outlet: Outlet, settings: ReceiveSettings, peer: str, tap: Tap | None,
                 camera_run: CameraRun | None = None) -> None:
        self._outlet = outlet
        self._peer = peer
        self._camera_run = camera_run
        self.id = str(uuid.uuid4())
        self._out_dir = settings.out_dir
        self._tmp_dir = self._out_dir / f"{self.id}.tmp"
        self._final_dir = self._out_dir / self.id
        self._splitter = JpegSplitter()
        self._digest = hashlib.sha256()
        self._frame = bytearray()
        self._frames: list[dict[str, object]] = []
        self.bytes_received = 0
        self._started_utc = ""
        self._started = time.monotonic()
        self._tap = tap
        self._lock: FileLock | None = None

    @property
    def frames(self) -> int:
        return len(self._frames)

    def _open(self) -> None:
        try:
            self._tmp_dir.mkdir()
            self._lock = FileLock.take(self._tmp_dir)
        except OSError as exc:
            raise WriteFailed(describe_os_error(exc)) from None
        self._started_utc = utc_now()
        self._started = time.monotonic()
        reserve_manifest(self._out_dir / f"{self.id}.json", self.id, self._tmp_dir.name, self._started_utc,
                         self._peer)
        self._outlet.report(FileStarted(self._tmp_dir, self._peer))

    def write(self, data: bytes | memoryview) -> None:
        if self._tap is not None:
            self._tap(data)
        if self._lock is None:
            self._open()
        self._digest.update(data)
        self.bytes_received += len(data)
        for piece in self._splitter.feed(data):
            if piece.new_frame and self._frame:
                self._flush()
            self._frame += piece.data

    def _flush(self) -> None:
        index = len(self._frames) + 1
        # Whole when it ends with EOI; else what arrived of it (the stream ended or broke inside it).
        complete = bytes(self._frame[-2:]) == b"\xff\xd9"
        name = f"frame_{index:06d}.jpg" + ("" if complete else ".partial")
        try:
            (self._tmp_dir / name).write_bytes(self._frame)
        except OSError as exc:
            raise WriteFailed(describe_os_error(exc)) from None
        self._frames.append({"index": index, "file": name, "arrival_utc": utc_now(),
                             "bytes": len(self._frame), "complete": complete})
        self._frame = bytearray()

    def finish(self, ended_by: Ending, error: str = "") -> None:
        if self._lock is None:
            if ended_by is Ending.DONE:
                self._outlet.report(Notice("warning", f"a connection from {self._peer} closed without data"))
            return
        try:
            for piece in self._splitter.finish():
                self._frame += piece.data
            if self._frame:
                self._flush()
        except WriteFailed as exc:
            ended_by, error = Ending.FAILED, str(exc)
        ended_utc, duration = utc_now(), time.monotonic() - self._started
        self._outlet.hand_over(lambda: self._finalize(ended_by, error, ended_utc, duration))

    def _finalize(self, ended_by: Ending, error: str, ended_utc: str, duration: float) -> ReceivedFile:
        """On the closer thread: the folder gets its final name; never raises."""
        path = self._final_dir
        try:
            os.replace(self._tmp_dir, self._final_dir)
        except OSError as exc:
            path = self._tmp_dir
            ended_by, error = Ending.FAILED, f"{self._tmp_dir.name} could not be renamed to " \
                f"{self._final_dir.name} ({exc.strerror or exc}); its frames are kept under the .tmp name"
        whole = sum(1 for frame in self._frames if frame["complete"])
        return ReceivedFile(self.id, path, self.bytes_received, self._digest.hexdigest(), self._peer,
                            self._started_utc, ended_utc, duration, ended_by, frames=whole,
                            frame_list=tuple(self._frames), lock=self._lock, error=error,
                            camera_run=self._camera_run)
