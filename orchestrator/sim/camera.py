"""A camera simulator that behaves like raspivid / rpicam-vid / libcamera-vid on a laptop.

Run as `python -m orchestrator.sim.camera TOOL ARGS...` (or through a stand-in shim from stand_in.py). It
speaks the tool's option language (options.py), holds "the camera" (an flock) while it runs, and writes a
real H.264 stream: the shipped clip looped forever, one access unit per frame interval at the requested
frame rate, padded with filler NAL units up to the requested bitrate. Without inline headers
(`-ih` / `--inline`) the SPS/PPS repeats are stripped after the first frame, as on a real Pi, so a
stream cut anywhere but its start does not decode on its own.

MJPEG (`-cd MJPEG` / `--codec mjpeg`) goes through the same loop, lock, log and faults: the shipped JPEG
images (mjpeg_clip.py) looped, one image per frame interval, never padded (JPEG has no filler units), so
its byte rate is the images' own size times the frame rate, whatever the bitrate.

Environment (all optional):
  PIORCH_SIM_LOG=DIR             append one JSON line per run to DIR/runs.jsonl; DIR/running-<pid> exists
                                 while the process runs
  PIORCH_SIM_LOCK=PATH           the camera lock file (default /tmp/piorch-sim-camera-<uid>.lock)
  PIORCH_SIM_FAULT=no-camera     fail like a Pi without a camera
  PIORCH_SIM_FAULT=crash-after=N write exactly N bytes, then fail with exit code 1
  PIORCH_SIM_IGNORE_HUP_PIPE=1   old raspivid bug (userland#268): ignore SIGHUP and keep running, output
                                 discarded, after the output pipe breaks; only a signal or the timeout ends it

Exit codes: 0 timeout/--frames reached or help; 1 broken output pipe, injected crash, unsupported feature;
64 legacy usage error (EX_USAGE); 70 legacy camera failure (EX_SOFTWARE); 255 rpicam error (main returns -1);
128+N after signal N (SIGHUP 129, SIGINT 130, SIGTERM 143), logged first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import TypeVar

from orchestrator.sim.mjpeg_clip import MJPEG_CLIP_PATH, split_jpeg_images
from orchestrator.sim.options import (
    Dialect,
    SimOptions,
    SimUsageError,
    build_legacy_help,
    build_rpicam_help,
    dialect_for,
    effective_legacy_bitrate,
    parse_args,
)

CLIP_PATH = Path(__file__).with_name("clip.h264")
ENV_LOG = "PIORCH_SIM_LOG"
ENV_LOCK = "PIORCH_SIM_LOCK"
ENV_FAULT = "PIORCH_SIM_FAULT"
ENV_IGNORE_HUP_PIPE = "PIORCH_SIM_IGNORE_HUP_PIPE"
RUNS_FILE = "runs.jsonl"
RUNNING_PREFIX = "running-"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_LEGACY_USAGE = 64  # sysexits EX_USAGE, what RaspiVid.c exits with on a bad option
EXIT_LEGACY_SOFTWARE = 70  # sysexits EX_SOFTWARE, RaspiVid.c when the camera component fails
EXIT_RPICAM_ERROR = 255  # rpicam-vid's main() catches the exception and returns -1

SENSOR_ID = "/base/soc/i2c0mux/i2c@1/imx219@10"
LEGACY_BUSY_LINES = (
    "mmal: mmal_vc_component_enable: failed to enable component: ENOSPC",
    "mmal: camera component couldn't be enabled",
    "mmal: main: Failed to create camera component",
    "mmal: Failed to run camera app. Please check for firmware updates",
)
LEGACY_NO_CAMERA_LINES = (
    "mmal: Cannot read camera info, keeping the defaults for OV5647",
    "mmal: mmal_vc_component_create: failed to create component 'vc.ril.camera' (1:ENOMEM)",
    "mmal: mmal_component_create_core: could not create component 'vc.ril.camera' (1)",
    "mmal: Failed to create camera component",
    "mmal: main: Failed to create camera component",
    "mmal: Camera is not detected. Please check carefully the camera module is installed correctly",
)

NAL_SLICE = 1
NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_FILLER = 12
START_CODE = b"\x00\x00\x00\x01"
FILLER_MIN_SIZE = len(START_CODE) + 2  # start code, NAL header 0x0C, rbsp trailing byte 0x80
# A blocked write and every sleep wake up this often to notice a signal or the end of the run.
WAKE_INTERVAL_S = 0.05


class Reason(str, Enum):
    TIMEOUT = "timeout"  # -t elapsed, or rpicam's --frames count reached
    SIGNAL = "signal"
    EPIPE = "epipe"
    ERROR = "error"
    USAGE = "usage"  # bad option, or help/version/list-cameras (nothing recorded)


# ---------------------------------------------------------------------------------------------- pure parts


def split_nal_units(data: bytes) -> list[bytes]:
    """Annex B bytes -> NAL units, each with its own start code (00 00 01 or 00 00 00 01)."""
    starts: list[int] = []
    pos = data.find(b"\x00\x00\x01")
    while pos != -1:
        starts.append(pos - 1 if pos > 0 and data[pos - 1] == 0 else pos)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return [data[start:end] for start, end in zip(starts, [*starts[1:], len(data)], strict=True)]


def nal_type(nal: bytes) -> int:
    """Type of a NAL unit that still carries its start code."""
    header = nal.index(b"\x00\x00\x01") + 3
    return nal[header] & 0x1F


def _first_mb_is_zero(nal: bytes) -> bool:
    # first_mb_in_slice is the first ue(v) of the slice header; ue(v) == 0 is the single bit "1".
    header = nal.index(b"\x00\x00\x01") + 3
    return len(nal) > header + 1 and bool(nal[header + 1] & 0x80)


def split_access_units(data: bytes) -> list[tuple[bytes, ...]]:
    """Group NAL units into frames: non-VCL units belong to the next picture; a slice with
    first_mb_in_slice != 0 continues the current picture. Trailing non-VCL units join the last frame."""
    frames: list[tuple[bytes, ...]] = []
    pending: list[bytes] = []
    for nal in split_nal_units(data):
        kind = nal_type(nal)
        if kind not in (NAL_SLICE, NAL_IDR):
            pending.append(nal)
        elif frames and not pending and not _first_mb_is_zero(nal):
            frames[-1] = (*frames[-1], nal)
        else:
            frames.append((*pending, nal))
            pending = []
    if pending and frames:
        frames[-1] = (*frames[-1], *pending)
    return frames


def build_filler_nal(size: int) -> bytes:
    """A filler-data NAL unit (type 12) of exactly `size` bytes: decoders skip it, byte rates count it."""
    if size < FILLER_MIN_SIZE:
        raise ValueError(f"a filler NAL unit needs at least {FILLER_MIN_SIZE} bytes, not {size}")
    return START_CODE + b"\x0c" + b"\xff" * (size - FILLER_MIN_SIZE) + b"\x80"


def filler_size(frame_index: int, bitrate: int, framerate: float, sent: int, frame_len: int) -> int:
    """Filler bytes to append to frame `frame_index` so that everything sent so far tracks
    bitrate/8 bytes per second. Frames bigger than their share are paid back by later frames' filler;
    a gap too small for a filler NAL unit is carried to the next frame."""
    if bitrate <= 0:
        return 0
    target = int((frame_index + 1) * bitrate / 8 / framerate)
    gap = target - sent - frame_len
    return gap if gap >= FILLER_MIN_SIZE else 0


@dataclass(frozen=True)
class FramePlan:
    """The clip as frames: `first` starts the run (H.264: always with SPS/PPS), `loop[i % len]` follows."""

    first: bytes
    loop: tuple[bytes, ...]

    def frame(self, index: int) -> bytes:
        return self.first if index == 0 else self.loop[index % len(self.loop)]


def build_frame_plan(clip: bytes, inline_headers: bool) -> FramePlan:
    """Cut the clip into frames; without inline headers keep SPS/PPS only in the very first frame."""
    units = split_access_units(clip)
    if not units or nal_type(units[0][0]) != NAL_SPS:
        raise ValueError("the clip must start with SPS, PPS, IDR")
    if inline_headers:
        loop = tuple(b"".join(unit) for unit in units)
    else:
        loop = tuple(b"".join(n for n in unit if nal_type(n) not in (NAL_SPS, NAL_PPS)) for unit in units)
    return FramePlan(first=b"".join(units[0]), loop=loop)


def build_mjpeg_plan(data: bytes) -> FramePlan:
    """Back-to-back JPEGs as frames: one image per frame, looped; every image stands on its own."""
    images = split_jpeg_images(data)
    return FramePlan(first=images[0], loop=images)


@dataclass(frozen=True)
class Fault:
    no_camera: bool = False
    crash_after: int | None = None


def parse_fault(text: str | None) -> Fault:
    """PIORCH_SIM_FAULT: "", "no-camera" or "crash-after=N"."""
    if not text:
        return Fault()
    if text == "no-camera":
        return Fault(no_camera=True)
    name, _, value = text.partition("=")
    if name == "crash-after" and value.isdigit():
        return Fault(crash_after=int(value))
    raise ValueError(f"{ENV_FAULT}={text!r}: expected no-camera or crash-after=N")


def default_lock_path() -> Path:
    return Path(f"/tmp/piorch-sim-camera-{os.getuid()}.lock")


def lock_path_from_env() -> Path:
    return Path(os.environ.get(ENV_LOCK) or default_lock_path())


def camera_is_free(lock_path: Path | None = None) -> bool:
    """True when no simulated camera process holds the lock. It takes the lock for a moment and lets go:
    a simulator starting in that same moment fails as "busy", so probe a running camera, not a starting one."""
    path = lock_path or lock_path_from_env()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing also releases the lock if we got it
    return True


# ----------------------------------------------------------------------------------------------- effects


def _say(*lines: str) -> None:
    """Diagnostics to stderr, unbuffered. stderr is often the same closed SSH channel that broke stdout;
    a lost diagnostic must not turn a clean exit into a traceback, the JSON log is the record."""
    try:
        os.write(2, "".join(line + "\n" for line in lines).encode())
    except OSError:
        return  # nowhere left to report it; the caller's exit code and the JSON log still say what happened


def _libcamera_line(level: str, text: str) -> str:
    # libcamera's log prefix: [uptime] [pid] LEVEL ...
    uptime = time.monotonic()
    stamp = f"{int(uptime // 3600)}:{int(uptime % 3600 // 60):02d}:{uptime % 60:012.9f}"
    return f"[{stamp}] [{os.getpid()}] {level:>5} {text}"


class _Stop:
    """Set by signal handlers; the stream loop polls it (handlers must not raise mid-write, or the byte
    count and hash in the log would miss a write that did happen)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = self.signum or signum


