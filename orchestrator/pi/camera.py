"""Camera command lines in each tool's own option language, and what their error output means.

The legacy tools (raspivid) strip one '-' and match long or short names: `-w`, `-h` (height!), `-fps`,
`-ih`. rpicam-vid and libcamera-vid use boost::program_options: `--width`, `--framerate`, `--inline`, and
`-h` is help. See shared/reference/pi-camera.md and the option tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.settings import CameraSettings, CameraTool

# Preference when the Pi has several: the libcamera tools are the maintained stack; raspivid only works on
# a legacy (MMAL) system, where the others are normally absent.
TOOL_PREFERENCE: tuple[CameraTool, ...] = (CameraTool.RPICAM_VID, CameraTool.LIBCAMERA_VID, CameraTool.RASPIVID)

# Which Debian package brings each tool, for "command not found" messages.
TOOL_PACKAGE: Mapping[CameraTool, str] = {
    CameraTool.RPICAM_VID: "rpicam-apps",
    CameraTool.LIBCAMERA_VID: "libcamera-apps",
    CameraTool.RASPIVID: "libraspberrypi-bin",
}


def build_camera_argv(camera: CameraSettings, tool: CameraTool) -> list[str]:
    """The camera half of the pipeline, writing H.264 to stdout.

    Always: no preview (a Pi on a cable has no one looking at its screen, and a preview costs GPU memory)
    and, for H.264, inline headers (SPS/PPS before every I-frame, so a stream joined late or cut still
    decodes). MJPEG needs neither: every frame is a whole JPEG.
    """
    if tool is CameraTool.AUTO:
        raise ValueError("resolve the camera tool before building its command line")
    if tool.is_legacy:
        argv = [
            tool.value, "-o", "-",
            "-t", str(camera.duration_ms),
            "-b", str(camera.bitrate),
            "-w", str(camera.width),
            "-h", str(camera.height),
            "-fps", str(camera.fps),
            "-n",
        ]
        if camera.codec == "mjpeg":
            argv += ["-cd", "MJPEG"]  # exactly this spelling: raspivid compares case-sensitively
        else:
            argv.append("-ih")
        if camera.intra_period and camera.codec == "h264":
            argv += ["-g", str(camera.intra_period)]
        if camera.vflip:
            argv.append("-vf")
        if camera.hflip:
            argv.append("-hf")
        return argv
    argv = [
        tool.value, "-o", "-",
        # A bare number is milliseconds for every libcamera-vid/rpicam-vid release; units came later.
        "-t", str(camera.duration_ms),
        "--codec", camera.codec,
        "-b", str(camera.bitrate),
        "--width", str(camera.width),
        "--height", str(camera.height),
        "--framerate", str(camera.fps),
        "-n",
    ]
    if camera.codec == "h264":
        argv.append("--inline")
    if camera.intra_period and camera.codec == "h264":
        argv += ["--intra", str(camera.intra_period)]
    if camera.vflip:
        argv.append("--vflip")
    if camera.hflip:
        argv.append("--hflip")
    return argv


@dataclass(frozen=True)
class CameraProblem:
    message: str
    fix: str


def parse_camera_failure(tool: CameraTool, stderr: str, exit_code: int | None) -> CameraProblem:
    """Turn a camera tool's stderr into a message and a fix a person can act on."""
    text = stderr.lower()
    if exit_code == 127 or "command not found" in text:
        return CameraProblem(f"{tool.value} is not installed on the Pi",
                             f"install it there: sudo apt install {TOOL_PACKAGE.get(tool, 'rpicam-apps')} "
                             "(`piorch bootstrap` checks the camera stack)")
    if "enospc" in text or "failed to acquire camera" in text or "in use by another process" in text:
        return CameraProblem(
            "camera busy: another program on the Pi holds the camera",
            "stop it on the Pi, then record again (`piorch record --kill-stale` stops it for you)",
        )
    if ("no cameras available" in text or "failed to create camera component" in text
            or "camera is not enabled" in text or "cannot read camera info" in text):
        fix = ("check the ribbon cable and enable the legacy camera in raspi-config"
               if tool.is_legacy else "check the ribbon cable; `rpicam-hello --list-cameras` must list it")
        return CameraProblem("camera not detected on the Pi", fix)
    if "invalid command line option" in text or "unrecognised option" in text or "unrecognized option" in text:
        return CameraProblem(f"{tool.value} refused an option ({_last_line(stderr)})",
                             "try --camera-tool to pick the tool the Pi really has")
    detail = _last_line(stderr) or f"exit status {exit_code}"
    return CameraProblem(f"{tool.value} failed on the Pi ({detail})", "run `piorch doctor` for a full check")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
