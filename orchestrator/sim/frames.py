"""What the simulated camera sends, frame by frame, whatever the codec (pure).

`FramePlan` loops a shipped clip (H.264 access units from h264.py, JPEG images from mjpeg_clip.py);
`I420Pattern` draws raw frames for `rpicam-vid --codec yuv420`. The camera loop asks either for frame n.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from orchestrator.sim.mjpeg_clip import split_jpeg_images


class Frames(Protocol):
    """Frame `index` of a run (0 starts the stream), whatever the codec."""

    def frame(self, index: int) -> bytes: ...


@dataclass(frozen=True)
class FramePlan:
    """The clip as frames: `first` starts the run (H.264: always with SPS/PPS), `loop[i % len]` follows."""

    first: bytes
    loop: tuple[bytes, ...]

    def frame(self, index: int) -> bytes:
        return self.first if index == 0 else self.loop[index % len(self.loop)]


def build_mjpeg_plan(data: bytes) -> FramePlan:
    """Back-to-back JPEGs as frames: one image per frame, looped; every image stands on its own."""
    images = split_jpeg_images(data)
    return FramePlan(first=images[0], loop=images)


@dataclass(frozen=True)
class I420Pattern:
    """Raw I420 frames as rpicam-vid --codec yuv420 writes them (encoder/null_encoder.cpp: each camera buffer
    whole, Y then U then V): a bright bar that moves across a grey picture, one step a frame."""

    width: int
    height: int

    def frame(self, index: int) -> bytes:
        bar = self.width // 8
        left = (index * 8) % self.width
        row = bytearray(b"\x80" * self.width)
        row[left : left + bar] = b"\xeb" * len(row[left : left + bar])
        chroma = b"\x80" * (self.width // 2 * (self.height // 2) * 2)
        return bytes(row) * self.height + chroma
