"""Asking each camera tool for its own frame timestamps (pure): which tool build can give them, and how.

raspivid `-pts FILE` (userland RaspiVid.c, since 2015; raspividyuv too) and libcamera-vid / rpicam-vid
`--save-pts FILE` (rpicam-apps output/output.cpp, every release) write "# timecode format v2", then one line
a frame: milliseconds since the first frame, three decimals. Only with `-fl` / `--flush` is each line flushed
as it is written; without, stdio holds them back in 4 KiB lumps. FILE is a named pipe the pipeline script
makes (pi/scripts.py), read on the Pi and sent to the laptop over the SSH channel: the video bytes never
carry them.

A Pi 5 encodes H.264 in software through libav (pi/stack.py), and there `--save-pts` depends on the release
(encoder/libav_encoder.cpp): before 1.7.0 it is ignored (the file gets its header and nothing else), 1.7.x
refuses it outright ("libav: Incompatible options selected."), and from 1.8.0 (commit da7d16e) it works for
an elementary stream only: `--libav-format` empty or h264 AND an output whose name ends in `264`. So on that
path the camera writes into a named pipe called `stream.h264`, which the script copies into nc with `cat`.
MJPEG and raw video on a Pi 5 do not go through libav, and every release takes `--save-pts` for them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.pi.stack import CameraStack, H264Encoder
from orchestrator.settings import CameraSettings, CameraTool

# Names inside the pipeline's private temporary folder (the script runs the camera there, so the names are
# relative and the command line stays a pure function of the settings).
PTS_PIPE = "pts"
# The pipeline script's one line on stderr when it cannot make the pipes' folder (then the folder it tried).
PIPES_FAILED = "piorch: could not make named pipes for the camera's timestamps in"
VIDEO_PIPE = "stream.h264"
# rpicam-apps 1.8.0: libav's elementary H.264 output goes through the Output class, --save-pts included.
LIBAV_PTS_SINCE = (1, 8, 0)
# The legacy raw tool has `-pts` but no `-fl`: its timestamps come in 4 KiB lumps and at the end.
_NO_FLUSH_TOOLS = frozenset({"raspividyuv"})


class FrameClock(str, enum.Enum):
    """Which clock a recording's frame times come from (the manifests' `timestamps`)."""

    CAMERA = "camera"  # the camera's own timestamps, one a frame
    FRAME_RATE = "frame-rate"  # frame i at i / fps: the tool could not say


@dataclass(frozen=True)
class TimestampPlan:
    clock: FrameClock
    # The camera writes its stream into the named pipe VIDEO_PIPE, copied into nc by the script (Pi 5 H.264).
    video_pipe: bool = False
    # Why the camera's clock is not used, for a notice and the manifest; "" when it is.
    reason: str = ""

    @property
    def camera_clock(self) -> bool:
        return self.clock is FrameClock.CAMERA


def plan_timestamps(camera: CameraSettings, tool: CameraTool, stack: CameraStack, has_pipes: bool = True,
                    wanted: bool = True) -> TimestampPlan:
    """Whether this tool build on this Pi can send its frame timestamps, and how. `has_pipes`: the Pi has
    mkfifo and mktemp (the probe's word); `wanted`: the user did not turn them off."""
    if tool is CameraTool.AUTO:
        raise ValueError("resolve the camera tool before planning its timestamps")
    if not wanted:
        return TimestampPlan(FrameClock.FRAME_RATE, reason="turned off (--no-timestamps, or timestamps = false)")
    if not has_pipes:
        return TimestampPlan(FrameClock.FRAME_RATE, reason="the Pi has no mkfifo or mktemp (coreutils) for the "
                                                           "named pipe they travel through")
    if tool.is_legacy:
        return TimestampPlan(FrameClock.CAMERA)
    facts = stack.facts
    if facts is not None and facts.help_read and "save-pts" not in facts.options:
        return TimestampPlan(FrameClock.FRAME_RATE, reason=f"{tool.value} lists no --save-pts")
    if camera.codec != "h264" or stack.encoder is not H264Encoder.SOFTWARE:
        # The hardware encoder, MJPEG and raw frames all write through the Output class. An encoder piorch
        # could not tell is taken as this path too: only a Pi 5 differs, and a Pi 5 says what it is.
        return TimestampPlan(FrameClock.CAMERA)
    version = facts.version if facts is not None else None
    if version is None or version < LIBAV_PTS_SINCE:
        said = ".".join(map(str, version)) if version else "a build older than 1.5.2"
        return TimestampPlan(FrameClock.FRAME_RATE, reason=(
            f"{tool.value} {said} encodes H.264 through libav on the {stack.board or 'Pi 5'}, which writes no frame "
            "timestamps before rpicam-apps 1.8.0; update rpicam-apps on the Pi for them"))
    return TimestampPlan(FrameClock.CAMERA, video_pipe=True)


def add_timestamp_options(argv: Sequence[str], plan: TimestampPlan) -> list[str]:
    """The camera's command line asking for its timestamps in PTS_PIPE, flushed frame by frame; on the
    video-pipe path its output goes to VIDEO_PIPE instead of stdout. Unchanged for the frame-rate clock."""
    result = list(argv)
    if not plan.camera_clock:
        return result
    tool = result[0].rsplit("/", 1)[-1] if result else ""
    legacy = tool.startswith("raspivid")
    if plan.video_pipe:
        if "-o" not in result or result[result.index("-o") + 1] != "-":
            raise ValueError("the camera's command line must write to stdout (-o -) before it can use the video pipe")
        result[result.index("-o") + 1] = VIDEO_PIPE
    result += ["-pts", PTS_PIPE] if legacy else ["--save-pts", PTS_PIPE]
    if tool not in _NO_FLUSH_TOOLS:
        # Each timestamp line (and each frame) leaves the camera as soon as it is written: the live readout.
        result.append("-fl" if legacy else "--flush")
    return result