class _PipeBroken(Exception):
    pass


class _InjectedCrash(Exception):
    pass


class _Output:
    """Owns the output fd, counts and hashes every byte the kernel accepted. Pipes and sockets are switched
    to non-blocking so that a reader that stopped reading cannot keep us from seeing a signal."""

    def __init__(self, fd: int | None, owns_fd: bool, crash_after: int | None) -> None:
        self.fd = fd
        self.owns_fd = owns_fd
        self.crash_after = crash_after
        self.hasher = hashlib.sha256()
        self.written = 0
        self.discarding = fd is None
        self._saved_flags: int | None = None
        mode = os.fstat(fd).st_mode if fd is not None else 0
        if fd is not None and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            self._saved_flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, self._saved_flags | os.O_NONBLOCK)

    def write(self, data: bytes, should_stop: Callable[[], bool]) -> None:
        if self.discarding or self.fd is None:
            return
        view = memoryview(data)
        crash = self.crash_after is not None and self.written + len(view) >= self.crash_after
        if crash and self.crash_after is not None:
            view = view[: self.crash_after - self.written]
        while view and not should_stop():
            try:
                count = os.write(self.fd, view)
            except BlockingIOError:
                poller = select.poll()
                poller.register(self.fd, select.POLLOUT)
                poller.poll(WAKE_INTERVAL_S * 1000)
                continue
            except (BrokenPipeError, ConnectionResetError) as error:
                raise _PipeBroken from error
            self.hasher.update(view[:count])
            self.written += count
            view = view[count:]
        if crash and not view:
            raise _InjectedCrash

    def close(self) -> None:
        if self.fd is None:
            return
        if self._saved_flags is not None:
            try:
                # The open file description is shared with whoever gave us the pipe; leave it as we found it.
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self._saved_flags)
            except OSError:
                pass  # the other end is gone; nobody is left to care about the flags
        if self.owns_fd:
            os.close(self.fd)
        self.fd = None


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    reason: Reason
    bytes: int = 0
    sha256: str = hashlib.sha256(b"").hexdigest()
    frames: int = 0
    pipe_broken: bool = False
    signal: int | None = None


