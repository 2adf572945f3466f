"""Frames on the laptop: a received stream turned into numpy arrays as it arrives.

Three decoders with one shape (`feed(chunk) -> arrays`, `finish() -> arrays`): H.264 and MJPEG are decoded
with PyAV (FFmpeg's decoders, no re-encoding anywhere), raw I420 (`rpicam-vid --codec yuv420`,
`raspividyuv`) is only cut into frames. Each array comes out in the pixel format asked for: bgr, rgb
(h, w, 3), bgra, rgba (h, w, 4), or yuv: I420 as one (h * 3 // 2, w) plane stack, picamera's layout.

Raw frames cost one copy after the socket: each chunk is copied once into the frame's own numpy buffer;
when the camera's rows carry no stride padding, the array handed out is that buffer itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.stream.mjpeg import JpegSplitter

if TYPE_CHECKING:
    import numpy as np

# picamera's names -> FFmpeg's pixel formats.
# FFmpeg's AVCOL_RANGE_JPEG, the full 0-255 range, by the name every PyAV release takes.
FULL_RANGE = "JPEG"
PIXEL_FORMATS = {"bgr": "bgr24", "rgb": "rgb24", "bgra": "bgra", "rgba": "rgba", "yuv": "yuv420p"}
# Formats `capture()` hands back as the encoded file's bytes (FFmpeg's encoder names).
ENCODED_FORMATS = {"jpeg": "mjpeg", "png": "png", "bmp": "bmp", "gif": "gif"}


def check_pixel_format(name: str) -> str:
    """The FFmpeg pixel format for one of picamera's array formats; ValueError naming the choices."""
    try:
        return PIXEL_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}: use one of {', '.join(PIXEL_FORMATS)}") from None


