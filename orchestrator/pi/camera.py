"""Camera command lines in each tool's own option language, and what their error output means.

The legacy tools (raspivid) strip one '-' and match long or short names: `-w`, `-h` (height!), `-fps`,
`-ih`. rpicam-vid and libcamera-vid use boost::program_options: `--width`, `--framerate`, `--inline`, and
`-h` is help. See shared/reference/pi-camera.md and the option tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.errors import RemoteError, UsageError
from orchestrator.events import RawLayout
from orchestrator.pi.raw import build_raw_video_argv, raw_video_layout
from orchestrator.pi.stack import CameraStack, H264Encoder
from orchestrator.pi.timestamps import PIPES_FAILED
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


# raspivid (userland RaspiVid.c): MAX_BITRATE_LEVEL4 and MAX_BITRATE_MJPEG are 25 Mbit/s, MAX_BITRATE_LEVEL42
# 62.5 Mbit/s. The cap is applied while the level is still the default 4 (the macroblock check that may raise
# the level comes later), so a higher H.264 bitrate needs `-lev 4.2` on the command line (long form
# `--level`; values 4, 4.1, 4.2). MJPEG has no way past 25.
RASPIVID_LEVEL4_MAX_BPS = 25_000_000
RASPIVID_MJPEG_MAX_BPS = 25_000_000
LEVEL42_MAX_BPS = 62_500_000
# RaspiVid.c refuses ("Too many macroblocks/s requested") more 16x16 macroblocks a second than level 4.2 allows.
RASPIVID_MAX_MACROBLOCKS_S = 522_240
# rpicam-vid's MJPEG encoder (encoder/mjpeg_encoder.cpp) sets only the JPEG quality (--quality, 50 unless
# given) and ignores -b, so what it sends depends on the scene. piorch plans with 1.5 bits a pixel, about
# what JPEG at quality 50 makes of a photograph (some 15:1 of 24-bit colour); a busy, noisy scene makes more.
MJPEG_BITS_PER_PIXEL = 1.5


@dataclass(frozen=True)
class EncoderOptions:
    """Options beyond the basics that this tool build takes, chosen from the probe by `plan_camera`."""

    # `--libav-format h264`: libav guesses no output format for `-o -` and fails (encoder/libav_encoder.cpp).
    libav_format: bool = False
    # `--low-latency`: libx264 without B-frames (else max_b_frames = 1), rpicam-apps 1.6 and later.
    low_latency: bool = False


def build_camera_argv(camera: CameraSettings, tool: CameraTool, options: EncoderOptions = EncoderOptions()
                      ) -> list[str]:
    """The camera half of the pipeline, writing H.264 (or MJPEG) to stdout.

    Always: no preview (a Pi on a cable has no one looking at its screen, and a preview costs GPU memory)
    and, for H.264, inline headers (SPS/PPS before every I-frame, so a stream joined late or cut still
    decodes). MJPEG needs neither: every frame is a whole JPEG. rpicam-vid's MJPEG ignores -b, so it gets none.
    """
    if tool is CameraTool.AUTO:
        raise ValueError("resolve the camera tool before building its command line")
    if camera.codec == "yuv420":
        return build_raw_video_argv(camera, tool)  # pi/raw.py: raspividyuv, or rpicam-vid --codec yuv420
    h264 = camera.codec == "h264"
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
        if not h264:
            argv += ["-cd", "MJPEG"]  # exactly this spelling: raspivid compares case-sensitively
        else:
            argv.append("-ih")
            if camera.bitrate > RASPIVID_LEVEL4_MAX_BPS:
                argv += ["-lev", "4.2"]  # else raspivid silently lowers the bitrate to 25 Mbit/s
        if camera.intra_period and h264:
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
        *(["-b", str(camera.bitrate)] if h264 else []),
        "--width", str(camera.width),
        "--height", str(camera.height),
        "--framerate", str(camera.fps),
        "-n",
    ]
    if h264:
        argv.append("--inline")
        if options.libav_format:
            argv += ["--libav-format", "h264"]
        if options.low_latency:
            argv.append("--low-latency")
    if camera.intra_period and h264:
        argv += ["--intra", str(camera.intra_period)]
    if camera.vflip:
        argv.append("--vflip")
    if camera.hflip:
        argv.append("--hflip")
    return argv


def macroblocks_per_second(width: int, height: int, fps: int) -> int:
    """16x16 macroblocks a second, rounding the picture up to whole macroblocks as the encoders do."""
    return ((width + 15) // 16) * ((height + 15) // 16) * fps


def check_camera_limits(camera: CameraSettings, tool: CameraTool) -> None:
    """Refuse what the tool would refuse or silently change, naming the limit (UsageError)."""
    if not tool.is_legacy:
        return
    if camera.codec == "h264":
        rate = macroblocks_per_second(camera.width, camera.height, camera.fps)
        if rate > RASPIVID_MAX_MACROBLOCKS_S:
            per_frame = rate // camera.fps
            most = RASPIVID_MAX_MACROBLOCKS_S // per_frame
            raise UsageError(
                f"{camera.width}x{camera.height} at {camera.fps} fps is {rate:,} macroblocks/s, and raspivid refuses "
                f"more than {RASPIVID_MAX_MACROBLOCKS_S:,} (H.264 level 4.2)",
                f"give --fps {most} or less at this size, or a smaller --width/--height")
    elif camera.codec == "mjpeg" and camera.bitrate > RASPIVID_MJPEG_MAX_BPS:
        raise UsageError(
            f"bitrate {camera.bitrate} is over raspivid's MJPEG ceiling of 25 Mbit/s (it would silently lower it)",
            f"give --bitrate {RASPIVID_MJPEG_MAX_BPS} or less")


def mjpeg_estimate_bps(camera: CameraSettings) -> int:
    return round(camera.width * camera.height * camera.fps * MJPEG_BITS_PER_PIXEL)


@dataclass(frozen=True)
class CameraPlan:
    """How one recording is spoken to this Pi's tool, decided before anything starts on the Pi."""

    options: EncoderOptions
    # What the stream is expected to carry, bit/s: the bitrate asked for, or an estimate where the encoder
    # ignores it (rpicam-vid's MJPEG). For the disk check and the dashboard.
    expected_bps: int
    warnings: tuple[str, ...] = ()
    # Raw video: how its frames lie in the stream (pi/raw.py).
    raw: RawLayout | None = None