def _sleep_until(deadline: float, should_stop: Callable[[], bool]) -> None:
    while not should_stop():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(remaining, WAKE_INTERVAL_S))


def _stream(
    options: SimOptions, bitrate: int, plan: FramePlan, output: _Output, stop: _Stop, ignore_pipe: bool
) -> tuple[Reason, int, bool]:
    """Write frames on a monotonic-clock schedule (frame n is due at start + n/fps, so sleeps never
    accumulate drift) until the timeout, the frame count, a signal or a broken pipe."""
    start = time.monotonic()
    # rpicam's --frames overrides the timeout; -t 0 runs until a signal.
    end = start + options.timeout_ms / 1000 if options.timeout_ms and not options.frames else float("inf")
    sent = 0  # bytes produced, written or not: the filler budget follows the schedule, not the reader
    pipe_broken = False
    index = 0

    def should_stop() -> bool:
        return stop.signum is not None or time.monotonic() >= end

    while True:
        if stop.signum is not None:
            return Reason.SIGNAL, index, pipe_broken
        if options.frames and index >= options.frames:
            return Reason.TIMEOUT, index, pipe_broken
        due = start + index / options.framerate
        if due >= end:
            _sleep_until(end, should_stop)
            return (Reason.SIGNAL if stop.signum is not None else Reason.TIMEOUT), index, pipe_broken
        _sleep_until(due, should_stop)
        if stop.signum is not None:
            continue
        frame = plan.frame(index)
        pad = filler_size(index, bitrate, options.framerate, sent, len(frame))
        data = frame + build_filler_nal(pad) if pad else frame
        try:
            output.write(data, should_stop)
        except _PipeBroken:
            if not ignore_pipe:
                return Reason.EPIPE, index, True
            if not pipe_broken:
                _say(f"mmal: Failed to write buffer data (0 from {len(data)})- aborting")
            pipe_broken = True
            output.discarding = True  # the old bug: the app never noticed and kept the camera busy
        sent += len(data)
        index += 1


