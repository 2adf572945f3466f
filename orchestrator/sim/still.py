"""A still-camera simulator that behaves like raspistill / raspiyuv / rpicam-still / libcamera-still on a laptop.

Run as `python -m orchestrator.sim.still TOOL ARGS...` (or through a stand-in shim from stand_in.py). It
parses the tool's real option language strictly (still_options.py), holds "the camera" (the same flock
as the video simulator) for the settle time (`-t`, default 5 s), then writes one real picture in the
requested encoding at the requested size (the sensor's 3280x2464 without -w/-h): the scene (scene.py),
always its frame 0, written as each tool writes it (still_pictures.py). The same request gives the same
pixels (tests compare captures in two formats), yet every capture has its own bytes and hash, as a real
camera's pictures do: a note naming the run goes where the format keeps remarks (JPEG COM segment, PNG tEXt
chunk, GIF comment extension); BMP and raw pictures keep none, so their first 12 bytes carry its hash.

Environment and exit codes are the video simulator's (see camera.py and runtime.py): the Pi played
(PIORCH_SIM_BOARD/BUILD/VERSION: its option tables and tool names), PIORCH_SIM_LOG (runs.jsonl and
running-<pid>), PIORCH_SIM_LOCK, PIORCH_SIM_FAULT=no-camera, crash-after=N or ignore-term. Not simulated (exit 1 with
a `simulator:` line): timelapse, keypress, signal and demo modes, raspistill's ppm and tga encodings.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from orchestrator.sim.boost_cli import build_boost_help, option_table
from orchestrator.sim.options import Dialect
from orchestrator.sim.profile import PiProfile, build_version_text
from orchestrator.sim.raspicli import build_legacy_help
from orchestrator.sim.runtime import (
    ENV_FAULT,
    EXIT_FAILED,
    EXIT_LEGACY_USAGE,
    EXIT_OK,
    EXIT_RPICAM_ERROR,
    Fault,
    InjectedCrash,
    Output,
    PipeBroken,
    Reason,
    RunOutcome,
    Stop,
    libcamera_started,
    parse_or_refuse,
    print_stdout,
    run_tool,
    say,
    sleep_until,
    with_camera,
)
from orchestrator.sim.scene import EncoderMissing
from orchestrator.sim.still_options import (
    RASPISTILL_OPTIONS,
    RASPIYUV_OPTIONS,
    StillOptions,
    dialect_for_still,
    parse_still_args,
)
from orchestrator.sim.still_pictures import PictureRefused, build_still, still_size

SAMPLES = Path(__file__).with_name("stills")
# Encodings whose small shipped samples build_marked_image knows how to mark (the tests' reference pictures).
SAMPLE_FORMATS = ("jpg", "png", "bmp", "gif")
# Encodings the simulator writes, by the name each tool's parser gives them (raspiyuv: its raw formats).
SIMULATED = {"raspistill": ("jpg", "png", "bmp", "gif"), "raspiyuv": ("i420", "rgb24", "bgr24", "luma"),
             "rpicam": ("jpg", "png", "bmp", "yuv420", "rgb24", "rgb48")}
# Encodings build_marked_image marks; the raw ones get the note's hash in their first bytes.
_MARKED = ("jpg", "png", "gif", "bmp")
_RAW_MARK_BYTES = 12


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


def _help_text(options: StillOptions, dialect: Dialect, pi: PiProfile) -> str:
    note = "(piorch still simulator: sends a drawn picture instead of a camera's)"
    if options.tool == "raspiyuv":
        return build_legacy_help(options.tool, RASPIYUV_OPTIONS, "Runs camera for specific time, and take "
                                 "uncompressed YUV or RGB capture at end if requested")
    if dialect is Dialect.LEGACY:
        return build_legacy_help(options.tool, RASPISTILL_OPTIONS,
                                 "Runs camera for specific time, and take JPG capture at end if requested")
    return build_boost_help(option_table("still", pi.version, pi.libav), note)


def _unsimulated(options: StillOptions) -> str | None:
    for mode in ("timelapse", "keypress", "signal", "demo"):
        if getattr(options, mode):
            return f"{mode} mode is not simulated (piorch takes one picture per run)"
    simulated = SIMULATED.get(options.tool, SIMULATED["rpicam"])
    if options.encoding not in simulated:
        return f"{options.encoding} output is not simulated (only {', '.join(simulated)})"
    if options.output is not None and options.output != "-" and "://" in options.output:
        return f"network output ({options.output}) is not simulated; use -o - and a pipe"
    return None


def _run_still(tool: str, args: Sequence[str], env: dict[str, str], stop: Stop, pi: PiProfile) -> RunOutcome:
    dialect = dialect_for_still(tool)
    if dialect is Dialect.LEGACY and not args:
        print_stdout(_help_text(StillOptions(tool), dialect, pi))  # raspistill with no arguments: help, EX_USAGE
        return RunOutcome(EXIT_LEGACY_USAGE, Reason.USAGE)
    parsed = parse_or_refuse(dialect, lambda: parse_still_args(tool, args, pi), env)
    if isinstance(parsed, RunOutcome):
        return parsed
    options, fault = parsed
    if options.show_help or options.show_version or options.list_cameras:
        print_stdout(_help_text(options, dialect, pi) if options.show_help else
                     build_version_text(pi) if options.show_version else
                     f"Available cameras\n-----------------\n0 : imx219 [3280x2464 10-bit RGGB] ({pi.sensor_id})\n")
        return RunOutcome(EXIT_OK, Reason.USAGE)
    say(*options.notices)
    if (unsupported := _unsimulated(options)) is not None:
        say(f"simulator: {unsupported}")
        return RunOutcome(EXIT_FAILED, Reason.ERROR)
    return with_camera(dialect, pi, fault, lambda: _capture(options, dialect, fault, stop))


def _capture(options: StillOptions, dialect: Dialect, fault: Fault, stop: Stop) -> RunOutcome:
    """Run the settle time holding the camera, then write the picture; a signal first means no picture."""
    if dialect is Dialect.RPICAM:
        say(libcamera_started())
    end = time.monotonic() + options.timeout_ms / 1000 if options.timeout_ms else float("inf")
    sleep_until(end, lambda: stop.signum is not None)
    if stop.signum is not None:
        return RunOutcome(128 + stop.signum, Reason.SIGNAL, signal=stop.signum)
    if dialect is Dialect.RPICAM:
        say("Still capture image received")  # rpicam_still.cpp logs it before saving
    try:
        picture = _take_picture(options)
    except PictureRefused as error:
        say(f"ERROR: *** {error} ***")
        return RunOutcome(EXIT_RPICAM_ERROR, Reason.ERROR)
    except EncoderMissing as error:
        say(f"simulator: {error}")
        return RunOutcome(EXIT_FAILED, Reason.ERROR)
    if options.output is None:
        return RunOutcome(EXIT_OK, Reason.TIMEOUT, frames=1)  # the real tools take it and save nothing
    if options.output == "-":
        output = Output(1, False, fault.crash_after)
    else:
        try:
            fd = os.open(options.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError:
            say(f"ERROR: *** failed to open file {options.output} ***" if dialect is Dialect.RPICAM
                else f"mmal: main: Error opening output file: {options.output}")
            return RunOutcome(EXIT_RPICAM_ERROR if dialect is Dialect.RPICAM else EXIT_FAILED, Reason.ERROR)
        output = Output(fd, True, fault.crash_after)
    try:
        output.write(picture, lambda: stop.signum is not None)
    except PipeBroken:
        say("mmal: Unable to write buffer to file - aborting" if dialect is Dialect.LEGACY
            else f"ERROR: *** failed to write {options.encoding} file ***")
        return RunOutcome(EXIT_FAILED, Reason.EPIPE, output.written, output.hasher.hexdigest(), pipe_broken=True)
    except InjectedCrash:
        say(f"simulator: injected fault {ENV_FAULT}: crashing")
        return RunOutcome(EXIT_FAILED, Reason.ERROR, output.written, output.hasher.hexdigest())
    finally:
        output.close()
    if stop.signum is not None:
        return RunOutcome(128 + stop.signum, Reason.SIGNAL, output.written, output.hasher.hexdigest(),
                          signal=stop.signum)
    return RunOutcome(EXIT_OK, Reason.TIMEOUT, output.written, output.hasher.hexdigest(), frames=1)


def _take_picture(options: StillOptions) -> bytes:
    """The scene in the asked encoding and size, marked with a note naming this run."""
    width, height = still_size(options.width, options.height)
    picture = build_still(options.tool, options.encoding, width, height, 0, options.quality,
                          (options.hflip, options.vflip))
    note = f"piorch still simulator: {options.tool} pid {os.getpid()} at {time.time_ns()}".encode()
    if options.encoding in _MARKED:
        return build_marked_image(options.encoding, picture, note)
    return hashlib.sha256(note).digest()[:_RAW_MARK_BYTES] + picture[_RAW_MARK_BYTES:]


def main(argv: list[str]) -> int:
    """argv[0] is the tool name (raspistill, raspiyuv, rpicam-still, libcamera-still), the rest its arguments."""
    return run_tool(argv, "orchestrator.sim.still", dialect_for_still, _run_still)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
