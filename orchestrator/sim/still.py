"""A still-camera simulator that behaves like raspistill / rpicam-still / libcamera-still on a laptop.

Run as `python -m orchestrator.sim.still TOOL ARGS...` (or through a stand-in shim from stand_in.py). It
parses the tool's real option language strictly (still_options.py), holds "the camera" (the same flock
as the video simulator) for the settle time (`-t`, default 5 s), then writes one real picture in the
requested encoding: a sample shipped in stills/ (made once by stills/make_stills.sh) carrying a note that
differs on every run (JPEG COM segment, PNG tEXt chunk, GIF comment extension, BMP: the first pixels), so
every capture has its own bytes and hash, as a real camera's pictures do.

Environment and exit codes are the video simulator's (see camera.py): PIORCH_SIM_LOG (runs.jsonl and
running-<pid>), PIORCH_SIM_LOCK, PIORCH_SIM_FAULT=no-camera or crash-after=N. Not simulated (exit 1 with
a `simulator:` line): timelapse, keypress, signal and demo modes, raw rgb/yuv/ppm/tga encodings.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from orchestrator.sim.camera import (
    ENV_FAULT,
    ENV_LOG,
    EXIT_FAILED,
    EXIT_LEGACY_USAGE,
    EXIT_OK,
    EXIT_RPICAM_ERROR,
    LEGACY_BUSY_LINES,
    LEGACY_NO_CAMERA_LINES,
    RUNNING_PREFIX,
    SENSOR_ID,
    Fault,
    Reason,
    RunOutcome,
    RunRecord,
    _append_record,
    _camera_failure,
    _InjectedCrash,
    _libcamera_line,
    _Output,
    _PipeBroken,
    _say,
    _sleep_until,
    _Stop,
    lock_path_from_env,
    parse_or_refuse,
)
from orchestrator.sim.options import Dialect
from orchestrator.sim.still_options import (
    RASPISTILL_OPTIONS,
    RPICAM_STILL_OPTIONS,
    StillOptions,
    dialect_for_still,
    parse_still_args,
)

SAMPLES = Path(__file__).with_name("stills")
# Encodings the simulator can write, by the name each tool's encoding option gives them.
SAMPLE_FORMATS = ("jpg", "png", "bmp", "gif")


# ------------------------------------------------------------------------------------------- pictures


def build_marked_image(encoding: str, sample: bytes, note: bytes) -> bytes:
    """`sample` with `note` written where the format keeps remarks, still a valid file of the format."""
    if encoding == "jpg":  # a COM segment right after SOI; its length field counts itself, at most 65535
        note = note[:65533]
        return sample[:2] + b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note + sample[2:]
    if encoding == "png":  # a tEXt chunk right after IHDR (8-byte signature + 25-byte IHDR chunk)
        data = b"Comment\x00" + note
        chunk = len(data).to_bytes(4, "big") + b"tEXt" + data + zlib.crc32(b"tEXt" + data).to_bytes(4, "big")
        return sample[:33] + chunk + sample[33:]
    if encoding == "gif":  # a comment extension after the header, screen descriptor and global colour table
        packed = sample[10]
        at = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
        blocks = b"".join(bytes([len(part)]) + part for part in (note[i : i + 255] for i in range(0, len(note), 255)))
        return sample[:at] + b"\x21\xfe" + blocks + b"\x00" + sample[at:]
    if encoding == "bmp":  # BMP keeps no remarks: the first four pixels carry the note's hash instead
        at = int.from_bytes(sample[10:14], "little")
        return sample[:at] + hashlib.sha256(note).digest()[:12] + sample[at + 12 :]
    raise ValueError(f"no sample picture for encoding {encoding!r}")


def _help_text(options: StillOptions, dialect: Dialect) -> str:
    if dialect is Dialect.LEGACY:
        lines = ["Runs camera for specific time, and take JPG capture at end if requested", "",
                 f"usage: {options.tool} [options]", ""]
        lines += [f"-{option.short}, --{option.long}" for option in RASPISTILL_OPTIONS]
    else:
        lines = ["Valid options are:"] + [
            f"  -{o.short} [ --{o.long} ]" if o.short else f"  --{o.long}" for o in RPICAM_STILL_OPTIONS]
    return "\n".join([*lines, "(piorch still simulator: sends a sample picture instead of a camera's)", ""])


def _unsimulated(options: StillOptions) -> str | None:
    for mode in ("timelapse", "keypress", "signal", "demo"):
        if getattr(options, mode):
            return f"{mode} mode is not simulated (piorch takes one picture per run)"
    if options.encoding not in SAMPLE_FORMATS:
        return f"{options.encoding} output is not simulated (only {', '.join(SAMPLE_FORMATS)})"
    if options.output is not None and options.output != "-" and "://" in options.output:
        return f"network output ({options.output}) is not simulated; use -o - and a pipe"
    return None


def _run_still(tool: str, args: Sequence[str], env: dict[str, str], stop: _Stop) -> RunOutcome:
    dialect = dialect_for_still(tool)
    if dialect is Dialect.LEGACY and not args:
        sys.stdout.write(_help_text(StillOptions(tool), dialect))  # raspistill with no arguments: help, EX_USAGE
        return RunOutcome(EXIT_LEGACY_USAGE, Reason.USAGE)
    parsed = parse_or_refuse(dialect, lambda: parse_still_args(tool, args), env)
    if isinstance(parsed, RunOutcome):
        return parsed
    options, fault = parsed
    if options.show_help or options.show_version or options.list_cameras:
        sys.stdout.write(_help_text(options, dialect) if options.show_help else
                         "rpicam-apps build: v1.5.0 piorch-simulator\n" if options.show_version else
                         f"Available cameras\n-----------------\n0 : imx219 [3280x2464 10-bit RGGB] ({SENSOR_ID})\n")
        sys.stdout.flush()
        return RunOutcome(EXIT_OK, Reason.USAGE)
    if (unsupported := _unsimulated(options)) is not None:
        _say(f"simulator: {unsupported}")
        return RunOutcome(EXIT_FAILED, Reason.ERROR)
    if fault.no_camera:
        return _camera_failure(dialect, LEGACY_NO_CAMERA_LINES, "no cameras available")
    lock_fd = os.open(lock_path_from_env(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if dialect is Dialect.RPICAM:
                _say(_libcamera_line("ERROR", "Pipeline pipeline_handler.cpp:199 "
                                              "Pipeline handler in use by another process"))
            return _camera_failure(dialect, LEGACY_BUSY_LINES, f"failed to acquire camera {SENSOR_ID}")
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, f"{os.getpid()}\n".encode())
        return _capture(options, dialect, fault, stop)
    finally:
        os.close(lock_fd)  # releases the camera


def _capture(options: StillOptions, dialect: Dialect, fault: Fault, stop: _Stop) -> RunOutcome:
    """Run the settle time holding the camera, then write the picture; a signal first means no picture."""
    if dialect is Dialect.RPICAM:
        _say(_libcamera_line("INFO", "Camera camera_manager.cpp:325 libcamera v0.3.0+piorch-simulator"))
    end = time.monotonic() + options.timeout_ms / 1000 if options.timeout_ms else float("inf")
    _sleep_until(end, lambda: stop.signum is not None)
    if stop.signum is not None:
        return RunOutcome(128 + stop.signum, Reason.SIGNAL, signal=stop.signum)
    note = f"piorch still simulator: {options.tool} pid {os.getpid()} at {time.time_ns()}".encode()
    picture = build_marked_image(options.encoding, (SAMPLES / f"sample.{options.encoding}").read_bytes(), note)
    if options.output is None:
        return RunOutcome(EXIT_OK, Reason.TIMEOUT, frames=1)  # the real tools take it and save nothing
    if options.output == "-":
        output = _Output(1, False, fault.crash_after)
    else:
        try:
            fd = os.open(options.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError:
            _say(f"ERROR: *** failed to open file {options.output} ***" if dialect is Dialect.RPICAM
                 else f"mmal: main: Error opening output file: {options.output}")
            return RunOutcome(EXIT_RPICAM_ERROR if dialect is Dialect.RPICAM else EXIT_FAILED, Reason.ERROR)
        output = _Output(fd, True, fault.crash_after)
    try:
        output.write(picture, lambda: stop.signum is not None)
    except _PipeBroken:
        _say("mmal: Unable to write buffer to file - aborting" if dialect is Dialect.LEGACY
             else f"ERROR: *** failed to write {options.encoding} file ***")
        return RunOutcome(EXIT_FAILED, Reason.EPIPE, output.written, output.hasher.hexdigest(), pipe_broken=True)
    except _InjectedCrash:
        _say(f"simulator: injected fault {ENV_FAULT}: crashing")
        return RunOutcome(EXIT_FAILED, Reason.ERROR, output.written, output.hasher.hexdigest())
    finally:
        output.close()
    if stop.signum is not None:
        return RunOutcome(128 + stop.signum, Reason.SIGNAL, output.written, output.hasher.hexdigest(),
                          signal=stop.signum)
    if dialect is Dialect.RPICAM:
        _say("Still capture image received")
    return RunOutcome(EXIT_OK, Reason.TIMEOUT, output.written, output.hasher.hexdigest(), frames=1)


def main(argv: list[str]) -> int:
    """argv[0] is the tool name (raspistill, rpicam-still, libcamera-still), the rest its arguments."""
    if not argv:
        _say("usage: python -m orchestrator.sim.still TOOL [ARGS...]")
        return 2
    tool = os.path.basename(argv[0])
    try:
        dialect_for_still(tool)
    except ValueError as error:
        _say(f"simulator: {error}")
        return 2
    env = dict(os.environ)
    stop = _Stop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop.handle)
    log_dir = Path(env[ENV_LOG]) if env.get(ENV_LOG) else None
    marker: Path | None = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        marker = log_dir / f"{RUNNING_PREFIX}{os.getpid()}"
        marker.write_text(json.dumps({"tool": tool, "argv": argv, "pid": os.getpid()}) + "\n")
    started = time.time()
    outcome = RunOutcome(EXIT_FAILED, Reason.ERROR)
    try:
        outcome = _run_still(tool, argv[1:], env, stop)
    finally:
        if log_dir is not None:
            _append_record(log_dir, RunRecord(
                tool=tool, argv=list(argv), pid=os.getpid(), pgid=os.getpgid(0), sid=os.getsid(0),
                bytes=outcome.bytes, sha256=outcome.sha256, exit_code=outcome.exit_code,
                reason=outcome.reason.value, frames=outcome.frames, pipe_broken=outcome.pipe_broken,
                signal=outcome.signal, started=started, ended=time.time(),
            ))
        if marker is not None:
            marker.unlink(missing_ok=True)
    return outcome.exit_code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
