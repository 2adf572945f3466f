"""A camera simulator that behaves like raspivid / raspividyuv / rpicam-vid / libcamera-vid on a laptop.

Run as `python -m orchestrator.sim.camera TOOL ARGS...` (or through a stand-in shim from stand_in.py). It
plays the Pi the environment describes (profile.py: board, rpicam-apps build and release), speaks that
tool's option language (options.py), holds "the camera" (an flock) while it runs, sets up the encoder that
Pi would (encoders.py) or fails as it would, and writes a real stream on a monotonic-clock schedule, one
frame per frame interval at the requested frame rate, pictures of the requested size (video_plan.py):
- H.264: a loop of the scene (scene.py) encoded once with libx264 at the asked size, rate and GOP, sent
  again and again, padded with filler NAL units up to the requested bitrate: the hardware encoder's stand-in
  (no B-frames) on a Pi 0-4; a Pi 5's libx264 settings, B-frames unless --low-latency. At the shipped
  clips' own 640x360, 25 fps: those clips (clip.h264, clip_bframes.h264). Without inline headers the
  hardware encoder's SPS/PPS repeats are stripped after the first frame, as on a real Pi (libx264 always
  repeats them).
- MJPEG: JPEGs of the scene at the asked size and --quality (the shipped images at 640x360), never padded.
- Raw: rpicam-vid --codec yuv420 writes I420 with rows padded to the Pi's ISP stride; raspividyuv the MMAL
  port's padded buffers, I420, RGB24 (-rgb) or Y only (-y) (raw.py).

Environment (all optional; the shared ones are described in runtime.py and profile.py):
  PIORCH_SIM_BOARD / PIORCH_SIM_BUILD / PIORCH_SIM_VERSION   the Pi played (profile.py)
  PIORCH_SIM_LOG=DIR             append one JSON line per run to DIR/runs.jsonl; DIR/running-<pid> exists
                                 while the process runs
  PIORCH_SIM_LOCK=PATH           the camera lock file (default /tmp/piorch-sim-camera-<uid>.lock)
  PIORCH_SIM_CACHE=DIR           where encoded H.264 loops are kept between runs (synth.py; default
                                 /tmp/piorch-sim-cache-<uid>, used only if private to this user)
  PIORCH_SIM_FAULT=no-camera     fail like a Pi without a camera
  PIORCH_SIM_FAULT=crash-after=N write exactly N bytes, then fail with exit code 1
  PIORCH_SIM_FAULT=ignore-term   ignore SIGTERM, as a wedged camera process does: only SIGKILL ends it
  PIORCH_SIM_FAULT=drop-frames=30:2/90   drop frames (2 before frame 30, 1 before 90): see pts.py, which
                                 also writes -pts / --save-pts files
                                 (faults combine with commas: ignore-term,crash-after=N)
  PIORCH_SIM_IGNORE_HUP_PIPE=1   old raspivid bug (userland#268): ignore SIGHUP and keep running, output
                                 discarded, after the output pipe breaks; only a signal or the timeout ends it

Exit codes: see runtime.py.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from orchestrator.sim.encoders import (
    Encoding,
    Refusal,
    choose_raspivid_encoding,
    choose_raspividyuv_encoding,
    choose_rpicam_encoding,
)
from orchestrator.sim.frames import Frames
from orchestrator.sim.frames import build_mjpeg_plan as build_mjpeg_plan
from orchestrator.sim.h264 import CLIP_PATH as CLIP_PATH
from orchestrator.sim.h264 import FILLER_MIN_SIZE as FILLER_MIN_SIZE
from orchestrator.sim.h264 import build_filler_nal, filler_size
from orchestrator.sim.h264 import build_frame_plan as build_frame_plan
from orchestrator.sim.h264 import nal_type as nal_type
from orchestrator.sim.h264 import split_access_units as split_access_units
from orchestrator.sim.h264 import split_nal_units as split_nal_units
from orchestrator.sim.options import (
    Dialect,
    SimOptions,
    build_raspivid_help,
    build_rpicam_help,
    dialect_for,
    legacy_run_ms,
    parse_args,
)
from orchestrator.sim.profile import SENSOR_IDS, Board, PiProfile, build_version_text
from orchestrator.sim.pts import start_timestamps
from orchestrator.sim.runtime import (
    ENV_FAULT,
    ENV_IGNORE_HUP_PIPE,
    EXIT_FAILED,
    EXIT_LEGACY_USAGE,
    EXIT_OK,
    EXIT_RPICAM_ERROR,
    InjectedCrash,
    Output,
    PipeBroken,
    Reason,
    RunOutcome,
    Stop,
    libcamera_line,
    libcamera_started,
    parse_or_refuse,
    print_stdout,
    run_tool,
    say,
    sleep_until,
    with_camera,
)
from orchestrator.sim.runtime import RUNNING_PREFIX as RUNNING_PREFIX
from orchestrator.sim.runtime import RUNS_FILE as RUNS_FILE
from orchestrator.sim.runtime import Fault as Fault
from orchestrator.sim.runtime import camera_is_free as camera_is_free
from orchestrator.sim.runtime import parse_fault as parse_fault
from orchestrator.sim.scene import EncoderMissing
from orchestrator.sim.video_plan import build_video_frames, check_size

SENSOR_ID = SENSOR_IDS[Board.PI4]  # the camera of the default Pi (a Pi 4 with an imx219)


def _stream(
    options: SimOptions, run_ms: int, bitrate: int, frames: Frames, output: Output, stop: Stop, ignore_pipe: bool
) -> tuple[Reason, int, bool]:
    """Write frames on a monotonic-clock schedule (frame n is due at start + n/fps, so sleeps never
    accumulate drift) until the timeout, the frame count, a signal or a broken pipe."""
    start = time.monotonic()
    # rpicam's --frames overrides the timeout; a timeout of 0 runs until a signal, one below 0 stops at once.
    end = float("inf") if options.frames or run_ms == 0 else start + max(run_ms, 0) / 1000
    sent = 0  # bytes produced, written or not: the filler budget follows the schedule, not the reader
    pipe_broken = False
    index = 0
    stamps = start_timestamps(options)  # -pts / --save-pts FILE, and frames dropped on request (pts.py)

    def should_stop() -> bool:
        return stop.is_set() or time.monotonic() >= end

    while True:
        if stop.is_set():
            return Reason.SIGNAL, index, pipe_broken
        if options.frames and index >= options.frames:
            return Reason.TIMEOUT, index, pipe_broken
        due = start + stamps.slot(index) / options.framerate
        if due >= end:
            sleep_until(end, should_stop)
            return (Reason.SIGNAL if stop.is_set() else Reason.TIMEOUT), index, pipe_broken
        sleep_until(due, should_stop)
        if stop.is_set():
            continue
        frame = frames.frame(index)
        pad = filler_size(index, bitrate, options.framerate, sent, len(frame))
        data = frame + build_filler_nal(pad) if pad else frame
        try:
            output.write(data, should_stop)
        except PipeBroken:
            if not ignore_pipe:
                return Reason.EPIPE, index, True
            if not pipe_broken:
                say(f"mmal: Failed to write buffer data (0 from {len(data)})- aborting")
            pipe_broken = True
            output.discarding = True  # the old bug: the app never noticed and kept the camera busy
        sent += len(data)
        stamps.written(index)
        index += 1


def _handle_info_request(options: SimOptions, dialect: Dialect, pi: PiProfile, fault: Fault) -> bool:
    """--help / --version / --list-cameras: print like the real tool; True if one was handled."""
    if options.show_help:
        print_stdout(build_raspivid_help(options.tool) if dialect is Dialect.LEGACY else build_rpicam_help(pi))
        return True
    if options.show_version:
        print_stdout(build_version_text(pi))
        return True
    if options.list_cameras:
        if fault.no_camera:
            print_stdout("No cameras available!\n")
        else:
            print_stdout(
                "Available cameras\n-----------------\n"
                f"0 : imx219 [3280x2464 10-bit RGGB] ({pi.sensor_id})\n"
                "    Modes: 'SRGGB10_CSI2P' : 640x480 [206.65 fps - (1000, 752)/1280x960 crop]\n\n"
            )
        return True
    return False


def _open_output(options: SimOptions, dialect: Dialect, fault: Fault) -> Output | RunOutcome:
    target = options.output
    if target is None:
        return Output(None, False, fault.crash_after)
    if target == "-":
        return Output(1, False, fault.crash_after)
    if "://" in target:
        say(f"simulator: network output ({target}) is not supported yet; use -o - and a pipe")
        return RunOutcome(EXIT_FAILED, Reason.ERROR)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if dialect is Dialect.RPICAM:
            say(f"ERROR: *** failed to open output file {target} ***")
            return RunOutcome(EXIT_RPICAM_ERROR, Reason.ERROR)
        # RaspiVid.c carries on without a file, discarding the encoded data.
        say(f"mmal: main: Error opening output file: {target} ({error.strerror})", "No output file will be generated")
        return Output(None, False, fault.crash_after)
    return Output(fd, True, fault.crash_after)


def _run_camera(tool: str, args: Sequence[str], env: dict[str, str], stop: Stop, pi: PiProfile) -> RunOutcome:
    """Everything after the tool name is known: parse, fail like the tool, or stream until done."""
    dialect = dialect_for(tool)
    if dialect is Dialect.LEGACY and not args:
        print_stdout(build_raspivid_help(tool))  # raspivid with no arguments: help, then EX_USAGE
        return RunOutcome(EXIT_LEGACY_USAGE, Reason.USAGE)
    parsed = parse_or_refuse(dialect, lambda: parse_args(tool, args, pi), env)
    if isinstance(parsed, RunOutcome):
        return parsed
    options, fault = parsed
    if _handle_info_request(options, dialect, pi, fault):
        return RunOutcome(EXIT_OK, Reason.USAGE)
    say(*options.notices)
    return with_camera(dialect, pi, fault, lambda: _record(options, dialect, fault, env, stop, pi))


def _record(
    options: SimOptions, dialect: Dialect, fault: Fault, env: dict[str, str], stop: Stop, pi: PiProfile
) -> RunOutcome:
    choice: Encoding | Refusal
    if dialect is Dialect.LEGACY:
        choice = choose_raspividyuv_encoding(options) if options.tool == "raspividyuv" else \
            choose_raspivid_encoding(options)
        run_ms = legacy_run_ms(options.timeout_ms)
    else:
        streams = f"configuring streams: (0) {options.width}x{options.height}-YUV420"
        say(libcamera_started(), libcamera_line("INFO", f"Camera camera.cpp:1183 {streams}"))
        choice = choose_rpicam_encoding(options, pi)
        run_ms = options.timeout_ms
    if isinstance(choice, Encoding):
        choice = check_size(choice, options) or choice
    if isinstance(choice, Refusal):
        say(*choice.lines)
        return RunOutcome(choice.exit_code, Reason.ERROR)
    say(*choice.lines)
    try:
        frames = build_video_frames(choice, options, pi, env)  # encoding a loop is the camera starting up
    except EncoderMissing as error:
        say(f"simulator: {error}")
        return RunOutcome(EXIT_FAILED, Reason.ERROR)
    opened = _open_output(options, dialect, fault)
    if isinstance(opened, RunOutcome):
        return opened
    output = opened
    try:
        reason, count, pipe_broken = _stream(options, run_ms, choice.bitrate, frames, output, stop,
                                             ignore_pipe=env.get(ENV_IGNORE_HUP_PIPE) == "1")
    except InjectedCrash:
        say(f"simulator: injected fault {ENV_FAULT}={env.get(ENV_FAULT)}: crashing")
        return RunOutcome(EXIT_FAILED, Reason.ERROR, output.written, output.hasher.hexdigest())
    finally:
        output.close()
    return _finish(options, dialect, stop, reason, count, pipe_broken, output)


def _finish(options: SimOptions, dialect: Dialect, stop: Stop, reason: Reason, frames: int, pipe_broken: bool,
            output: Output) -> RunOutcome:
    """The last lines the tool prints, and its exit status."""
    code = EXIT_OK
    if reason is Reason.SIGNAL:
        assert stop.signum is not None
        if dialect is Dialect.LEGACY:
            say("mmal: Aborting program")
        code = 128 + stop.signum
    elif reason is Reason.EPIPE:
        code = EXIT_FAILED
        say("mmal: Failed to write buffer data - aborting" if dialect is Dialect.LEGACY
            else "ERROR: *** failed to write output bytes ***")
    elif dialect is Dialect.RPICAM and options.verbose and not options.frames:
        say(f"Halting: reached timeout of {options.timeout_ms} milliseconds.")
    return RunOutcome(code, reason, output.written, output.hasher.hexdigest(), frames, pipe_broken, stop.signum)


def main(argv: list[str]) -> int:
    """argv[0] is the tool name (raspivid, rpicam-vid, libcamera-vid), the rest its arguments."""
    return run_tool(argv, "orchestrator.sim.camera", dialect_for, _run_camera, hup_bug=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

