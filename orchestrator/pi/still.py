"""The still-camera tools (raspistill, libcamera-still, rpicam-still): which one, its command line in its own
option language, and its failures in words a user can act on (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import cast

from orchestrator.errors import RemoteError, UsageError
from orchestrator.pi.camera import CameraProblem, parse_camera_failure
from orchestrator.pi.raw import build_raw_still_argv, plan_raw_still
from orchestrator.pi.scripts import PiProbe
from orchestrator.pi.stack import ToolFacts
from orchestrator.settings import CameraTool, ImageFormat, PictureFormat, RawFormat, StillSettings, StillTool

# The maintained stack first; raspistill only works on a legacy (MMAL) system, where the others are absent.
STILL_TOOL_PREFERENCE = (StillTool.RPICAM_STILL, StillTool.LIBCAMERA_STILL, StillTool.RASPISTILL)
STILL_TOOL_PACKAGE: Mapping[StillTool, str] = {StillTool.RPICAM_STILL: "rpicam-apps",
                                               StillTool.LIBCAMERA_STILL: "libcamera-apps",
                                               StillTool.RASPISTILL: "libraspberrypi-bin"}
# What each tool's encoding option accepts (of the formats piorch offers): raspistill's encoding_xref has
# jpg, bmp, gif, png; rpicam-still's has jpg, png, bmp, no gif. Raw formats: every tool (pi/raw.py), raspistill
# through its sibling raspiyuv.
TOOL_FORMATS: Mapping[StillTool, frozenset[ImageFormat]] = {
    StillTool.RASPISTILL: frozenset(ImageFormat),
    StillTool.LIBCAMERA_STILL: frozenset({ImageFormat.JPG, ImageFormat.PNG, ImageFormat.BMP}),
    StillTool.RPICAM_STILL: frozenset({ImageFormat.JPG, ImageFormat.PNG, ImageFormat.BMP}),
}


# Each tool's own spelling (options/raspistill_options.txt, rpicam_still_options.txt): raspistill strips one
# '-' and its -h is height; rpicam-still and libcamera-still are boost, where -h is help and width, height
# and the flips have long names only.
_SPELLING = {True: ("-e", "-w", "-h", "-vf", "-hf"), False: ("--encoding", "--width", "--height", "--vflip", "--hflip")}


def build_still_argv(still: StillSettings, tool: StillTool) -> list[str]:
    """The camera half of one capture: the picture goes to stdout in the tool's own encoding.

    No preview (a Pi on a cable has no one looking at its screen), `-t` = the settle time in milliseconds
    (a bare number is milliseconds for raspistill and every libcamera-still/rpicam-still release).
    Width and height only when asked: the default is the sensor's full resolution.
    """
    if tool is StillTool.AUTO:
        raise ValueError("resolve the still tool before building its command line")
    if isinstance(still.image_format, RawFormat):
        return build_raw_still_argv(still, tool, plan_raw_still(still.image_format, still, tool))
    if still.image_format not in TOOL_FORMATS[tool]:
        raise ValueError(f"{tool.value} cannot write {still.image_format.value}")
    encoding, width, height, vflip, hflip = _SPELLING[tool.is_legacy]
    argv = [tool.value, "-o", "-", encoding, still.image_format.value, "-t", str(still.settle_ms), "-n"]
    if still.width is not None and still.height is not None:
        argv += [width, str(still.width), height, str(still.height)]
    return argv + [vflip] * still.vflip + [hflip] * still.hflip


def choose_still_tool(probe: PiProbe, wanted: StillTool, image_format: PictureFormat) -> StillTool:
    tool: StillTool
    if wanted is not StillTool.AUTO:
        if wanted not in probe.still_tools:
            raise RemoteError(f"{wanted.value} is not installed on the Pi",
                              f"install {STILL_TOOL_PACKAGE[wanted]} there, or use --camera-tool auto")
        tool = wanted
    else:
        found = [tool for tool in STILL_TOOL_PREFERENCE if tool in probe.still_tools]
        if not found:
            raise RemoteError("no still camera tool (rpicam-still, libcamera-still, raspistill) on the Pi",
                              "install rpicam-apps there (sudo apt install rpicam-apps)")
        tool = found[0]
    if isinstance(image_format, ImageFormat) and image_format not in TOOL_FORMATS[tool]:
        can = ", ".join(sorted(fmt.value for fmt in TOOL_FORMATS[tool]))
        raise UsageError(f"{tool.value} on the Pi cannot write {image_format.value} (it writes {can})",
                         "use --format png for a lossless picture")
    return tool


def check_still_to_stdout(tool: StillTool, facts: ToolFacts | None) -> None:
    """Refuse a libcamera-still too old to write its picture to stdout.

    Before rpicam-apps commit 8824fd4 (2021-11-14, "image: Support writing still images to stdout") the still
    tool wrote `-o -` to a file named '-'. `--list-cameras` came three days later (7030474, 2021-11-17) in the
    options every tool shares, so a `--help` without it is at least that old. Unread help: no refusal.
    """
    if tool.is_legacy or facts is None or not facts.help_read or "list-cameras" in facts.options:
        return
    raise RemoteError(f"{tool.value} on the Pi is older than November 2021 and writes `-o -` to a file named '-' "
                      "instead of to stdout, so piorch cannot receive its pictures",
                      "update it there (sudo apt update && sudo apt full-upgrade)")


def explain_still_failure(tool: StillTool, stderr: str, exit_code: int | None) -> CameraProblem:
    if exit_code == 127 or "command not found" in stderr.lower():
        return CameraProblem(f"{tool.value} is not installed on the Pi",
                             f"install it there: sudo apt install {STILL_TOOL_PACKAGE.get(tool, 'rpicam-apps')}")
    # record's explanations read only `.value` and `.is_legacy`, which a StillTool has too.
    problem = parse_camera_failure(cast(CameraTool, tool), stderr, exit_code)
    # snap has no --kill-stale: its advice is to stop the holder and take the picture again.
    fix = problem.fix.replace(" (`piorch record --kill-stale` stops it for you)", "")
    return replace(problem, fix=fix.replace("record again", "snap again"))