def i420_frame_bytes(width: int, height: int, stride: int | None = None, rows: int | None = None) -> int:
    """Bytes of one I420 frame: a luma plane of `stride` x `rows` (the height, or more where the camera's
    buffer is padded: raspividyuv pads to 16 rows) and two chroma planes of half that."""
    row, lines = stride or width, rows or height
    return row * lines + 2 * ((row // 2) * (lines // 2))


@dataclass(frozen=True)
class Frame:
    """One picture as it reached the laptop."""

    array: np.ndarray[Any, Any]
    # 0, 1, 2, ... in arrival order (counting every frame the stream carried, taken or dropped).
    index: int
    # When the frame was complete on the laptop (UTC).
    arrival: datetime
    # The camera's own timestamp of the frame, in milliseconds since the first frame of its run (the
    # `--save-pts` / `-pts` time, as in the recording's .pts sidecar); None when the tool sends none.
    pts_ms: float | None = None


class FrameDecoder(Protocol):
    def feed(self, chunk: bytes | memoryview) -> list[np.ndarray[Any, Any]]: ...
    def finish(self) -> list[np.ndarray[Any, Any]]: ...


@dataclass
class CodecDecoder:
    """H.264 or MJPEG bytes in any cut -> frames, through FFmpeg's parser and decoder (PyAV)."""

    codec: str  # "h264" or "mjpeg"
    pixel_format: str = "bgr24"
    # Frames the decoder could not make (corrupt or cut data); the stream goes on from the next good one.
    errors: int = 0
    _context: Any = field(default=None, repr=False)
    _splitter: JpegSplitter | None = field(default=None, repr=False)
    _jpeg: bytearray = field(default_factory=bytearray, repr=False)

    def __post_init__(self) -> None:
        import av

        self._context = av.CodecContext.create(self.codec, "r")
        if self.codec == "mjpeg":
            # FFmpeg's MJPEG parser is fine too; ours is the one the recorder already trusts at every cut.
            self._splitter = JpegSplitter()

    def feed(self, chunk: bytes | memoryview) -> list[np.ndarray[Any, Any]]:
        if self._splitter is None:
            return self._decode(self._context.parse(bytes(chunk)))
        packets = []
        for piece in self._splitter.feed(chunk):
            if piece.new_frame and self._jpeg:
                packets.append(self._packet(bytes(self._jpeg)))
                self._jpeg.clear()
            self._jpeg += piece.data
        return self._decode(packets)

    def finish(self) -> list[np.ndarray[Any, Any]]:
        if self._splitter is None:
            # The parser holds the last access unit until it sees the next one; None flushes it.
            return self._decode([*self._context.parse(None), None])
        for piece in self._splitter.finish():
            self._jpeg += piece.data
        # Only a whole image (ending in EOI) is a frame; a truncated last one is not handed out.
        last = [self._packet(bytes(self._jpeg))] if self._jpeg.endswith(b"\xff\xd9") else []
        self._jpeg.clear()
        return self._decode([*last, None])

    @staticmethod
    def _packet(data: bytes) -> Any:
        import av

        return av.Packet(data)

    def _decode(self, packets: Sequence[Any]) -> list[np.ndarray[Any, Any]]:
        import av

        arrays: list[np.ndarray[Any, Any]] = []
        for packet in packets:
            try:
                frames = self._context.decode(packet)
            except av.error.FFmpegError:
                self.errors += 1
                continue
            arrays.extend(frame.to_ndarray(format=self.pixel_format) for frame in frames)
        return arrays


class RawI420Decoder:
    """Raw I420 frames back to back -> one array a frame, converted to the pixel format asked for."""

    def __init__(self, width: int, height: int, pixel_format: str = "bgr24", stride: int | None = None,
                 rows: int | None = None, full_range: bool = False) -> None:
        import numpy

        if width % 2 or height % 2:
            raise ValueError("I420 needs an even width and height")
        self.width, self.height, self.pixel_format = width, height, pixel_format
        self.stride = stride or width
        self.rows = rows or height
        if self.stride < width or self.rows < height:
            raise ValueError(f"a stride of {self.stride} and {self.rows} rows cannot hold {width}x{height}")
        self.frame_bytes = i420_frame_bytes(width, height, self.stride, self.rows)
        # rpicam-vid's raw video is in the JPEG colour space (sYCC: full range, rpicam_vid.cpp asks for
        # FLAG_VIDEO_JPEG_COLOURSPACE for yuv420), as the legacy camera's raw frames are: read as limited
        # range it would come out too dark in the shadows and clipped in the highlights.
        self.full_range = full_range
        self._numpy = numpy
        self._buffer = numpy.empty(self.frame_bytes, numpy.uint8)
        self._filled = 0
        # Bytes of a last frame cut short when the stream ended.
        self.partial_bytes = 0

    def feed(self, chunk: bytes | memoryview) -> list[np.ndarray[Any, Any]]:
        view = memoryview(chunk).cast("B")
        arrays = []
        while view:
            take = min(len(view), self.frame_bytes - self._filled)
            # The one copy: socket chunk -> this frame's own buffer.
            self._buffer[self._filled:self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == self.frame_bytes:
                arrays.append(self._convert(self._buffer))
                self._buffer = self._numpy.empty(self.frame_bytes, self._numpy.uint8)
                self._filled = 0
        return arrays

    def finish(self) -> list[np.ndarray[Any, Any]]:
        self.partial_bytes = self._filled
        self._filled = 0
        return []

    def _convert(self, buffer: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        planes = self._unpad(buffer)
        if self.pixel_format == "yuv420p":
            return planes
        import av

        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        if self.full_range:
            # Told to swscale (PyAV 14 converts by the frame's range only from here on, not by its flag).
            frame = frame.reformat(format=self.pixel_format, src_color_range=FULL_RANGE)
        return frame.to_ndarray(format=self.pixel_format)  # type: ignore[no-any-return]

    def _unpad(self, buffer: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """picamera's I420 layout, (h * 3 // 2, w): a view when rows are unpadded, else a cropped copy."""
        width, height, stride, rows = self.width, self.height, self.stride, self.rows
        if stride == width and rows == height:
            return buffer.reshape(height * 3 // 2, width)
        luma = buffer[:stride * rows].reshape(rows, stride)[:height, :width]
        half = (stride // 2) * (rows // 2)
        chroma = [buffer[stride * rows + i * half:stride * rows + (i + 1) * half]
                  .reshape(rows // 2, stride // 2)[:height // 2, :width // 2] for i in range(2)]
        flat = self._numpy.concatenate([plane.reshape(-1) for plane in (luma, *chroma)])
        return flat.reshape(height * 3 // 2, width)


def make_decoder(codec: str, pixel_format: str, width: int, height: int,
                 stride: int | None = None, rows: int | None = None, full_range: bool = False) -> FrameDecoder:
    """The decoder for a stream of `codec` (h264, mjpeg, yuv420) into `pixel_format` arrays; for yuv420
    the camera's row stride, buffer rows and colour range (record reports them: `events.RawLayout`)."""
    if codec == "yuv420":
        return RawI420Decoder(width, height, pixel_format, stride, rows, full_range)
    if codec in ("h264", "mjpeg"):
        return CodecDecoder(codec, pixel_format)
    raise ValueError(f"unknown codec {codec!r}: use h264, mjpeg or yuv420")
