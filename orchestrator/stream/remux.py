"""Raw H.264 into MP4 or MKV with the true frame times, without re-encoding (PyAV, not a hand-made muxer).

A raw `.h264` carries no timestamps and players guess 25 fps; the camera's real times go into the
container here. With the camera's own timestamps (frame_times.py), frame i *in display order* is shown at the
i-th of its file's times, counted from the file's first: where the camera dropped frames, the container has a
longer frame there (variable frame rate), and a player holds the picture instead of speeding up. Frames past
the last timestamp (none came for them) follow at 1 / fps. Without timestamps, frame i is shown at i / fps.
A Pi's hardware encoder makes no B-frames,
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
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


class DisplayClock:
    """When frame k (in display order, from 0) is shown, in CLOCK ticks from the file's first frame (pure).

    From the camera's times when there are any (sorted: display order; a camera that writes them in decode
    order, as libx264 with B-frames does, gives the same set), and past the last of them one typical interval
    a frame; else k / fps."""

    def __init__(self, fps: float, times_ms: Sequence[float] = ()) -> None:
        self._tick = 1 / (CLOCK * Fraction(fps).limit_denominator(1001))
        ordered = sorted(times_ms)
        # Milliseconds to 90 kHz ticks, counted from the first frame.
        self._shown = [round((time - ordered[0]) * 90) for time in ordered] if ordered else []
        gaps = sorted(b - a for a, b in pairwise(self._shown))
        self._step = gaps[len(gaps) // 2] if gaps else round(self._tick)

    def at(self, position: int) -> int:
        if not self._shown:
            return round(position * self._tick)
        if position < len(self._shown):
            return self._shown[position]
        return self._shown[-1] + (position - len(self._shown) + 1) * self._step


def _reorders(stream: Any) -> bool:
    """The stream's SPS (or the probe's first frames) say pictures are shown in another order than sent."""
    return bool(stream.codec_context.has_b_frames)


def remux_h264(raw: Path, target: Path, fps: float, cancelled: threading.Event | None = None,
               times_ms: Sequence[float] = ()) -> RemuxResult:
    """Write `target` (.mp4 or .mkv) from `raw`; temp name + rename, so a failed remux leaves nothing half.
    `times_ms`: the camera's timestamps of the file's frames (empty: frame i at i / fps). Raises RemuxError,
    with the reason, for every failure (PyAV missing included)."""
    cancelled = cancelled or threading.Event()
    partial = target.with_name(target.name + ".partial")
    frames = end = 0
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
            at = DisplayClock(fps, times_ms).at
            # A frame shown before frames sent ahead of it: decode times start that much early (the largest
            # lead of a decode slot's time over the time its frame is shown), so no frame is decoded after
            # its own display time.
            delay = max((at(decoded) - at(shown) for decoded, shown in order.items()), default=0) if order else 0
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
                    packet.pts = at(shown)
                    packet.dts = at(decoded) - delay
                    packet.duration = at(shown + 1) - at(shown)
                    sink.mux(packet)
                    frames += 1
                    end = max(end, at(shown + 1))
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
    return RemuxResult(target, frames, end / 90000)


Then = Callable[[RemuxResult | None, str | None], None]


class Remuxer:
    """One worker thread that remuxes finished files in order, so receiving the next segment never waits.

    `submit(raw, then, times_ms)` queues a job; the worker remuxes (with the camera's times of the file's
    frames, when given) and calls `then(result_or_None, error_or_None)`.
    `close(timeout)` waits for the queue to drain (every wait has a deadline); past it the remux under way
    is given up and no further job starts. Nothing raised by a job or by `then` ends the worker.
    """

    def __init__(self, container: str, fps: float, on_event: EventSink) -> None:
        self.container = container
        self.fps = fps
        self._on_event = on_event
        self._cancelled = threading.Event()
        self._jobs: queue.Queue[tuple[Path, Then, Sequence[float]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, daemon=True, name="piorch-remux")
        self._thread.start()

    def submit(self, raw: Path, then: Then, times_ms: Sequence[float] = ()) -> None:
        self._jobs.put((raw, then, times_ms))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            raw, then, times_ms = job
            if self._cancelled.is_set():
                continue  # given up: whoever waited has finished these files with their raw stream
            result: RemuxResult | None = None
            error: str | None = None
            try:
                result = remux_h264(raw, raw.with_suffix("." + self.container), self.fps, self._cancelled, times_ms)
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
