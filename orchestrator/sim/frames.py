"""What the simulated camera sends, frame by frame, whatever the codec (pure).

`FramePlan` loops encoded frames (H.264 access units from h264.py, JPEG images from mjpeg_clip.py or
synth.py); raw.py's `RawFrames` draws raw frames as they come. The camera loop asks either for frame n.
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
