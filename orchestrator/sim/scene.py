"""The picture the simulated camera looks at, drawn at any size (pure, numpy).

A real sensor never sends two equal frames. This scene does the same cheaply: a colour gradient, a block that
moves a little every frame, and a frame counter in the top-left corner, so every frame differs from its
neighbours and a viewer can read which frame it shows. The bottom quarter is the bare gradient, always the
same, which tests use to find the geometry of raw frames.

The scene is drawn as I420 planes (the camera's own format): Y is height x width, U and V are
ceil(height/2) x ceil(width/2). Pictures in RGB come from those planes with the full-range BT.601 matrix that
JPEG (and rpicam's sYCC stills) use.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    Plane = np.ndarray[Any, np.dtype[np.uint8]]

# 3x5 pixel digits, one string of 15 cells per digit, row after row ("#" = lit).
_DIGITS = (
    "####.##.##.####", ".#.##..#..#.###", "###..#####..###", "###..####..####", "#.##.####..#..#",
    "####..###..####", "####..####.####", "###..#..#..#..#", "####.#####.####", "####.####..####",
)
COUNTER_DIGITS = 6  # the counter shows the frame index modulo 10**6
LUMA_BLACK, LUMA_WHITE = 16, 235
_BLOCK_CHROMA = (90, 240)  # U, V: a red block, so that a colour mix-up (RGB for BGR) shows


class EncoderMissing(Exception):
    """numpy or PyAV is not installed: the simulator can send only its shipped clips."""


def numpy_module() -> Any:
    """numpy, or EncoderMissing saying how to get it (a picture at the asked size cannot be drawn without)."""
    try:
        import numpy
    except ImportError:
        raise EncoderMissing("pictures at the asked size need numpy and PyAV (pip install numpy av)") from None
    return numpy


@dataclass(frozen=True)
class I420Planes:
    y: Plane
    u: Plane
    v: Plane

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    @property
    def height(self) -> int:
        return int(self.y.shape[0])


def _ramp(count: int, low: int, high: int) -> Plane:
    import numpy as np

    steps = np.arange(count, dtype=np.int32) * (high - low) // max(count - 1, 1)
    return (steps + low).astype(np.uint8)


@lru_cache(maxsize=4)
def _background(width: int, height: int) -> I420Planes:
    """The still part of the scene: luma rises left to right, U top to bottom, V falls left to right."""
    import numpy as np

    cw, ch = (width + 1) // 2, (height + 1) // 2
    y = np.broadcast_to(_ramp(width, LUMA_BLACK, LUMA_WHITE), (height, width))
    u = np.broadcast_to(_ramp(ch, 64, 192)[:, None], (ch, cw))
    v = np.broadcast_to(_ramp(cw, 192, 64), (ch, cw))
    return I420Planes(y, u, v)  # read-only views: build_scene copies them


def block_box(width: int, height: int, index: int) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the moving block in frame `index`: even numbers, so that it covers
    whole chroma samples; it crosses the picture left to right in about 64 frames, then starts again."""
    block_w = max(2, width // 10 & ~1)
    block_h = max(2, height // 5 & ~1)
    travel = max(width - block_w, 1)
    left = (index * max(2, width // 64)) % travel & ~1
    return left, height // 3 & ~1, block_w, block_h


class Canvas:
    """The scene drawn into planes someone else owns (an encoder's frame buffer, a raw frame with padding):
    the background is painted once, then each `draw(index)` repaints only what moves, the block and the
    counter, so a frame costs a few small copies whatever its size."""

    def __init__(self, planes: I420Planes) -> None:
        self.planes = planes
        self._base = _background(planes.width, planes.height)
        self._dirty: list[tuple[int, int, int, int]] = []  # luma boxes (left, top, width, height) drawn last
        # what the last draw() changed: the boxes it restored and the boxes it painted
        self.changed: list[tuple[int, int, int, int]] = []
        planes.y[...] = self._base.y
        planes.u[...] = self._base.u
        planes.v[...] = self._base.v

    def draw(self, index: int) -> None:
        y, u, v = self.planes.y, self.planes.u, self.planes.v
        for left, top, box_w, box_h in self._dirty:
            y[top : top + box_h, left : left + box_w] = self._base.y[top : top + box_h, left : left + box_w]
            chroma = (slice(top // 2, (top + box_h + 1) // 2), slice(left // 2, (left + box_w + 1) // 2))
            u[chroma], v[chroma] = self._base.u[chroma], self._base.v[chroma]
        left, top, block_w, block_h = block_box(self.planes.width, self.planes.height, index)
        y[top : top + block_h, left : left + block_w] = LUMA_WHITE
        u[top // 2 : (top + block_h) // 2, left // 2 : (left + block_w) // 2] = _BLOCK_CHROMA[0]
        v[top // 2 : (top + block_h) // 2, left // 2 : (left + block_w) // 2] = _BLOCK_CHROMA[1]
        restored = self._dirty
        self._dirty = [(left, top, block_w, block_h), _draw_counter(self.planes, index)]
        self.changed = [*restored, *self._dirty]


def oriented(planes: I420Planes, hflip: bool = False, vflip: bool = False) -> I420Planes:
    """Views of `planes` mirrored as asked (-hf/-vf, --hflip/--vflip): drawing the scene into them draws it
    flipped into `planes`, at no cost."""
    rows = slice(None, None, -1 if vflip else 1)
    columns = slice(None, None, -1 if hflip else 1)
    return I420Planes(planes.y[rows, columns], planes.u[rows, columns], planes.v[rows, columns])


def blank_planes(width: int, height: int) -> I420Planes:
    np = numpy_module()

    if width < 1 or height < 1:
        raise ValueError(f"a picture needs at least one pixel, not {width}x{height}")
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return I420Planes(np.empty((height, width), np.uint8), np.empty((ch, cw), np.uint8), np.empty((ch, cw), np.uint8))


def build_scene(width: int, height: int, index: int) -> I420Planes:
    """Frame `index` of the scene, width x height, as fresh writable I420 planes (1080p: ~10 ms; a Canvas
    redrawing its own planes costs well under 1 ms a frame)."""
    canvas = Canvas(blank_planes(width, height))
    canvas.draw(index)
    return canvas.planes


def _draw_counter(planes: I420Planes, index: int) -> tuple[int, int, int, int]:
    """White digits on a black plate in the top-left corner; a cell is 1/60 of the height, at least 1 px.
    Returns the plate's box."""
    y = planes.y
    cell = max(1, y.shape[0] // 60)
    text = f"{index % 10**COUNTER_DIGITS:0{COUNTER_DIGITS}d}"
    plate = (0, 0, (4 * COUNTER_DIGITS + 2) * cell, 8 * cell)  # even sides: whole chroma samples
    y[0 : plate[3], 0 : plate[2]] = LUMA_BLACK  # numpy clips at the picture's edge
    planes.u[0 : plate[3] // 2, 0 : plate[2] // 2] = 128  # no colour: black and white
    planes.v[0 : plate[3] // 2, 0 : plate[2] // 2] = 128
    for position, digit in enumerate(text):
        left = (1 + 4 * position) * cell
        for cell_index, lit in enumerate(_DIGITS[int(digit)]):
            if lit == "#":
                row, column = divmod(cell_index, 3)
                top, x = (1 + row) * cell, left + column * cell
                y[top : top + cell, x : x + cell] = LUMA_WHITE
    return plate


def to_rgb(planes: I420Planes) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """height x width x 3 (R, G, B): each chroma sample covers 2x2 pixels; full-range BT.601 (JFIF)."""
    import numpy as np

    h, w = planes.height, planes.width
    luma = planes.y.astype(np.float32)
    cb = np.repeat(np.repeat(planes.u, 2, axis=0), 2, axis=1)[:h, :w].astype(np.float32) - 128
    cr = np.repeat(np.repeat(planes.v, 2, axis=0), 2, axis=1)[:h, :w].astype(np.float32) - 128
    rgb = np.empty((h, w, 3), dtype=np.float32)
    rgb[..., 0] = luma + 1.402 * cr
    rgb[..., 1] = luma - 0.344136 * cb - 0.714136 * cr
    rgb[..., 2] = luma + 1.772 * cb
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