def _camera_failure(dialect: Dialect, legacy_lines: Sequence[str], rpicam_message: str) -> RunOutcome:
    if dialect is Dialect.LEGACY:
        _say(*legacy_lines)
        return RunOutcome(EXIT_LEGACY_SOFTWARE, Reason.ERROR)
    _say(f"ERROR: *** {rpicam_message} ***")
    return RunOutcome(EXIT_RPICAM_ERROR, Reason.ERROR)


def _print_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _handle_info_request(options: SimOptions, dialect: Dialect, fault: Fault) -> bool:
    """--help / --version / --list-cameras: print like the real tool; True if one was handled."""
    if options.show_help:
        _print_stdout(build_legacy_help(options.tool) if dialect is Dialect.LEGACY else build_rpicam_help())
        return True
    if options.show_version:
        _print_stdout("rpicam-apps build: v1.5.0 piorch-simulator\nlibcamera build: v0.3.0+piorch-simulator\n")
        return True
    if options.list_cameras:
        if fault.no_camera:
            _print_stdout("No cameras available!\n")
        else:
            _print_stdout(
                "Available cameras\n-----------------\n"
                f"0 : imx219 [3280x2464 10-bit RGGB] ({SENSOR_ID})\n"
                "    Modes: 'SRGGB10_CSI2P' : 640x480 [206.65 fps - (1000, 752)/1280x960 crop]\n\n"
            )
        return True
    return False


