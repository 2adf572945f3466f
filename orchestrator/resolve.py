"""From what the user chose to the frozen settings of one run: the config's four layers (read once, by
`config.load_config`) plus the options that are not config keys, checked together, built once.

Used by the CLI's commands; everything here raises `UsageError` with the fix, before anything starts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.config import Config
from orchestrator.errors import PiorchError, UsageError
from orchestrator.settings import (
    STILL_SIBLING,
    Backend,
    CameraSettings,
    CameraTool,
    PictureFormat,
    RawFormat,
    ReceiveSettings,
    RecordSettings,
    SnapSettings,
    SshSettings,
    StillSettings,
    StillTool,
    parse_picture_format,
)

# The longest a single run may be asked to record: a week, as the camera tools' -t can say.
MAX_DURATION_S = 7 * 24 * 3600
CODECS = ("h264", "mjpeg", "yuv420")
MAX_SNAP_COUNT = 100_000
MAX_INTERVAL_S = 7 * 24 * 3600
_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?")


def parse_duration(text: str) -> float:
    """`5s`, `90s`, `10m`, `1h`, `1h30m`, `1h30m15s`, `2.5s` or plain seconds (`90`, `2.5`) -> seconds > 0."""
    cleaned = text.strip().lower()
    try:
        seconds = float(cleaned)
    except ValueError:
        match = _DURATION.fullmatch(cleaned)
        if not cleaned or match is None or not any(match.groups()):
            raise ValueError(
                f"{text!r} is not a duration: use seconds (90), or a number with units like 5s, 10m, 1h, 1h30m"
            ) from None
        hours, minutes, secs = (float(group or 0) for group in match.group("h", "m", "s"))
        seconds = hours * 3600 + minutes * 60 + secs
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be more than 0 seconds")
    return seconds


def duration_ms(minutes: float | None, seconds: float | None) -> int:
    """--minutes or --seconds (not both); 0 or neither means until Ctrl+C."""
    if minutes is not None and seconds is not None:
        raise UsageError("--minutes and --seconds both given", "use one of them")
    value = minutes * 60 if minutes is not None else seconds if seconds is not None else 0.0
    if value < 0:
        raise UsageError(f"a negative duration ({value:g} s)", "give a positive time, or 0 for until Ctrl+C")
    if value > MAX_DURATION_S:
        raise UsageError("a duration over a week", "record in several runs")
    milliseconds = round(value * 1000)
    if value > 0 and milliseconds < 1:
        # The camera tools count -t in whole milliseconds, and `-t 0` means "until stopped": a duration that
        # rounds to 0 would record for ever.
        option = f"--minutes {minutes:g}" if minutes is not None else f"--seconds {seconds:g}"
        raise UsageError(f"{option} is under a millisecond, the shortest time the camera tools can be given",
                         "give at least 0.001 seconds, or 0 to record until Ctrl+C")
    return milliseconds


def segment_seconds(text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--segment {text!r}: {exc}", "write it like 5s, 90s, 10m or 1h") from None
    if value < 1:
        raise UsageError(f"--segment {text!r} is under a second", "segments are whole GOPs: use 1s or more")
    return value


@dataclass(frozen=True)
class RecordChoices:
    """What `record` was asked for beyond the config keys (those come through `Config`)."""

    duration_ms: int = 0
    segment_s: float = 0.0
    codec: str = "h264"
    frames: bool = False
    keep_raw: bool = False
    view: bool = False
    discard_partial: bool = False
    accept_new_host_key: bool = False
    stall_timeout_s: float = 10.0
    no_resume: bool = False
    force: bool = False
    kill_stale: bool = False
    # Several --pi given: the config's single `pi` is not required.
    targets_given: bool = False


def build_ssh_settings(config: Config, accept_new_host_key: bool) -> SshSettings:
    return SshSettings(
        target=config["pi"], ssh_config=Path(config["ssh_config"]).expanduser() if config["ssh_config"] else None,
        accept_new_host_key=accept_new_host_key, connect_timeout=config["connect_timeout"],
        use_controlmaster=config["use_controlmaster"],
    )


def build_receive_settings(config: Config, discard_partial: bool) -> ReceiveSettings:
    backend = Backend(config["backend"])
    if backend is Backend.NC and config["port"] == 0:
        raise UsageError("--port 0 needs the builtin backend", "give a port number with --backend nc")
    return ReceiveSettings(port=config["port"], out_dir=Path(config["out"]).expanduser(), backend=backend,
                           discard_partial=discard_partial)


def require_pi(config: Config, targets_given: bool = False) -> None:
    if not (config["pi"] or config["pis"] or targets_given):
        raise UsageError("no Pi given", "pass --pi HOST or set `pi` in the config (piorch setup-link does)")


def build_record_settings(config: Config, choices: RecordChoices) -> tuple[RecordSettings, SshSettings]:
    """Every record option checked together; the frozen settings of the run and how to reach the Pi."""
    codec = choices.codec
    if codec not in CODECS:
        raise UsageError(f"unknown --codec {codec!r}", "use h264, mjpeg or yuv420")
    if choices.frames and codec != "mjpeg":
        raise UsageError("--frames splits MJPEG only", "add --codec mjpeg")
    if choices.segment_s and codec != "h264":
        raise UsageError("--segment cuts H.264 at I-frames", "drop --segment, or record with --codec h264")
    if not 1 <= choices.stall_timeout_s <= 3600:
        raise UsageError(f"--stall-timeout {choices.stall_timeout_s:g} is out of range", "give 1 to 3600 seconds")
    if choices.keep_raw and codec == "yuv420":
        raise UsageError("--keep-raw with --codec yuv420", "the raw .yuv is always kept: drop --keep-raw")
    if choices.view and codec == "yuv420":
        raise UsageError("--view plays H.264 or MJPEG, not raw frames", "drop --view, or record with --codec h264")
    if choices.keep_raw and (config["container"] == "h264" or codec == "mjpeg"):
        raise UsageError("--keep-raw with --container h264", "the raw stream is the file already: drop --keep-raw")
    require_pi(config, choices.targets_given)
    settings = RecordSettings(
        camera=CameraSettings(
            bitrate=config["bitrate"], width=config["width"], height=config["height"], fps=config["fps"],
            vflip=config["vflip"], hflip=config["hflip"], duration_ms=choices.duration_ms, codec=codec,
        ),
        receive=build_receive_settings(config, choices.discard_partial),
        camera_tool=CameraTool(config["camera_tool"]),
        laptop_ip=config["laptop_ip"] or None,
        segment_s=choices.segment_s, container=config["container"], keep_raw=choices.keep_raw,
        view=choices.view, frames=choices.frames, force=choices.force, kill_stale=choices.kill_stale,
        stall_timeout_s=choices.stall_timeout_s, no_resume=choices.no_resume,
        bitrate_given=config.sources["bitrate"] != "default", remember_pi=config["remember_pi"],
        timestamps=config["timestamps"],
    )
    return settings, build_ssh_settings(config, choices.accept_new_host_key)


@dataclass(frozen=True)
class SnapChoices:
    """What `snap` was asked for beyond the config keys."""

    image_format: str = "jpg"
    count: int = 1
    interval_s: float | None = None
    name: str | None = None
    width: int | None = None
    height: int | None = None
    # None: the still sibling of the config's camera_tool.
    camera_tool: str | None = None
    accept_new_host_key: bool = False
    # Raw formats: "WxH", scaled on the laptop.
    resize: str | None = None


def parse_size(text: str) -> tuple[int, int]:
    """`640x480` -> (640, 480); ValueError saying what is wrong."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a size: write it as WIDTHxHEIGHT, e.g. 640x480")
    width, height = int(match.group(1)), int(match.group(2))
    if not (2 <= width <= 16384 and 2 <= height <= 16384):
        raise ValueError(f"{text!r}: width and height must be 2 to 16384 pixels")
    return width, height


