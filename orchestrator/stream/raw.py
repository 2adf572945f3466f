"""Raw pixels on the laptop: pictures converted where the camera's tool cannot write the order asked for,
raw video given a YUV4MPEG2 (`.y4m`) twin that players open, and the `raw` object of their manifests.

The camera's bytes are kept exactly as they came wherever that is what was asked for (the `.yuv` of a raw
recording always is). A conversion is exact where it is only an order of bytes (rgb -> bgr, rgba, bgra;
padding dropped); only `--resize` computes new pixels, with FFmpeg's swscale (PyAV).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.events import EventSink, FileFinished, Notice, RawLayout
from orchestrator.stream.manifest import write_bytes_atomically, write_json_atomically

Y4M_FRAME = b"FRAME\n"
# How a picture is copied: the tool's order -> (destination slot, source byte) for each byte of a pixel.
_REORDER: dict[tuple[str, str], tuple[int, ...]] = {
    ("rgb24", "bgr24"): (2, 1, 0),
    ("rgb24", "rgba"): (0, 1, 2, -1),
    ("rgb24", "bgra"): (2, 1, 0, -1),
    ("bgr24", "rgb24"): (2, 1, 0),
    ("bgr24", "rgba"): (2, 1, 0, -1),
    ("bgr24", "bgra"): (0, 1, 2, -1),
}


# ------------------------------------------------------------------------------------------ pure


def unpad(data: bytes | memoryview, layout: RawLayout) -> bytes:
    """The picture's own bytes, without the row and bottom padding a camera buffer may carry."""
    view = memoryview(data)
    if len(view) < layout.frame_bytes:
        raise ValueError(f"{len(view)} bytes are less than one {layout.width}x{layout.height} frame "
                         f"({layout.frame_bytes} bytes)")
    if not layout.padded:
        return bytes(view[:layout.frame_bytes])
    if layout.pixel_format != "yuv420p":
        row = layout.width * layout.bytes_per_pixel
        return b"".join(view[r * layout.stride:r * layout.stride + row] for r in range(layout.height))
    planes = [(0, layout.stride, layout.width, layout.height)]
    chroma_stride, chroma_rows = layout.stride // 2, layout.rows // 2
    first = layout.stride * layout.rows
    planes += [(first + i * chroma_stride * chroma_rows, chroma_stride, layout.width // 2, layout.height // 2)
               for i in range(2)]
    return b"".join(view[start + r * stride:start + r * stride + width]
                    for start, stride, width, height in planes for r in range(height))


def reorder(packed: bytes, source: str, target: str) -> bytes:
    """rgb24 or bgr24 without padding -> bgr24, rgb24, rgba or bgra; alpha is opaque (255). Exact."""
    if source == target:
        return packed
    try:
        plan = _REORDER[(source, target)]
    except KeyError:
        raise ValueError(f"no byte reorder from {source} to {target}") from None
    pixels = len(packed) // 3
    out = bytearray(pixels * len(plan))
    for slot, byte in enumerate(plan):
        # Extended slices copy every third (or fourth) byte in C: no Python loop over pixels.
        out[slot::len(plan)] = b"\xff" * pixels if byte < 0 else packed[byte::3]
    return bytes(out)


def convert_picture(data: bytes | memoryview, camera: RawLayout, output: RawLayout) -> bytes:
    """The camera's bytes in `camera`'s layout -> the bytes of `output` (packed): padding dropped, bytes
    reordered, and scaled with swscale when the size differs."""
    packed = unpad(data, camera)
    if (output.width, output.height) != (camera.width, camera.height):
        return scale(packed, camera, output)
    if output.pixel_format == camera.pixel_format:
        return packed
    return reorder(packed, camera.pixel_format, output.pixel_format)


def scale(packed: bytes, camera: RawLayout, output: RawLayout) -> bytes:
    """swscale (PyAV's `VideoFrame.reformat`): to `output`'s size and pixel format, bilinear."""
    import av
    import numpy

    array = numpy.frombuffer(packed, numpy.uint8)
    if camera.pixel_format == "yuv420p":
        array = array.reshape(camera.height * 3 // 2, camera.width)
    else:
        array = array.reshape(camera.height, camera.width, camera.bytes_per_pixel)
    frame = av.VideoFrame.from_ndarray(array, format=camera.pixel_format)
    scaled = frame.reformat(width=output.width, height=output.height, format=output.pixel_format)
    return bytes(scaled.to_ndarray().tobytes())


def require_scaler() -> None:
    """--resize scales with PyAV and numpy: said before anything starts on the Pi when they are missing."""
    try:
        import av  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"--resize needs PyAV and numpy on this laptop ({exc})", "pip install av numpy") from None


def build_y4m_header(layout: RawLayout) -> bytes:
    """The YUV4MPEG2 stream header: size, rate, progressive, square pixels, 4:2:0; full range when known."""
    rate = Fraction(layout.fps or 0).limit_denominator(1001)
    if rate <= 0:
        raise ValueError("a YUV4MPEG2 stream needs a frame rate")
    words = ["YUV4MPEG2", f"W{layout.width}", f"H{layout.height}", f"F{rate.numerator}:{rate.denominator}",
             "Ip", "A1:1", "C420jpeg"]
    if layout.full_range:
        words.append("XCOLORRANGE=FULL")  # FFmpeg's y4m muxer and demuxer both know this extension
    return (" ".join(words) + "\n").encode()


def count_frames(size: int, layout: RawLayout) -> tuple[int, int]:
    """Whole frames in `size` bytes, and the bytes of a last frame cut short."""
    return divmod(size, layout.frame_bytes)


# ------------------------------------------------------------------------------------------ effects


def write_y4m(raw: Path, target: Path, layout: RawLayout) -> int:
    """`target` (.y4m) from the raw I420 stream `raw`, one `FRAME` a whole frame, rows unpadded; written
    under a `.partial` name and renamed, so a `.y4m` is always whole. Returns the frames written."""
    partial = target.with_name(target.name + ".partial")
    frames = 0
    try:
        with open(raw, "rb") as source, open(partial, "wb") as sink:
            sink.write(build_y4m_header(layout))
            while len(frame := source.read(layout.frame_bytes)) == layout.frame_bytes:
                sink.write(Y4M_FRAME)
                sink.write(unpad(frame, layout))
                frames += 1
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return frames


def amend_manifest(path: Path, fields: dict[str, Any]) -> None:
    """Add fields to a finished manifest, atomically (the file it describes is not touched)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(fields)
    write_json_atomically(path, data)


def finish_raw_video(files: Sequence[FileFinished], layout: RawLayout, y4m: bool, on_event: EventSink) -> None:
    """After a raw recording: each `.yuv` gets its `.y4m` twin (unless not wanted) and a manifest that says
    how its frames lie (`raw`: layout, whole frames, a cut last frame's bytes, the y4m's name)."""
    for finished in files:
        if finished.removed or finished.manifest is None or finished.path.suffix != ".yuv":
            continue
        frames, trailing = count_frames(finished.bytes, layout)
        twin: str | None = None
        if y4m and frames:
            target = finished.path.with_suffix(".y4m")
            try:
                write_y4m(finished.path, target, layout)
                twin = target.name
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                on_event(Notice("error", f"could not write {target.name} ({reason}); {finished.path.name} is kept"))
        try:
            # `container`: the file is raw I420 (as its suffix says), with the layout that reads it.
            amend_manifest(finished.manifest, {"container": "yuv", "raw": {
                **layout.describe(), "frames": frames, "trailing_bytes": trailing, "y4m": twin}})
        except (OSError, ValueError) as exc:
            on_event(Notice("error", f"could not add the raw layout to {finished.manifest.name} ({exc})"))


def convert_received(path: Path, camera: RawLayout, output: RawLayout, target: Path) -> tuple[int, str, str]:
    """Convert the received picture at `path` into `target` (replacing it when it is the same name):
    returns the new file's bytes and SHA-256, and the SHA-256 of what the camera sent."""
    data = path.read_bytes()
    received_sha = hashlib.sha256(data).hexdigest()
    converted = convert_picture(data, camera, output)
    write_bytes_atomically(target, converted)
    if target != path:
        path.unlink(missing_ok=True)
    return len(converted), hashlib.sha256(converted).hexdigest(), received_sha