def _open_output(options: SimOptions, dialect: Dialect, fault: Fault) -> _Output | RunOutcome:
    target = options.output
    if target is None:
        return _Output(None, False, fault.crash_after)
    if target == "-":
        return _Output(1, False, fault.crash_after)
    if "://" in target:
        _say(f"simulator: network output ({target}) is not supported yet; use -o - and a pipe")
        return RunOutcome(EXIT_FAILED, Reason.ERROR)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if dialect is Dialect.RPICAM:
            _say(f"ERROR: *** failed to open output file {target} ***")
            return RunOutcome(EXIT_RPICAM_ERROR, Reason.ERROR)
        # RaspiVid.c carries on without a file, discarding the encoded data.
        _say(f"mmal: main: Error opening output file: {target} ({error.strerror})", "No output file will be generated")
        return _Output(None, False, fault.crash_after)
    return _Output(fd, True, fault.crash_after)


_Options = TypeVar("_Options")


def parse_or_refuse(dialect: Dialect, parse: Callable[[], _Options], env: dict[str, str]
                    ) -> tuple[_Options, Fault] | RunOutcome:
    """Options and the injected fault, or the outcome of refusing them as the real tool would (shared by
    the video and the still simulators)."""
    try:
        options = parse()
    except SimUsageError as error:
        if dialect is Dialect.LEGACY:
            _say(error.message)
            return RunOutcome(EXIT_LEGACY_USAGE, Reason.USAGE)
        _say(f"ERROR: *** {error.message} ***")
        return RunOutcome(EXIT_RPICAM_ERROR, Reason.USAGE)
    try:
        fault = parse_fault(env.get(ENV_FAULT))
    except ValueError as error:
        _say(f"simulator: {error}")
        return RunOutcome(EXIT_FAILED, Reason.ERROR)
    return options, fault