def build_snap_settings(config: Config, choices: SnapChoices) -> tuple[SnapSettings, SshSettings]:
    """Every snap option checked together (the name template is checked by the snap job's own rules)."""
    try:
        fmt = parse_picture_format(choices.image_format)
    except ValueError:
        raise UsageError(f"--format {choices.image_format!r} is not an image format piorch takes",
                         "use jpg, png, bmp or gif, or raw yuv, rgb, bgr, rgba or bgra") from None
    count, interval, width, height = choices.count, choices.interval_s, choices.width, choices.height
    if not 1 <= count <= MAX_SNAP_COUNT:
        raise UsageError(f"--count {count} is out of range", f"give 1 up to {MAX_SNAP_COUNT}")
    if interval is not None and count == 1:
        raise UsageError("--interval without --count", "add --count N for a timelapse of N pictures")
    if interval is not None and not 0 <= interval <= MAX_INTERVAL_S:
        raise UsageError(f"--interval {interval:g} is out of range", f"give 0 up to {MAX_INTERVAL_S} seconds")
    if (width is None) != (height is None):
        raise UsageError("--width and --height go together", "give both, or neither for the full resolution")
    for option, value in (("--width", width), ("--height", height)):
        if value is not None and not 16 <= value <= 16384:
            raise UsageError(f"{option} {value} is out of range", "give 16 up to 16384 pixels")
    resize = check_raw_choices(fmt, width, height, choices.resize)
    if choices.camera_tool is None:
        tool = STILL_SIBLING[CameraTool(config["camera_tool"])]
    else:
        try:
            tool = StillTool(choices.camera_tool)
        except ValueError:
            raise UsageError(f"--camera-tool {choices.camera_tool!r} is not a still tool",
                             "use auto, raspistill, libcamera-still or rpicam-still") from None
    require_pi(config)
    still = StillSettings(image_format=fmt, width=width, height=height, vflip=config["vflip"], hflip=config["hflip"],
                          resize=resize)
    settings = SnapSettings(still=still, receive=build_receive_settings(config, False), still_tool=tool,
                            laptop_ip=config["laptop_ip"] or None, count=count, interval_s=interval or 0.0,
                            name_template=choices.name, remember_pi=config["remember_pi"])
    return settings, build_ssh_settings(config, choices.accept_new_host_key)


