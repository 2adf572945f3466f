"""The picture a simulated still camera writes, in each encoding, at the asked size (numpy; PyAV for JPEG/GIF).

- jpg: FFmpeg's mjpeg encoder, 4:2:0, quality from -q (raspistill, default 85) / --quality (rpicam-still,
  default 93), through synth.jpeg_qscale.
- png: 8-bit RGB, one IDAT, as rpicam-still's image/png.cpp writes with libpng (zlib here).
- bmp: rpicam-still's image/bmp.cpp layout: a 54-byte header, a negative height (rows top to bottom),
  B, G, R pixels, rows padded to 4 bytes (raspistill's firmware encoder is taken to write the same).
- gif: FFmpeg's gif encoder (raspistill only; rpicam-still has none).
- yuv420 / rgb24 / rgb48 (rpicam-still): image/yuv.cpp, rows without padding; yuv420 needs an even size.
- raspiyuv: the camera port's padded buffer, I420, RGB24 (-rgb), BGR24 (-bgr) or the Y plane (-y).
"""

from __future__ import annotations

import struct
import zlib

from orchestrator.sim.raw import RawKind, legacy_layout, pack, unpadded_layout
from orchestrator.sim.scene import I420Planes, build_scene, oriented, to_rgb
from orchestrator.sim.synth import encode_gif, encode_jpeg, jpeg_qscale

# What a still camera writes without -w/-h: the sensor's full size (the simulated Pi has an imx219).
SENSOR_WIDTH, SENSOR_HEIGHT = 3280, 2464
RPICAM_RAW = {"yuv420": RawKind.I420, "rgb24": RawKind.RGB24, "rgb48": RawKind.RGB48}
RASPIYUV_RAW = {"i420": RawKind.I420, "rgb24": RawKind.RGB24, "bgr24": RawKind.BGR24, "luma": RawKind.LUMA}


class PictureRefused(Exception):
    """The tool itself refuses to save this picture (the message is its own)."""


def still_size(width: int, height: int) -> tuple[int, int]:
    """0 means "the sensor's", for each side on its own (get_sensor_defaults; libcamera's still stream)."""
    return width or SENSOR_WIDTH, height or SENSOR_HEIGHT


def build_bmp(planes: I420Planes) -> bytes:
    import numpy as np

    rgb = to_rgb(planes)
    height, width = rgb.shape[0], rgb.shape[1]
    line = width * 3
    pitch = (line + 3) & ~3  # "lines are multiples of 4 bytes"
    pixels = np.zeros((height, pitch), dtype=np.uint8)
    pixels[:, :line] = rgb[..., ::-1].reshape(height, line)  # B, G, R
    offset = 14 + 40
    header = b"BM" + struct.pack("<IHHI", offset + pixels.size, 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, width, -height, 1, 24, 0, 0, 100000, 100000, 0, 0)
    return header + info + pixels.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def build_png(planes: I420Planes) -> bytes:
    import numpy as np

    rgb = to_rgb(planes)
    height, width = rgb.shape[0], rgb.shape[1]
    rows = np.zeros((height, 1 + width * 3), dtype=np.uint8)  # each row: filter type 0 (None), then pixels
    rows[:, 1:] = rgb.reshape(height, width * 3)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, not interlaced
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows.tobytes()))
            + _png_chunk(b"IEND", b""))


def build_still(tool: str, encoding: str, width: int, height: int, index: int, quality: int,
                flips: tuple[bool, bool] = (False, False)) -> bytes:
    """Scene frame `index` as `tool` writes `encoding` (as its parser names it; for raspiyuv its raw kind),
    mirrored by `flips` (hflip, vflip). Raises PictureRefused with the tool's message, scene.EncoderMissing
    without numpy (or PyAV, for jpg/gif)."""
    planes = oriented(build_scene(width, height, index), *flips)
    if tool == "raspiyuv":
        return pack(planes, legacy_layout(width, height, RASPIYUV_RAW[encoding]))
    if encoding in RPICAM_RAW:
        if encoding == "yuv420" and (width % 2 or height % 2):
            raise PictureRefused("both width and height must be even")
        return pack(planes, unpadded_layout(width, height, RPICAM_RAW[encoding]))
    if encoding == "jpg":
        return encode_jpeg(planes, jpeg_qscale(quality))
    if encoding == "png":
        return build_png(planes)
    if encoding == "bmp":
        return build_bmp(planes)
    if encoding == "gif":
        return encode_gif(planes)
    raise ValueError(f"no picture for encoding {encoding!r}")
