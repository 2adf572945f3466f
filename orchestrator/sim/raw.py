"""Raw frames exactly as each Pi lays them out in memory (pure, numpy): where the row padding goes.

rpicam-vid --codec yuv420: encoder/null_encoder.cpp hands each camera buffer over whole, so the file holds
what the ISP wrote, rows padded to the ISP's stride. The buffer (StreamConfiguration::frameSize, from the
V4L2 driver's sizeimage) is stride x height of Y, then U and V of stride/2 x height/2 each:
- Pi 0-4, VideoCore ISP (linux drivers/staging/vc04_services/bcm2835-isp: get_bytesperline aligns the
  row of V4L2_PIX_FMT_YUV420 to bytesperline_align = 64 bytes; sizeimage = bytesperline * height * 3 / 2).
- Pi 5, PiSP back end (linux drivers/media/platform/raspberrypi/pisp_be/pisp_be_formats.h: YUV420 rows
  align to 128 "to ensure U/V planes are 64 byte aligned"; libcamera pipeline/rpi/pisp/pisp.cpp
  computeOptimalStride gives the same: twice the chroma stride, itself aligned to 64 by libpisp).
So a frame is width * height * 3 / 2 bytes only when the width is a multiple of 64 (Pi 4) or 128 (Pi 5).

raspividyuv and raspiyuv (userland RaspiVidYUV.c / RaspiStillYUV.c) write the camera port's MMAL buffers
whole too: the port is set to VCOS_ALIGN_UP(width, 32) x VCOS_ALIGN_UP(height, 16), cropped to the picture,
so rows pad to 32 pixels and the frame to 16 rows (RaspiVidYUV.c dump_status prints exactly this); -rgb /
-bgr give 3 bytes a pixel on the same padded grid, -y (--luma) only the padded Y plane.

rpicam-still -e yuv420 / rgb / rgb48 are different: image/yuv.cpp copies `width` bytes of each row, so
stills carry no padding at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from orchestrator.sim.profile import Board
from orchestrator.sim.scene import Canvas, I420Planes, blank_planes, numpy_module, oriented, to_rgb

if TYPE_CHECKING:
    import numpy as np

RPICAM_STRIDE_ALIGN = {Board.PI4: 64, Board.PI5: 128}
LEGACY_WIDTH_ALIGN = 32
LEGACY_HEIGHT_ALIGN = 16


class RawKind(str, Enum):
    I420 = "i420"  # Y, then U, then V
    LUMA = "luma"  # Y only (raspividyuv / raspiyuv -y)
    RGB24 = "rgb24"  # R, G, B a pixel
    BGR24 = "bgr24"  # B, G, R a pixel (raspiyuv -bgr)
    RGB48 = "rgb48"  # R, G, B as 16-bit little-endian samples (rpicam-still -e rgb48)


def align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class RawLayout:
    """Where the pixels of one width x height picture sit in a buffer: `stride` bytes a row and `rows` rows
    of the first plane (for I420, the chroma planes have half of both)."""

    kind: RawKind
    width: int
    height: int
    stride: int
    rows: int

    @property
    def frame_bytes(self) -> int:
        if self.kind is RawKind.I420:
            return self.stride * self.rows + 2 * (self.stride // 2) * ((self.rows + 1) // 2)
        return self.stride * self.rows


_BYTES_PER_PIXEL = {RawKind.I420: 1, RawKind.LUMA: 1, RawKind.RGB24: 3, RawKind.BGR24: 3, RawKind.RGB48: 6}


def rpicam_video_layout(width: int, height: int, board: Board) -> RawLayout:
    """rpicam-vid --codec yuv420 on this board: rows padded to the ISP's stride, no extra rows."""
    return RawLayout(RawKind.I420, width, height, align_up(width, RPICAM_STRIDE_ALIGN[board]), height)


def legacy_layout(width: int, height: int, kind: RawKind) -> RawLayout:
    """raspividyuv / raspiyuv: the MMAL port's buffer, width to 32 pixels and height to 16 rows."""
    stride = align_up(width, LEGACY_WIDTH_ALIGN) * _BYTES_PER_PIXEL[kind]
    return RawLayout(kind, width, height, stride, align_up(height, LEGACY_HEIGHT_ALIGN))


def unpadded_layout(width: int, height: int, kind: RawKind) -> RawLayout:
    """rpicam-still -e yuv420 / rgb / rgb48: image/yuv.cpp writes only the picture's own bytes."""
    return RawLayout(kind, width, height, width * _BYTES_PER_PIXEL[kind], height)


