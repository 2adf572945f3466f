"""The Python API: frames from the Pi's camera into the user's own code, live, as numpy arrays.

    from orchestrator import Camera

    with Camera("pi@cam1") as cam:
        img = cam.capture(format="bgr", width=640, height=480)       # numpy uint8, (480, 640, 3)
        for frame in cam.frames(format="bgr", width=640, height=480, fps=30, seconds=10):
            frame.array, frame.index, frame.arrival, frame.pts_ms

The same jobs as the CLI run underneath (`snap` for `capture`, `record` for `frames`), with the same target,
~/.ssh/config and config-file defaults; errors are the CLI's `PiorchError`s, with the same message and fix.
`Camera("demo")` uses the built-in simulated Pi. Leaving the `with` block (normally, by an exception, or
Ctrl+C) stops the pipeline on the Pi and frees the camera.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from orchestrator.config import Config, load_config
from orchestrator.errors import PiorchError, UsageError
from orchestrator.events import RawLayout, State
from orchestrator.resolve import RecordChoices, SnapChoices, build_record_settings, build_snap_settings
from orchestrator.settings import Backend
from orchestrator.stream.frame_times import CameraRun, FrameTimes
from orchestrator.stream.frames import ENCODED_FORMATS, PIXEL_FORMATS, Frame, make_decoder

if TYPE_CHECKING:
    import numpy as np

    from orchestrator.pi.host import Host

__all__ = ["Camera", "Frame"]

DEMO = "demo"
# Compressed bytes waiting for the decoder: far more than any decoder falls behind by in a healthy run; past
# it, bytes are dropped (and the frames they carried counted) instead of memory growing without bound.
MAX_PENDING_BYTES = 256 << 20
# How long the decoder waits for the caller's loop to take a frame before the oldest waiting one is dropped:
# a burst of frames from one read is not a slow loop.
BURST_WAIT_S = 0.1
# How long leaving the `with` block may take: the pipeline is stopped on the Pi and its threads joined.
STOP_TIMEOUT_S = 30.0
# A decoded frame waits this long for its camera timestamp, which travels over SSH beside the video.
PTS_WAIT_S = 1.0


class Camera:
    """One Pi (or the simulated one) for the length of a `with` block."""

    def __init__(self, target: str = DEMO, *, config: str | Path | None = None, laptop_ip: str | None = None,
                 port: int | None = None, camera_tool: str | None = None, accept_new_host_key: bool = False,
                 queue_frames: int = 4) -> None:
        if queue_frames < 1:
            raise UsageError(f"queue_frames={queue_frames}", "keep at least one frame waiting")
        self.target = target
        self._demo = target == DEMO
        flags: dict[str, Any] = {"pi": None if self._demo else target, "laptop_ip": laptop_ip, "port": port,
                                 "camera_tool": camera_tool}
        # Read once, like the CLI: defaults < config file < PIORCH_* < these arguments.
        self._config = load_config(flags, Path(config) if config is not None else None)
        self._accept_new_host_key = accept_new_host_key
        self._queue_frames = queue_frames
        self._host: Host | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._running: _FrameStream | None = None
        # Frames the camera sent that the caller's loop did not take in time (kept counting across streams).
        self.frames_dropped = 0

    # ------------------------------------------------------------------------------------------ lifetime

    def __enter__(self) -> Camera:
        self._scratch = tempfile.TemporaryDirectory(prefix="piorch-camera-")
        try:
            self._host = self._connect(Path(self._scratch.name))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop what runs on the Pi (the camera is free again), then drop the connection."""
        if self._running is not None:
            self._running.stop()
            self._running = None
        if self._host is not None:
            self._host.close()
            self._host = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def _connect(self, scratch: Path) -> Host:
        if self._demo:
            return _simulated_pi(scratch, self._config)
        from orchestrator.pi.ssh import connect_pi
        from orchestrator.resolve import build_ssh_settings

        return connect_pi(build_ssh_settings(self._config, self._accept_new_host_key))

    def _require_host(self) -> Host:
        if self._host is None:
            raise UsageError("the camera is not open", "use it inside `with Camera(...) as cam:`")
        return self._host

    def _values(self, out_dir: Path, **overrides: Any) -> Config:
        values = {**self._config.values, "out": str(out_dir), **overrides}
        if self._demo:
            # The simulated Pi is this laptop: it sends over loopback to the builtin receiver.
            values.update(pi=DEMO, laptop_ip="127.0.0.1", backend=Backend.BUILTIN.value, port=0)
        return Config(values, self._config.sources)

    # ------------------------------------------------------------------------------------------ stills

    def capture(self, format: str = "bgr", width: int | None = None, height: int | None = None, *,
                resize: tuple[int, int] | None = None, vflip: bool = False,
                hflip: bool = False) -> np.ndarray[Any, Any] | bytes:
        """One picture: a numpy array (bgr, rgb, bgra, rgba, yuv) or an encoded file's bytes (jpeg, png,
        bmp, gif). `width`/`height` are asked of the camera; `resize=(w, h)` scales it on the laptop."""
        if format not in PIXEL_FORMATS and format not in ENCODED_FORMATS:
            raise UsageError(f"unknown format {format!r}",
                             f"use one of {', '.join([*PIXEL_FORMATS, *ENCODED_FORMATS])}")
        host = self._require_host()
        # The camera's own encoding when it is what was asked for; raw pixels when the size is known (the
        # camera's I420 or RGB, converted on the laptop only where its tool cannot write the order); PNG
        # (lossless) for everything else.
        native = {"jpeg": "jpg", "png": "png", "bmp": "bmp"}
        raw = format in PIXEL_FORMATS and width is not None and height is not None
        wanted = format if raw else native.get(format, "png")
        scaled = f"{resize[0]}x{resize[1]}" if raw and resize is not None else None
        with tempfile.TemporaryDirectory(prefix="piorch-capture-") as out:
            values = self._values(Path(out), vflip=vflip, hflip=hflip)
            settings, _ = build_snap_settings(values, SnapChoices(image_format=wanted, width=width, height=height,
                                                                  resize=scaled))
            from orchestrator.jobs.snap import run_snap

            result = run_snap(settings, host, _ignore, threading.Event())
            if result.problem is not None:
                raise PiorchError(result.problem.message, result.problem.fix)
            if result.state is not State.DONE or not result.files:
                raise PiorchError("the picture did not arrive", "try again; `piorch doctor` checks the Pi")
            picture = result.files[0].path.read_bytes()
            manifest = result.files[0].manifest
            layout = _raw_layout(manifest.read_text() if raw and manifest is not None else None)
        if layout is not None:
            return _raw_array(picture, layout)
        if format in native and resize is None:
            return picture
        return _convert_still(picture, format, resize)

    # ------------------------------------------------------------------------------------------ video

    def frames(self, format: str = "bgr", width: int = 640, height: int = 480, fps: int = 30,
               seconds: float | None = None, *, codec: str = "h264", bitrate: int | None = None,
               vflip: bool = False, hflip: bool = False, out: str | Path | None = None) -> Iterator[Frame]:
        """Frames as they arrive, decoded on the laptop (h264, mjpeg) or cut from the raw stream (yuv420).

        `seconds=None` runs until the loop stops. A loop slower than the camera never makes memory grow:
        frames it did not take are dropped, oldest first, and counted in `frames_dropped`. `out=` keeps the
        received stream (with its manifest) in that folder as well.
        """
        pixel_format = PIXEL_FORMATS.get(format)
        if pixel_format is None:
            raise UsageError(f"unknown format {format!r}", f"use one of {', '.join(PIXEL_FORMATS)}")
        if codec == "yuv420" and (width % 2 or height % 2):
            raise UsageError(f"raw I420 video needs an even width and height, not {width}x{height}",
                             "give an even width and height")
        if self._running is not None:
            raise UsageError("frames() is already running on this camera", "finish the first loop, then start another")
        host = self._require_host()
        keep = Path(out).expanduser() if out is not None else None
        scratch = Path(tempfile.mkdtemp(prefix="piorch-frames-"))
        values = self._values(keep or scratch, width=width, height=height, fps=fps, vflip=vflip, hflip=hflip,
                              container="h264", **({"bitrate": bitrate} if bitrate is not None else {}))
        from orchestrator.resolve import duration_ms

        settings, _ = build_record_settings(values, RecordChoices(duration_ms=duration_ms(None, seconds), codec=codec))
        # Raw frames: the decoder is made when record reports how they lie (the Pi's stride), before the first byte.
        decoder = None if codec == "yuv420" else \
            make_decoder(codec, pixel_format, settings.camera.width, settings.camera.height)
        stream = _FrameStream(self, host, settings, decoder, scratch if keep is None else None, pixel_format)
        self._running = stream
        try:
            yield from stream.run()
        finally:
            stream.stop()
            self._running = None