def check_raw_choices(fmt: PictureFormat, width: int | None, height: int | None,
                      resize_text: str | None) -> tuple[int, int] | None:
    """A raw picture carries no size, so it is asked for; I420 halves both sides, so they are even."""
    if not isinstance(fmt, RawFormat):
        if resize_text is not None:
            raise UsageError(f"--resize scales raw pictures, not {fmt.value}",
                             "use --width/--height to have the camera take it at that size, or a raw --format")
        return None
    if width is None or height is None:
        raise UsageError(f"--format {fmt.value} needs --width and --height (a raw picture carries no size)",
                         f"for example --format {fmt.value} --width 640 --height 480")
    resize = None
    if resize_text is not None:
        try:
            resize = parse_size(resize_text)
        except ValueError as exc:
            raise UsageError(f"--resize {exc}", "for example --resize 320x240") from None
    if fmt is RawFormat.YUV:
        for option, (w, h) in (("--width/--height", (width, height)), ("--resize", resize or (2, 2))):
            if w % 2 or h % 2:
                raise UsageError(f"an I420 picture needs an even width and height ({option} {w}x{h})",
                                 f"give an even {option}")
    return resize


def build_pi_folder_name(target: str) -> str:
    """`pi@192.168.50.2:2222` -> `pi_192.168.50.2_2222`: a folder name that is safe everywhere (pure)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", target).strip("._") or "pi"
    return name[:64]


def plan_fleet(targets: list[str], base: RecordSettings,
               ports: dict[str, int] | None = None) -> list[tuple[str, RecordSettings]]:
    """Per Pi: its own folder under OUT and its own port: set in the config (`ports`), else counted up from
    the base port (0: any free)."""
    ports = ports or {}
    if len(set(targets)) != len(targets):
        raise PiorchError("the same Pi is given twice", "give each --pi once")
    names = [build_pi_folder_name(target) for target in targets]
    if len(set(names)) != len(names):
        raise PiorchError("two Pis would share an output folder", "give them distinct names or aliases")
    plan = []
    for index, (target, name) in enumerate(zip(targets, names, strict=True)):
        port = ports.get(target, base.receive.port + index if base.receive.port else 0)
        if port > 65535:
            raise PiorchError(f"no port left for {target} above {base.receive.port}", "pick a lower --port")
        receive = replace(base.receive, port=port, out_dir=base.receive.out_dir / name)
        plan.append((target, replace(base, receive=receive)))
    taken = [settings.receive.port for _, settings in plan if settings.receive.port]
    if len(set(taken)) != len(taken):
        raise PiorchError("two Pis would receive on the same port", "fix pi_ports in the config or --port")
    return plan