def _pad(plane: np.ndarray[Any, Any], stride: int, rows: int) -> np.ndarray[Any, Any]:
    """`plane` in the top-left corner of a zeroed rows x stride buffer (what sits in the padding of a real
    buffer is whatever the ISP left there; zeros are one such)."""
    import numpy as np

    height, width = plane.shape[0], plane.shape[1] * (plane.shape[2] if plane.ndim == 3 else 1)
    flat = plane.reshape(height, width)
    if (width, height) == (stride, rows):
        return flat
    padded = np.zeros((rows, stride), dtype=np.uint8)
    padded[:height, :width] = flat
    return padded


def pack(planes: I420Planes, layout: RawLayout) -> bytes:
    """The bytes of one picture in `layout`."""
    import numpy as np

    if layout.kind is RawKind.I420:
        chroma_stride, chroma_rows = layout.stride // 2, (layout.rows + 1) // 2
        parts = [_pad(planes.y, layout.stride, layout.rows), _pad(planes.u, chroma_stride, chroma_rows),
                 _pad(planes.v, chroma_stride, chroma_rows)]
        return b"".join(part.tobytes() for part in parts)
    if layout.kind is RawKind.LUMA:
        return _pad(planes.y, layout.stride, layout.rows).tobytes()
    rgb = to_rgb(planes)
    if layout.kind is RawKind.BGR24:
        rgb = np.ascontiguousarray(rgb[..., ::-1])
    elif layout.kind is RawKind.RGB48:
        # 8-bit samples widened to 16 bits, little-endian as the Pi stores them
        rgb = (rgb.astype("<u2") << 8).view(np.uint8).reshape(layout.height, layout.width, 6)
    return _pad(rgb, layout.stride, layout.rows).tobytes()


class RawFrames:
    """A raw video stream: frame `index` of the scene in `layout`. One buffer is kept and only what moved is
    redrawn each frame (RGB: converted again only there), so a 1080p frame costs about one copy."""

    def __init__(self, layout: RawLayout, hflip: bool = False, vflip: bool = False) -> None:
        np = numpy_module()

        self.layout = layout
        self._buffer = np.zeros(layout.frame_bytes, dtype=np.uint8)
        width, height = layout.width, layout.height
        rows = self._buffer[: layout.stride * layout.rows].reshape(layout.rows, layout.stride)
        if layout.kind is RawKind.I420:
            half_stride, half_rows = layout.stride // 2, (layout.rows + 1) // 2
            chroma = self._buffer[layout.stride * layout.rows :].reshape(2, half_rows, half_stride)
            cw, ch = (width + 1) // 2, (height + 1) // 2
            planes = I420Planes(rows[:height, :width], chroma[0, :ch, :cw], chroma[1, :ch, :cw])
        else:
            scratch = blank_planes(width, height)
            planes = I420Planes(rows[:height, :width] if layout.kind is RawKind.LUMA else scratch.y,
                                scratch.u, scratch.v)
        self._canvas = Canvas(oriented(planes, hflip, vflip))
        self._rgb = None
        if layout.kind in (RawKind.RGB24, RawKind.BGR24):
            rgb = rows[:height, : width * 3].reshape(height, width, 3)
            self._rgb = rgb[:: -1 if vflip else 1, :: -1 if hflip else 1]
            assert np.shares_memory(self._rgb, self._buffer)  # a view: writing it writes the frame
            self._convert((0, 0, width, height))  # the background, once
        elif layout.kind is not RawKind.I420 and layout.kind is not RawKind.LUMA:
            raise ValueError(f"no raw video in {layout.kind.value}")

    def frame(self, index: int) -> bytes:
        self._canvas.draw(index)
        if self._rgb is not None:
            for box in self._canvas.changed:
                self._convert(box)
        data: bytes = self._buffer.tobytes()
        return data

    def _convert(self, box: tuple[int, int, int, int]) -> None:
        """RGB again for one box, widened to even edges so that its chroma samples are whole."""
        assert self._rgb is not None
        left, top = box[0] & ~1, box[1] & ~1
        right = min((box[0] + box[2] + 1) & ~1, self.layout.width)
        bottom = min((box[1] + box[3] + 1) & ~1, self.layout.height)
        if right <= left or bottom <= top:
            return
        planes = self._canvas.planes
        part = I420Planes(planes.y[top:bottom, left:right], planes.u[top // 2 : (bottom + 1) // 2,
                          left // 2 : (right + 1) // 2], planes.v[top // 2 : (bottom + 1) // 2,
                          left // 2 : (right + 1) // 2])
        rgb = to_rgb(part)
        self._rgb[top:bottom, left:right] = rgb[..., ::-1] if self.layout.kind is RawKind.BGR24 else rgb
