"""Raw H.264 into MP4 or MKV with the true frame rate, without re-encoding (PyAV, not a hand-made muxer).

A raw `.h264` carries no timestamps and players guess 25 fps; the camera's real rate goes into the
container here. Pi encoders emit no B-frames, so decode order is display order and frame i is shown at
i / fps. `av` is imported here only: it is heavy, and only recordings with a container need it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

CONTAINERS = ("mp4", "mkv", "h264")


@dataclass(frozen=True)
class RemuxResult:
    path: Path
    frames: int
    duration_s: float


class RemuxError(Exception):
    """The remux failed; the raw file stays and the manifest says why."""


def remux_h264(raw: Path, target: Path, fps: float) -> RemuxResult:
    """Write `target` (.mp4 or .mkv) from `raw`; temp name + rename, so a failed remux leaves nothing half."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    partial = target.with_name(target.name + ".partial")
    frames = 0
    try:
        # Absolute paths: FFmpeg reads `pipe:1` or `concat:x` as protocols, whatever folder they name.
        with av.open(os.fspath(raw.absolute()), format="h264") as source, \
                av.open(os.fspath(partial.absolute()), mode="w",
                        format=target.suffix.lstrip(".").replace("mkv", "matroska")) as sink:
            in_stream = source.streams.video[0]
            out_stream = sink.add_stream_from_template(in_stream)
            # Timestamps in a 90 kHz clock (MPEG's), which every container takes; the muxer rescales them
            # into its own time base from the packet's.
            clock = Fraction(1, 90000)
            out_stream.time_base = clock
            tick = 90000 / rate
            for packet in source.demux(in_stream):
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream marker
                packet.stream = out_stream
                packet.time_base = clock
                packet.pts = packet.dts = round(frames * tick)
                packet.duration = round(tick)
                sink.mux(packet)
                frames += 1
    except Exception as exc:  # PyAV raises many types (FFmpegError, ValueError...): all mean "no file"
        partial.unlink(missing_ok=True)
        raise RemuxError(f"remux of {raw.name} failed: {exc}") from None
    if frames == 0:
        partial.unlink(missing_ok=True)
        raise RemuxError(f"remux of {raw.name} failed: no video frames in it")
    os.replace(partial, target)
    return RemuxResult(target, frames, float(frames / rate))


class Remuxer:
    """One worker thread that remuxes finished files in order, so receiving the next segment never waits.

    `submit(raw, then)` queues a job; the worker remuxes and calls `then(result_or_None, error_or_None)`.
    `close(timeout)` waits for the queue to drain (every wait has a deadline).
    """

    def __init__(self, container: str, fps: float) -> None:
        import queue
        import threading

        self.container = container
        self.fps = fps
        self._jobs: queue.Queue[tuple[Path, Callable[[RemuxResult | None, str | None], None]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, daemon=True, name="piorch-remux")
        self._thread.start()

    def submit(self, raw: Path, then: Callable[[RemuxResult | None, str | None], None]) -> None:
        self._jobs.put((raw, then))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            raw, then = job
            target = raw.with_suffix("." + self.container)
            try:
                result: RemuxResult | None = remux_h264(raw, target, self.fps)
                error = None
            except RemuxError as exc:
                result, error = None, str(exc)
            then(result, error)

    def close(self, timeout: float) -> bool:
        self._jobs.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()
