"""Raw H.264 into MP4 or MKV with the true frame rate, without re-encoding (PyAV, not a hand-made muxer).

A raw `.h264` carries no timestamps and players guess 25 fps; the camera's real rate goes into the
container here. Frame i *in display order* is shown at i / fps. A Pi's hardware encoder makes no B-frames,
so there decode order is display order. libx264 (rpicam-vid on a Pi 5 without --low-latency) makes
B-frames: decode order is then not display order, and the stream itself must say which frame is shown when.
For such a stream (its SPS says frames are reordered) the remux decodes it once and reads the display order
from the decoder, which applies the stream's own picture order counts; packets keep their decode order and
get the matching timestamps. `av` is imported here only: it is heavy, and only recordings with a container
need it.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from orchestrator.events import EventSink, Notice

# Timestamps in a 90 kHz clock (MPEG's), which every container takes; the muxer rescales them into its own
# time base from the packet's.
CLOCK = Fraction(1, 90000)


@dataclass(frozen=True)
class RemuxResult:
    path: Path
    frames: int
    duration_s: float


class RemuxError(Exception):
    """The remux failed; the raw file stays and the manifest says why."""


def _display_order(raw: Path, cancelled: threading.Event) -> dict[int, int]:
    """Decode index -> display index of every frame the decoder shows (a frame it cannot decode, such as
    one cut short at the end, has none). The decoder carries each packet's pts (here: its decode index)
    over to the picture it outputs, in display order."""
    import av

    shown: list[int] = []
    with av.open(os.fspath(raw.absolute()), format="h264") as source:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        for packet in source.demux(stream):
            if cancelled.is_set():
                raise RemuxError(f"remux of {raw.name} was given up")
            if packet.size:
                packet.pts = packet.dts = index
                index += 1
            shown.extend(frame.pts for frame in stream.decode(packet) if frame.pts is not None)
    return {decoded: position for position, decoded in enumerate(shown)}


def _reorders(stream: Any) -> bool:
    """The stream's SPS (or the probe's first frames) say pictures are shown in another order than sent."""
    return bool(stream.codec_context.has_b_frames)


def remux_h264(raw: Path, target: Path, fps: float, cancelled: threading.Event | None = None) -> RemuxResult:
    """Write `target` (.mp4 or .mkv) from `raw`; temp name + rename, so a failed remux leaves nothing half.
    Raises RemuxError, with the reason, for every failure (PyAV missing included)."""
    cancelled = cancelled or threading.Event()
    rate = Fraction(fps).limit_denominator(1001)
    tick = 90000 / rate
    partial = target.with_name(target.name + ".partial")
    frames = 0
    try:
        import av
    except ImportError as exc:
        raise RemuxError(f"remux of {raw.name} failed: PyAV is not installed ({exc}); "
                         "install it with `pip install av`") from None
    try:
        # Absolute paths: FFmpeg reads `pipe:1` or `concat:x` as protocols, whatever folder they name.
        with av.open(os.fspath(raw.absolute()), format="h264") as source:
            in_stream = source.streams.video[0]
            order = _display_order(raw, cancelled) if _reorders(in_stream) else None
            # A frame shown before frames sent ahead of it: decode times start that many frames early.
            delay = max((decoded - shown for decoded, shown in order.items()), default=0) if order else 0
            with av.open(os.fspath(partial.absolute()), mode="w",
                         format=target.suffix.lstrip(".").replace("mkv", "matroska")) as sink:
                out_stream = sink.add_stream_from_template(in_stream)
                out_stream.time_base = CLOCK
                decoded = -1
                for packet in source.demux(in_stream):
                    if packet.size == 0:
                        continue  # the demuxer's end-of-stream marker
                    if cancelled.is_set():
                        raise RemuxError(f"remux of {raw.name} was given up")
                    decoded += 1
                    shown = decoded if order is None else order.get(decoded)
                    if shown is None:
                        continue  # a frame the decoder could not show (cut short): no time to give it
                    packet.stream = out_stream
                    packet.time_base = CLOCK
                    packet.pts = round(shown * tick)
                    packet.dts = round((decoded - delay) * tick)
                    packet.duration = round(tick)
                    sink.mux(packet)
                    frames += 1
        if frames == 0:
            raise RemuxError(f"remux of {raw.name} failed: no video frames in it")
        os.replace(partial, target)
    except RemuxError:
        partial.unlink(missing_ok=True)
        raise
    except OSError as exc:  # PyAV's FFmpegError is one too
        partial.unlink(missing_ok=True)
        raise RemuxError(f"remux of {raw.name} into {target.name} failed: {exc.strerror or exc}") from None
    except Exception as exc:  # PyAV raises many types (ValueError, ...): all mean "no file"
        partial.unlink(missing_ok=True)
        raise RemuxError(f"remux of {raw.name} failed: {exc}") from None
    return RemuxResult(target, frames, float(frames / rate))


Then = Callable[[RemuxResult | None, str | None], None]


class Remuxer:
    """One worker thread that remuxes finished files in order, so receiving the next segment never waits.

    `submit(raw, then)` queues a job; the worker remuxes and calls `then(result_or_None, error_or_None)`.
    `close(timeout)` waits for the queue to drain (every wait has a deadline); past it the remux under way
    is given up and no further job starts. Nothing raised by a job or by `then` ends the worker.
    """

    def __init__(self, container: str, fps: float, on_event: EventSink) -> None:
        self.container = container
        self.fps = fps
        self._on_event = on_event
        self._cancelled = threading.Event()
        self._jobs: queue.Queue[tuple[Path, Then] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, daemon=True, name="piorch-remux")
        self._thread.start()

    def submit(self, raw: Path, then: Then) -> None:
        self._jobs.put((raw, then))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            raw, then = job
            if self._cancelled.is_set():
                continue  # given up: whoever waited has finished these files with their raw stream
            result: RemuxResult | None = None
            error: str | None = None
            try:
                result = remux_h264(raw, raw.with_suffix("." + self.container), self.fps, self._cancelled)
            except RemuxError as exc:
                error = str(exc)
            except Exception as exc:  # a bug, not a bad file: still an error on this file, not a dead thread
                error = f"remux of {raw.name} failed ({type(exc).__name__}: {exc})"
            try:
                then(result, error)
            except Exception as exc:
                self._on_event(Notice("error", f"finishing {raw.name} after its remux failed "
                                               f"({type(exc).__name__}: {exc})"))

    def close(self, timeout: float) -> bool:
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._cancelled.set()
            return False
        return True