def _run_camera(tool: str, args: Sequence[str], env: dict[str, str], stop: _Stop) -> RunOutcome:
    """Everything after the tool name is known: parse, fail like the tool, or stream until done."""
    dialect = dialect_for(tool)
    if dialect is Dialect.LEGACY and not args:
        _print_stdout(build_legacy_help(tool))  # raspivid with no arguments: help, then EX_USAGE
        return RunOutcome(EXIT_LEGACY_USAGE, Reason.USAGE)
    parsed = parse_or_refuse(dialect, lambda: parse_args(tool, args), env)
    if isinstance(parsed, RunOutcome):
        return parsed
    options, fault = parsed
    if _handle_info_request(options, dialect, fault):
        return RunOutcome(EXIT_OK, Reason.USAGE)
    if options.codec == "yuv420":
        _say("simulator: yuv420 output not supported yet (only H.264 and MJPEG are simulated)")
        return RunOutcome(EXIT_FAILED, Reason.ERROR)
    if fault.no_camera:
        return _camera_failure(dialect, LEGACY_NO_CAMERA_LINES, "no cameras available")

    lock_fd = os.open(lock_path_from_env(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if dialect is Dialect.RPICAM:
                _say(
                    _libcamera_line(
                        "ERROR", "Pipeline pipeline_handler.cpp:199 Pipeline handler in use by another process"
                    )
                )
            return _camera_failure(dialect, LEGACY_BUSY_LINES, f"failed to acquire camera {SENSOR_ID}")
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, f"{os.getpid()}\n".encode())  # who holds the camera, for a human debugging a test
        return _record(options, dialect, fault, env, stop)
    finally:
        os.close(lock_fd)  # releases the camera


def _record(options: SimOptions, dialect: Dialect, fault: Fault, env: dict[str, str], stop: _Stop) -> RunOutcome:
    bitrate = options.bitrate
    if dialect is Dialect.LEGACY:
        bitrate, warning = effective_legacy_bitrate(options)
        if warning:
            _say(warning)
    else:
        size = f"{options.width}x{options.height}"
        _say(
            _libcamera_line("INFO", "Camera camera_manager.cpp:325 libcamera v0.3.0+piorch-simulator"),
            _libcamera_line("INFO", f"Camera camera.cpp:1183 configuring streams: (0) {size}-YUV420"),
        )
    if options.codec == "mjpeg":
        plan = build_mjpeg_plan(MJPEG_CLIP_PATH.read_bytes())
        bitrate = 0  # nothing to pad JPEG with; the legacy "too high" warning above is still the real one
    else:
        plan = build_frame_plan(CLIP_PATH.read_bytes(), options.inline_headers)
    opened = _open_output(options, dialect, fault)
    if isinstance(opened, RunOutcome):
        return opened
    output = opened
    try:
        reason, frames, pipe_broken = _stream(
            options, bitrate, plan, output, stop, ignore_pipe=env.get(ENV_IGNORE_HUP_PIPE) == "1"
        )
    except _InjectedCrash:
        _say(f"simulator: injected fault {ENV_FAULT}={env.get(ENV_FAULT)}: crashing")
        return RunOutcome(EXIT_FAILED, Reason.ERROR, output.written, output.hasher.hexdigest())
    finally:
        output.close()
    code = EXIT_OK
    if reason is Reason.SIGNAL:
        assert stop.signum is not None
        if dialect is Dialect.LEGACY:
            _say("mmal: Aborting program")
        code = 128 + stop.signum
    elif reason is Reason.EPIPE:
        code = EXIT_FAILED
        if dialect is Dialect.LEGACY:
            _say("mmal: Failed to write buffer data - aborting")
        else:
            _say("ERROR: *** failed to write output bytes ***")
    elif dialect is Dialect.RPICAM and options.verbose:
        _say(f"Halting: reached timeout of {options.timeout_ms} milliseconds.")
    return RunOutcome(code, reason, output.written, output.hasher.hexdigest(), frames, pipe_broken, stop.signum)


@dataclass(frozen=True)
class RunRecord:
    """The JSON line appended to $PIORCH_SIM_LOG/runs.jsonl at the end of every run."""

    tool: str
    argv: list[str]
    pid: int
    pgid: int
    sid: int
    bytes: int
    sha256: str
    exit_code: int
    reason: str
    frames: int
    pipe_broken: bool
    signal: int | None
    started: float
    ended: float


def _append_record(log_dir: Path, record: RunRecord) -> None:
    line = (json.dumps(asdict(record), sort_keys=True) + "\n").encode()
    # O_APPEND + one write: concurrent runs append whole lines, never interleaved pieces.
    fd = os.open(log_dir / RUNS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    """argv[0] is the tool name (raspivid, rpicam-vid, libcamera-vid), the rest its arguments."""
    if not argv:
        _say("usage: python -m orchestrator.sim.camera TOOL [ARGS...]")
        return 2
    tool = os.path.basename(argv[0])
    try:
        dialect_for(tool)
    except ValueError as error:
        _say(f"simulator: {error}")
        return 2
    env = dict(os.environ)
    ignore_hup = env.get(ENV_IGNORE_HUP_PIPE) == "1"
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop.handle)
    signal.signal(signal.SIGINT, stop.handle)
    signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hup else stop.handle)

    log_dir = Path(env[ENV_LOG]) if env.get(ENV_LOG) else None
    marker: Path | None = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        marker = log_dir / f"{RUNNING_PREFIX}{os.getpid()}"
        marker.write_text(json.dumps({"tool": tool, "argv": argv, "pid": os.getpid()}) + "\n")
    started = time.time()
    outcome = RunOutcome(EXIT_FAILED, Reason.ERROR)
    try:
        outcome = _run_camera(tool, argv[1:], env, stop)
    finally:
        if log_dir is not None:
            record = RunRecord(
                tool=tool,
                argv=list(argv),
                pid=os.getpid(),
                pgid=os.getpgid(0),
                sid=os.getsid(0),
                bytes=outcome.bytes,
                sha256=outcome.sha256,
                exit_code=outcome.exit_code,
                reason=outcome.reason.value,
                frames=outcome.frames,
                pipe_broken=outcome.pipe_broken,
                signal=outcome.signal,
                started=started,
                ended=time.time(),
            )
            _append_record(log_dir, record)
        if marker is not None:
            marker.unlink(missing_ok=True)
    return outcome.exit_code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
