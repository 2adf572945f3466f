"""Where one connection's bytes go: a FileWriter per segment, frames counted on the way, a live-view tap.

The receiver's socket loop (or nc's output) calls `write` for each read and `finish` once; this class
decides the files. Without H.264 parsing every byte goes to one file; with it, a `SegmentCutter` counts
frames and, when segments are asked for, cuts at I-frame boundaries so no byte is lost or doubled.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.events import FileStarted, Notice
from orchestrator.stream.h264 import SegmentCutter, SegmentStats
from orchestrator.stream.mjpeg import JpegSplitter

if TYPE_CHECKING:
    from orchestrator.stream.receiver import FileWriter, Receiver


class WriteFailed(Exception):
    """Writing the received bytes failed (disk full, folder gone): the connection ends, bytes kept."""

# "Never cut": the cutter still counts frames and I-frames.
NO_CUT = 1 << 62

Tap = Callable[[bytes | memoryview], None]


class StreamSink:
    def __init__(self, receiver: Receiver, peer: str) -> None:
        self._receiver = receiver
        self._peer = peer
        settings = receiver.settings
        frames = settings.segment_frames or NO_CUT
        self._cutter = SegmentCutter(frames) if settings.parse_h264 or settings.segment_frames else None
        self._writer: FileWriter | None = None
        self._segment = 0
        self._tap = receiver.tap
        receiver._sinks.add(self)

    @property
    def frames(self) -> int:
        """Frames seen so far on this connection (0 when the stream is not parsed)."""
        return self._cutter.parser.frames if self._cutter is not None else 0

    @property
    def bytes_written(self) -> int:
        return self._writer.bytes_written if self._writer is not None else 0

    def _current(self) -> FileWriter:
        if self._writer is None:
            self._segment += 1
            self._writer = self._receiver._open_writer(self._peer)
        return self._writer

    def _close(self, ended_by: str) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        stats: SegmentStats | None = None
        if self._cutter is not None and len(self._cutter.closed) >= self._segment:
            stats = self._cutter.closed[self._segment - 1]
        self._receiver._close_writer(writer, ended_by, stats, self._segment)

    def write(self, data: bytes | memoryview) -> None:
        if self._tap is not None:
            self._tap(data)
        if self._cutter is None:
            self._current().write(data)
            return
        for piece in self._cutter.feed(data):
            if piece.new_segment and self._writer is not None:
                # A cut: the finished segment is complete whatever happens to the rest of the stream.
                self._close("segment")
            self._current().write(piece.data)

    def finish(self, ended_by: str) -> None:
        """The connection ended; write what the cutter still held, close the last file."""
        try:
            self._finish(ended_by)
        finally:
            self._receiver._sink_done(self)

    def _finish(self, ended_by: str) -> None:
        if self._cutter is not None:
            try:
                for piece in self._cutter.finish():
                    if piece.new_segment and self._writer is not None:
                        self._close("segment")
                    self._current().write(piece.data)
            except Exception as exc:  # a write error here must not lose the file's status: report it
                ended_by = f"error: {exc}"
        if self._writer is None:
            if ended_by == "eof":
                # A connection that carried nothing (a camera that failed at once, a port probe): no file.
                self._receiver._on_event(Notice("warning", f"a connection from {self._peer} closed without data"))
            return
        self._close(ended_by)


class FramesSink:
    """MJPEG split on the laptop: each JPEG of the connection becomes `OUT/<uuid>/frame_000001.jpg`, ...

    The folder is `OUT/<uuid>.tmp/` until the connection ends. The stream's SHA-256 is kept whole (MJPEG
    rates are low enough to hash inline), so the manifest still proves what arrived.
    """

    def __init__(self, receiver: Receiver, peer: str) -> None:
        import hashlib
        import uuid

        from orchestrator.stream.manifest import utc_now

        self._receiver = receiver
        self._peer = peer
        self._utc_now = utc_now
        self.id = str(uuid.uuid4())
        out = receiver.settings.out_dir
        self._tmp_dir = out / f"{self.id}.tmp"
        self._final_dir = out / self.id
        self._splitter = JpegSplitter()
        self._digest = hashlib.sha256()
        self._frame = bytearray()
        self._frames: list[dict[str, object]] = []
        self.bytes_written = 0
        self._started_utc = utc_now()
        self._started = time.monotonic()
        self._tap = receiver.tap
        self._opened = False

    def write(self, data: bytes | memoryview) -> None:
        if self._tap is not None:
            self._tap(data)
        if not self._opened:
            self._tmp_dir.mkdir()
            self._opened = True
            self._receiver._track(self)
            self._receiver._on_event(FileStarted(self._tmp_dir, self._peer))
        self._digest.update(data)
        self.bytes_written += len(data)
        for piece in self._splitter.feed(data):
            if piece.new_frame and self._frame:
                self._flush(complete=True)
            self._frame += piece.data

    def _flush(self, complete: bool) -> None:
        index = len(self._frames) + 1
        name = f"frame_{index:06d}.jpg"
        try:
            (self._tmp_dir / name).write_bytes(self._frame)
        except OSError as exc:
            raise WriteFailed("disk full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)) from None
        self._frames.append({"index": index, "file": name, "arrival_utc": self._utc_now(),
                             "bytes": len(self._frame), "complete": complete})
        self._frame = bytearray()

    def finish(self, ended_by: str) -> None:
        from orchestrator.stream.receiver import ReceivedFile

        if not self._opened:
            if ended_by == "eof":
                self._receiver._on_event(Notice("warning", f"a connection from {self._peer} closed without data"))
            return
        try:
            for piece in self._splitter.finish():
                self._frame += piece.data
            if self._frame:
                # The last image: whole when it ends with EOI, else what arrived of it (kept, marked).
                self._flush(complete=bytes(self._frame[-2:]) == b"\xff\xd9")
        except WriteFailed as exc:
            ended_by = f"error: {exc}"
        os.replace(self._tmp_dir, self._final_dir)
        received = ReceivedFile(
            self.id, self._final_dir, self.bytes_written, self._digest.hexdigest(), self._peer,
            self._started_utc, self._utc_now(), time.monotonic() - self._started, ended_by,
            frames=len(self._frames), frame_list=tuple(self._frames),
        )
        self._receiver._done(self, received)