def _ignore(event: object) -> None:
    """The API prints nothing; its caller hears of problems through exceptions."""


def _simulated_pi(scratch: Path, config: Config) -> Host:
    from orchestrator.pi.host import LocalHost
    from orchestrator.settings import CameraTool
    from orchestrator.sim.stand_in import SIM_RAW_TOOLS, SIM_STILL_TOOLS, install_stand_ins

    bin_dir = scratch / "bin"
    tool = CameraTool(config["camera_tool"])
    # raspividyuv and raspiyuv too: the legacy stack's raw video and stills.
    tools = [CameraTool.RASPIVID.value if tool is CameraTool.AUTO else tool.value, *SIM_STILL_TOOLS, *SIM_RAW_TOOLS]
    # The lock file stands for the camera: a second user while a stream runs finds it busy, as on a Pi.
    install_stand_ins(bin_dir, tools, extra_env={"PIORCH_SIM_LOCK": str(scratch / "camera.lock")})
    if shutil.which("nc") is None:
        install_stand_ins(bin_dir, ("nc",))
    return LocalHost(DEMO, path_prepend=bin_dir)


def _raw_layout(manifest_text: str | None) -> RawLayout | None:
    """The layout the snap job wrote into the picture's manifest (`raw`), or None for an encoded picture."""
    import json

    info = json.loads(manifest_text).get("raw") if manifest_text else None
    if not isinstance(info, dict):
        return None
    return RawLayout(info["pixel_format"], info["width"], info["height"], info["stride"], info["rows"])


