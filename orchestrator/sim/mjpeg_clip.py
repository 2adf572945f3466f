"""The MJPEG the camera simulator sends: the shipped images (clip.mjpeg, made by make_clip_mjpeg.sh), one a frame.

A real MJPEG stream is JPEG images back to back, each from SOI (`FF D8`) to EOI (`FF D9`), one per frame;
camera.py loops these images on the same schedule as the H.264 clip. There is no padding: JPEG has nothing
like H.264's filler NAL units that a decoder would skip, so the simulator's MJPEG byte rate is the images'
own size times the frame rate (~11.5 KB x fps), whatever bitrate was asked for. A real Pi only approximates
the bitrate for MJPEG too (raspivid), or ignores it (rpicam-vid sets `--quality` instead).
"""

from __future__ import annotations

from pathlib import Path

MJPEG_CLIP_PATH = Path(__file__).with_name("clip.mjpeg")
SOI = b"\xff\xd8"
EOI = b"\xff\xd9"


def split_jpeg_images(data: bytes) -> tuple[bytes, ...]:
    """Back-to-back JPEGs -> the images, each from SOI to EOI. A plain search for the next EOI, which is
    right only for data known to be clean (no FF D9 in a header segment, no EXIF thumbnail): the shipped file,
    checked by the tests. A stream off a wire needs the marker-walking splitter in orchestrator/stream/mjpeg.py."""
    images: list[bytes] = []
    pos = 0
    while pos < len(data):
        if not data.startswith(SOI, pos):
            raise ValueError(f"expected a JPEG start (FF D8) at byte {pos}")
        end = data.find(EOI, pos + len(SOI))
        if end == -1:
            raise ValueError(f"the JPEG image at byte {pos} has no end (FF D9)")
        images.append(data[pos : end + len(EOI)])
        pos = end + len(EOI)
    if not images:
        raise ValueError("no JPEG images")
    return tuple(images)
