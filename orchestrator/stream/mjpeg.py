"""MJPEG as it arrives from the socket: split the stream into its JPEG images.

Pure: bytes in, pieces out. `piorch record --codec mjpeg --frames` feeds every read to a `JpegSplitter` and
writes each frame to its own file, opening a new file where a piece says `new_frame`.

An MJPEG stream is JPEG images back to back, each from SOI (`FF D8`) to EOI (`FF D9`). Searching for `FF D9`
alone is not enough: marker segments before the image data (APPn, COM, ...) carry arbitrary bytes, an EXIF
thumbnail is a whole JPEG with its own SOI and EOI. So the splitter walks the marker segments by their
lengths and searches only the entropy-coded data after SOS, where a 0xFF byte is always followed by 00
(stuffing), D0-D7 (restart markers) or a real marker.

Bytes outside any image (before the first SOI, or between an EOI and the next SOI) are dropped and counted
in `skipped_bytes`: every frame handed out is exactly one image from SOI to EOI, a file any viewer opens. A
camera never sends such bytes; they only come from corruption. An image cut short by a new SOI (possible
only in a corrupt stream) ends there without EOI and is counted in `truncated`.

Nothing assumes that a read ends on a marker: a marker or its length split across reads, down to 1-byte
reads, gives the same frames. Memory stays flat: at most 3 bytes (a marker and the first byte of its length)
are held back between reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

SOI = 0xD8
EOI = 0xD9
SOS = 0xDA
# Markers that stand alone, without a length: TEM and RST0-RST7 (SOI and EOI are handled on their own).
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))
_SOI_BYTES = re.compile(b"\xff\xd8")
# In entropy-coded data: a 0xFF that is not stuffing (FF 00), a restart marker (FF D0-D7) or fill (FF FF).
_MARKER_IN_SCAN = re.compile(b"\xff[^\x00\xd0-\xd7\xff]")

Chunk = bytes | bytearray | memoryview


class _State(Enum):
    OUTSIDE = "outside"  # between images: looking for SOI
    MARKERS = "markers"  # inside an image, a marker expected
    SEGMENT = "segment"  # skipping the payload of a marker segment
    SCAN = "scan"  # entropy-coded data after SOS: looking for the next marker


@dataclass(frozen=True, slots=True)
class Piece:
    """Consecutive bytes of one image. `new_frame`: close the current file and start a new one with this piece.

    `data` is the chunk given to `feed` itself or a memoryview into it (or, for the few bytes held back
    between reads, into a small copy): write it before reusing the buffer it came from."""

    data: bytes | memoryview
    new_frame: bool


class JpegSplitter:
    def __init__(self) -> None:
        self.frames = 0  # images started (SOI seen)
        self.truncated = 0  # images that ended without EOI
        self.skipped_bytes = 0  # bytes outside any image, dropped
        self._state = _State.OUTSIDE
        self._skip = 0  # SEGMENT: payload bytes left
        self._after_skip = _State.MARKERS  # SEGMENT: where the payload leads (SCAN after SOS)
        self._held = b""  # a marker whose meaning needs bytes from the next read
        self._frame_is_new = False  # the next piece handed out opens a new image

    @property
    def in_frame(self) -> bool:
        return self._state is not _State.OUTSIDE

    def feed(self, chunk: Chunk) -> list[Piece]:
        buf: bytes | memoryview = chunk if isinstance(chunk, bytes) else memoryview(chunk).cast("B")
        if not len(buf):
            return []
        if self._held:
            # Rare (a read ended inside a marker) and the held part is at most 3 bytes: one copy is fine.
            buf = self._held + bytes(buf)
            self._held = b""
        pieces: list[Piece] = []
        hold_from = self._walk(buf, pieces)
        self._held = bytes(buf[hold_from:])
        return pieces

    def finish(self) -> list[Piece]:
        """End of stream: bytes still held back. An image still open is counted as truncated."""
        pieces: list[Piece] = []
        held, self._held = self._held, b""
        if self._state is _State.OUTSIDE:
            self.skipped_bytes += len(held)
        else:
            if held:
                self._emit(held, 0, len(held), pieces)
            self.truncated += 1
        self._state = _State.OUTSIDE
        return pieces

    def _emit(self, buf: bytes | memoryview, start: int, end: int, pieces: list[Piece]) -> None:
        if start >= end:
            return
        if start == 0 and end == len(buf) and isinstance(buf, bytes):
            pieces.append(Piece(buf, self._frame_is_new))
        else:
            pieces.append(Piece(memoryview(buf)[start:end], self._frame_is_new))
        self._frame_is_new = False

    def _start_frame(self) -> None:
        self.frames += 1
        self._frame_is_new = True
        self._state = _State.MARKERS

    def _walk(self, buf: bytes | memoryview, pieces: list[Piece]) -> int:
        """Run the state machine over `buf`, handing out image bytes; returns where the held-back part starts."""
        end = len(buf)
        pos = 0
        frame_from = 0  # start of the current image's bytes not yet handed out
        while pos < end:
            state = self._state
            if state is _State.OUTSIDE:
                match = _SOI_BYTES.search(buf, pos)
                if match is None:
                    # A final FF may be the first half of an SOI.
                    keep = 1 if buf[end - 1] == 0xFF else 0
                    self.skipped_bytes += end - keep - pos
                    return end - keep
                self.skipped_bytes += match.start() - pos
                frame_from = match.start()
                pos = match.end()
                self._start_frame()
            elif state is _State.SEGMENT:
                step = min(self._skip, end - pos)
                pos += step
                self._skip -= step
                if not self._skip:
                    self._state = self._after_skip
            elif state is _State.SCAN:
                match = _MARKER_IN_SCAN.search(buf, pos)
                if match is None:
                    # A final FF may start a marker; everything before it belongs to this image.
                    pos = end - 1 if buf[end - 1] == 0xFF else end
                    break
                pos = match.start()
                self._state = _State.MARKERS
            else:  # MARKERS: pos should be at FF, then a marker code, then maybe a 2-byte length
                if buf[pos] != 0xFF:
                    # Corrupt: not a marker where one must be. Look for the next marker as in image data.
                    self._state = _State.SCAN
                    continue
                if pos + 1 >= end:
                    break
                code = buf[pos + 1]
                if code == 0xFF:  # fill byte before a marker
                    pos += 1
                elif code == SOI:  # a new image before this one ended: this one is cut short
                    self._emit(buf, frame_from, pos, pieces)
                    self.truncated += 1
                    frame_from = pos
                    pos += 2
                    self._start_frame()
                elif code == EOI:
                    pos += 2
                    self._emit(buf, frame_from, pos, pieces)
                    self._state = _State.OUTSIDE
                elif code in _STANDALONE:
                    pos += 2
                elif code == 0x00:  # stuffing where a marker must be: corrupt
                    pos += 2
                    self._state = _State.SCAN
                else:
                    if pos + 4 > end:
                        break
                    length = buf[pos + 2] << 8 | buf[pos + 3]
                    pos += 4
                    if length < 2:  # corrupt length: look for the next marker instead
                        self._state = _State.SCAN
                        continue
                    self._skip = length - 2
                    self._after_skip = _State.SCAN if code == SOS else _State.MARKERS
                    self._state = _State.SEGMENT if self._skip else self._after_skip
        if self._state is not _State.OUTSIDE:
            self._emit(buf, frame_from, pos, pieces)
        return pos