def plan_camera(camera: CameraSettings, tool: CameraTool, stack: CameraStack, bitrate_given: bool = False
                ) -> CameraPlan:
    """Which options this tool build gets, what its stream will carry, and the refusals of what it cannot do.

    Raises UsageError for a size, rate or bitrate past the tool's limits, RemoteError when the Pi's tool
    cannot record the codec at all (a Pi 5 with rpicam-apps-lite and H.264).
    """
    check_camera_limits(camera, tool)
    warnings: list[str] = []
    if camera.codec == "yuv420":
        raw = raw_video_layout(camera, tool, stack.board)
        if bitrate_given:
            warnings.append("the bitrate does not apply to raw video (--codec yuv420): nothing is encoded")
        return CameraPlan(EncoderOptions(), raw.bits_per_second, tuple(warnings), raw)
    if camera.codec != "h264":
        if tool.is_legacy:
            return CameraPlan(EncoderOptions(), camera.bitrate)
        expected = mjpeg_estimate_bps(camera)
        if bitrate_given:
            warnings.append(f"{tool.value} ignores the bitrate with --codec mjpeg (its MJPEG encoder sets only the "
                            f"JPEG quality, 50); expect about {expected / 1e6:.0f} Mbit/s at {camera.width}x"
                            f"{camera.height}, {camera.fps} fps")
        return CameraPlan(EncoderOptions(), expected, tuple(warnings))
    if tool.is_legacy or stack.encoder is H264Encoder.HARDWARE:
        return CameraPlan(EncoderOptions(), camera.bitrate)
    board = stack.board or "this Pi"
    if stack.encoder is H264Encoder.NONE:
        raise RemoteError(
            f"{tool.value} on the {board} cannot record H.264 (a Pi 5 has no hardware H.264 encoder, and this "
            "rpicam-apps build, rpicam-apps-lite, has no libav to encode it in software)",
            "install the full build on the Pi (sudo apt install rpicam-apps), or record with --codec mjpeg")
    options = EncoderOptions(libav_format=stack.has_option("libav-format"), low_latency=stack.has_option("low-latency"))
    if stack.encoder is H264Encoder.SOFTWARE:
        if not options.libav_format:
            said = "lists no --libav-format" if stack.facts and stack.facts.help_read else "could not be read"
            raise RemoteError(
                f"{tool.value} on the {board} encodes H.264 in software (libav), which cannot write to a pipe "
                f"without --libav-format, and its --help {said}",
                "update rpicam-apps on the Pi (sudo apt update && sudo apt install rpicam-apps), "
                "or record with --codec mjpeg")
        if not options.low_latency:
            version = f" {stack.tool_version}" if stack.tool_version else ""
            warnings.append(f"{tool.value}{version} has no --low-latency (rpicam-apps 1.6 and later), so libx264 "
                            "makes B-frames and frames arrive out of display order; update rpicam-apps on the Pi")
    return CameraPlan(options, camera.bitrate, tuple(warnings))


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
    # encoder/encoder.cpp and encoder/libav_encoder.cpp: what a Pi 5 says when piorch's probe could not tell
    # (a board it does not recognise) and the plan was not refused beforehand.
    if "unable to find an appropriate h.264 codec" in text:
        return CameraProblem(f"{tool.value} cannot record H.264 on this Pi: no hardware encoder and no libav "
                             "(a Pi 5 with rpicam-apps-lite)",
                             "install the full build on the Pi (sudo apt install rpicam-apps), "
                             "or record with --codec mjpeg")
    if "cannot allocate output context" in text:
        return CameraProblem(f"{tool.value} encodes H.264 in software (libav) here and cannot write it to a pipe "
                             "without --libav-format", "update rpicam-apps on the Pi (sudo apt install rpicam-apps), "
                             "or record with --codec mjpeg")
    if (at := stderr.find(PIPES_FAILED)) >= 0:
        # The pipeline script's own line (build_pipeline_script): the camera was never started.
        folder = (stderr[at + len(PIPES_FAILED):].strip().splitlines() or ["/tmp"])[0]
        return CameraProblem(f"the Pi could not make the named pipes the camera's timestamps travel through, in "
                             f"{folder} (full, read-only or missing?)",
                             "free that folder on the Pi, or record with --no-timestamps")
    if "invalid command line option" in text or "unrecognised option" in text or "unrecognized option" in text:
        return CameraProblem(f"{tool.value} refused an option ({_last_line(stderr)})",
                             "try --camera-tool to pick the tool the Pi really has")
    detail = _last_line(stderr) or f"exit status {exit_code}"
    return CameraProblem(f"{tool.value} failed on the Pi ({detail})", "run `piorch doctor` for a full check")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""
