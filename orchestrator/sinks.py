"""Where one connection's bytes go: a FileWriter per segment, frames counted on the way, a live-view tap.

The receiver's socket loop (or nc's output) calls `write` for each read and `finish` once; this class
decides the files. Without H.264 parsing every byte goes to one file; with it, a `SegmentCutter` counts
frames and, when segments are asked for, cuts at I-frame boundaries so no byte is lost or doubled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.annexb import SegmentCutter, SegmentStats
from orchestrator.events import Notice

if TYPE_CHECKING:
    from orchestrator.receiver import FileWriter, Receiver

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