def _raw_array(picture: bytes, layout: RawLayout) -> np.ndarray[Any, Any]:
    """picamera's shapes: (h * 3 // 2, w) for I420, (h, w, 3 or 4) for the others; padding dropped."""
    import numpy

    from orchestrator.stream.raw import unpad

    array = numpy.frombuffer(unpad(picture, layout), numpy.uint8)
    if layout.pixel_format == "yuv420p":
        return array.reshape(layout.height * 3 // 2, layout.width)
    return array.reshape(layout.height, layout.width, layout.bytes_per_pixel)


def _convert_still(picture: bytes, format: str, resize: tuple[int, int] | None) -> np.ndarray[Any, Any] | bytes:
    """Decode the received picture and hand it back in `format`, scaled to `resize` on the laptop."""
    import io

    import av

    with av.open(io.BytesIO(picture)) as container:
        frame = next(container.decode(video=0))
    if resize is not None:
        width, height = resize
        if width < 2 or height < 2:
            raise UsageError(f"resize={resize}", "give a width and height of 2 pixels or more")
        frame = frame.reformat(width=width, height=height)
    if format in PIXEL_FORMATS:
        return frame.to_ndarray(format=PIXEL_FORMATS[format])  # type: ignore[no-any-return]
    codec: Any = av.CodecContext.create(ENCODED_FORMATS[format], "w")
    codec.width, codec.height = frame.width, frame.height
    codec.pix_fmt = {"mjpeg": "yuvj420p", "png": "rgb24", "bmp": "bgr24", "gif": "rgb8"}[codec.name]
    from fractions import Fraction

    codec.time_base = Fraction(1, 1)
    packets = [*codec.encode(frame.reformat(format=codec.pix_fmt)), *codec.encode(None)]
    data = b"".join(bytes(packet) for packet in packets)
    # FFmpeg's GIF encoder leaves the file's trailer (0x3B) to its muxer: without it the file is not whole.
    return data + b";" if format == "gif" and not data.endswith(b";") else data


class _FrameStream:
    """One `frames()` loop: the record job on its own thread, a decoder thread, a bounded frame queue."""

    def __init__(self, camera: Camera, host: Host, settings: Any, decoder: Any, scratch: Path | None,
                 pixel_format: str) -> None:
        self._camera, self._host, self._settings, self._decoder = camera, host, settings, decoder
        self._scratch = scratch
        self._pixel_format = pixel_format
        self._stop = threading.Event()
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._lock = threading.Condition()
        self._ready: collections.deque[Frame] = collections.deque()
        self._decoded = 0
        self._done = False
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self.bytes_dropped = 0
        # The camera's timestamps (when its tool sends them) and where the current run's frames start.
        self._times = FrameTimes(settings.camera.fps)
        self._run: CameraRun | None = None
        self._run_start = 0

    def _tap(self, data: bytes | memoryview) -> None:
        # On the receiving thread: one copy into the queue and back to the socket, never a wait.
        if self._pending > MAX_PENDING_BYTES:
            self.bytes_dropped += len(data)
            return
        chunk = bytes(data)
        with self._pending_lock:
            self._pending += len(chunk)
        self._chunks.put(chunk)

    def _record(self) -> None:
        from orchestrator.jobs.record import run_recording

        try:
            result = run_recording(self._settings, self._host, self._on_event, self._stop, tap=self._tap,
                                   frame_times=self._times)
            if result.problem is not None and not self._stop.is_set():
                self._error = PiorchError(result.problem.message, result.problem.fix)
        except BaseException as exc:  # handed to the caller's loop, which raises it there
            self._error = exc
        finally:
            self._chunks.put(None)

    def _on_event(self, event: object) -> None:
        """Raw video: how its frames lie on this Pi (stride, rows), reported before the camera starts."""
        if isinstance(event, RawLayout):
            self._decoder = make_decoder("yuv420", self._pixel_format, event.width, event.height, event.stride,
                                         event.rows, full_range=bool(event.full_range))

    def _decode(self) -> None:
        try:
            while (chunk := self._chunks.get()) is not None:
                with self._pending_lock:
                    self._pending -= len(chunk)
                self._deliver(self._decoder.feed(chunk))
            self._deliver(self._decoder.finish())
        except BaseException as exc:
            self._error = self._error or exc
        finally:
            with self._lock:
                self._done = True
                self._lock.notify_all()

    def _pts_of(self, index: int) -> float | None:
        """The camera's time of the index-th frame decoded, from the run that sent it (a camera started again
        after a lost link counts from 0); None without timestamps. On the decoder thread."""
        run = self._times.current
        if run is None:
            return None
        if run is not self._run:
            self._run, self._run_start = run, index
        return run.time_of(index - self._run_start, PTS_WAIT_S)

    def _deliver(self, arrays: list[Any]) -> None:
        if not arrays:
            return
        arrival = datetime.now(timezone.utc)
        stamps = [self._pts_of(self._decoded + offset) for offset in range(len(arrays))]
        with self._lock:
            for array, pts in zip(arrays, stamps, strict=True):
                # Several frames may come out of one read: the loop gets a moment to take them before the
                # oldest goes. A loop that is really behind still loses frames, counted, never memory.
                waited = 0.0
                while len(self._ready) >= self._camera._queue_frames and waited < BURST_WAIT_S \
                        and not self._stop.is_set():
                    self._lock.notify_all()
                    self._lock.wait(0.01)
                    waited += 0.01
                if len(self._ready) >= self._camera._queue_frames:
                    self._ready.popleft()  # the loop is behind: the oldest waiting frame goes, counted
                    self._camera.frames_dropped += 1
                self._ready.append(Frame(array, self._decoded, arrival, pts))
                self._decoded += 1
            self._lock.notify_all()

    def run(self) -> Iterator[Frame]:
        for target, name in ((self._record, "piorch-api-record"), (self._decode, "piorch-api-decode")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(thread)
            thread.start()
        while True:
            with self._lock:
                while not self._ready and not self._done:
                    # A timeout keeps Ctrl+C responsive in the caller's thread.
                    self._lock.wait(0.2)
                frame = self._ready.popleft() if self._ready else None
            if frame is None:
                break
            yield frame
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        """Stop the camera on the Pi, end both threads, remove the scratch folder (idempotent)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(STOP_TIMEOUT_S)
        self._threads.clear()
        if self._scratch is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._scratch)
            self._scratch = None

