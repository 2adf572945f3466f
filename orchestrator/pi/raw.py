"""Raw pictures and raw video on the Pi: which tool writes them, its command line, how its bytes lie, and
whether the Pi's link can carry them (pure, but for `read_link`).

What each tool writes (read in its own code):
- `rpicam-vid --codec yuv420` (rpicam-apps encoder/null_encoder.cpp, core/rpicam_encoder.hpp EncodeBuffer):
  every camera buffer whole, so each I420 row carries the ISP's stride padding; the tool never prints the
  stride (only rpicam-raw logs one). The stride is the driver's: on a Pi 0-4 the bcm2835-isp aligns YUV420
  rows to 64 bytes (raspberrypi/linux#4419, June 2021, before the first libcamera-apps release); on a Pi 5
  libcamera's PiSP handler uses libpisp's compute_optimal_stride with the subsampling ratio kept, which
  aligns the chroma rows to 64 and so the luma rows to 128. No rows are added. The colour space is sYCC,
  full range (apps/rpicam_vid.cpp get_colourspace_flags -> FLAG_VIDEO_JPEG_COLOURSPACE).
- `raspividyuv` (userland RaspiVidYUV.c): the camera port is VCOS_ALIGN_UP(width, 32) x
  VCOS_ALIGN_UP(height, 16) and each MMAL buffer is written whole (dump_status prints exactly that Y pitch
  and Y height; userland#702 calls it "working as documented").
- `raspiyuv` (RaspiStillYUV.c): the same port alignment for I420, `-rgb` (RGB24; the tool swaps in BGR24 on
  firmware whose RGB order is not fixed, so the bytes are R, G, B either way) and `-bgr` (userland 1275cdc,
  October 2018).
- `rpicam-still -e yuv420 | rgb` (image/yuv.cpp): each row copied at its picture width, no padding. `rgb`
  asks the still stream for libcamera's BGR888 (apps/rpicam_still.cpp FLAG_STILL_BGR, core/rpicam_app.cpp),
  whose bytes are R, G, B in memory (DRM fourcc order): the very buffer image/png.cpp gives libpng as
  PNG_COLOR_TYPE_RGB untouched. So the file is RGB24; bgr, rgba and bgra are made on the laptop.
  Before libcamera-apps 1.0.2 (commit 114c8ae, November 2022) both wrote `-o -` to a file named '-'.
"""

from __future__ import annotations

import ipaddress
import shlex
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.errors import RemoteError, UsageError
from orchestrator.events import EventSink, Notice, RawLayout
from orchestrator.pi.host import Host
from orchestrator.pi.stack import BoardFamily, ToolFacts, board_family
from orchestrator.settings import RAW_SIBLING, CameraSettings, CameraTool, RawFormat, StillSettings, StillTool

# rpicam-vid's I420 row alignment by ISP (see above).
RPICAM_STRIDE_ALIGN: Mapping[BoardFamily, int] = {BoardFamily.VC4: 64, BoardFamily.PISP: 128}
# A width that is a multiple of this is unpadded on every Pi, whatever its ISP.
UNPADDED_ON_EVERY_PI = 128
# raspividyuv / raspiyuv: the MMAL port's alignment, in pixels and rows.
LEGACY_WIDTH_ALIGN = 32
LEGACY_HEIGHT_ALIGN = 16
# The first libcamera-still that wrote raw stills to stdout (1.0.2) is the first to list --buffer-count
# (187fcf8, six days after 114c8ae): a --help without it is older, give or take those six days.
RAW_STDOUT_OPTION = "buffer-count"
# Above this share of the link, other traffic (SSH, the Pi's own) may make frames late.
LINK_WARN_SHARE = 0.8


def align_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step


# ------------------------------------------------------------------------------------------ raw video


def raw_video_tool(tool: CameraTool) -> str:
    """The binary that records raw video: raspividyuv on the legacy stack, else the libcamera tool itself."""
    return RAW_SIBLING.get(tool.value, tool.value)


def raw_video_layout(camera: CameraSettings, tool: CameraTool, board: str | None) -> RawLayout:
    """How the frames of `--codec yuv420` will lie in the stream; UsageError when piorch cannot know."""
    width, height = camera.width, camera.height
    if width % 2 or height % 2:
        raise UsageError(f"raw I420 video needs an even width and height, not {width}x{height}",
                         "give an even --width and --height")
    if tool.is_legacy:
        return RawLayout("yuv420p", width, height, align_up(width, LEGACY_WIDTH_ALIGN),
                         align_up(height, LEGACY_HEIGHT_ALIGN), camera.fps)
    family = board_family(board)
    align = RPICAM_STRIDE_ALIGN.get(family) if family is not None else None
    if align is None:
        if width % UNPADDED_ON_EVERY_PI:
            raise UsageError(
                f"{tool.value} pads each row of raw video to its ISP's stride (64 bytes on a Pi 0-4, 128 on a Pi 5) "
                f"and does not say which; the Pi's board could not be read, so the rows of {width}-pixel frames "
                "cannot be found", f"give a --width that is a multiple of {UNPADDED_ON_EVERY_PI} (e.g. 640, 1280, "
                "1920), which no Pi pads")
        align = UNPADDED_ON_EVERY_PI
    return RawLayout("yuv420p", width, height, align_up(width, align), height, camera.fps, full_range=True)


def build_raw_video_argv(camera: CameraSettings, tool: CameraTool) -> list[str]:
    """The camera half for raw I420 to stdout. No bitrate, inline headers or intra period: nothing encodes."""
    if tool.is_legacy:
        # raspivid's option language (RaspiVidYUV.c shares RaspiCLI and the common, preview and camera
        # options): -h is height, -fps the frame rate.
        argv = [raw_video_tool(tool), "-o", "-", "-t", str(camera.duration_ms), "-w", str(camera.width),
                "-h", str(camera.height), "-fps", str(camera.fps), "-n"]
        return argv + ["-vf"] * camera.vflip + ["-hf"] * camera.hflip
    argv = [tool.value, "-o", "-", "-t", str(camera.duration_ms), "--codec", "yuv420", "--width", str(camera.width),
            "--height", str(camera.height), "--framerate", str(camera.fps), "-n"]
    return argv + ["--vflip"] * camera.vflip + ["--hflip"] * camera.hflip


def require_raw_video_tool(tool: CameraTool, raw_tools: Mapping[str, str]) -> None:
    if tool.is_legacy and raw_video_tool(tool) not in raw_tools:
        raise RemoteError(f"{raw_video_tool(tool)} (raw video on the legacy camera stack) is not installed on the Pi",
                          "install libraspberrypi-bin there (sudo apt install libraspberrypi-bin)")


# ------------------------------------------------------------------------------------------ raw stills


@dataclass(frozen=True)
class RawStillPlan:
    """One raw picture: what the tool is asked to write, how its bytes lie, and the file piorch writes."""

    tool_format: RawFormat  # yuv, rgb or bgr: what the tool itself writes
    camera: RawLayout  # the tool's bytes
    output: RawLayout  # the file on the laptop: the same, or converted (order, padding, size)

    @property
    def converts(self) -> bool:
        return self.camera != self.output


def plan_raw_still(fmt: RawFormat, still: StillSettings, tool: StillTool) -> RawStillPlan:
    """Which raw encoding the tool writes for `fmt` and how; the laptop converts where it cannot."""
    if still.width is None or still.height is None:
        raise UsageError(f"--format {fmt.value} needs --width and --height (a raw picture carries no size)",
                         f"for example --format {fmt.value} --width 640 --height 480")
    width, height = still.width, still.height
    if fmt is RawFormat.YUV and (width % 2 or height % 2):
        raise UsageError(f"an I420 picture needs an even width and height, not {width}x{height}",
                         "give an even --width and --height")
    native = {RawFormat.YUV, RawFormat.RGB, RawFormat.BGR} if tool.is_legacy else {RawFormat.YUV, RawFormat.RGB}
    tool_format = fmt if fmt in native else RawFormat.RGB
    if tool.is_legacy:
        per_pixel = 1 if tool_format is RawFormat.YUV else 3
        camera = RawLayout(tool_format.pixel_format, width, height, align_up(width, LEGACY_WIDTH_ALIGN) * per_pixel,
                           align_up(height, LEGACY_HEIGHT_ALIGN))
    else:
        camera = RawLayout.packed(tool_format.pixel_format, width, height, full_range=True)
    if fmt is tool_format and still.resize is None:
        return RawStillPlan(tool_format, camera, camera)  # the camera's own bytes, padding and all
    out_width, out_height = still.resize or (width, height)
    output = RawLayout.packed(fmt.pixel_format, out_width, out_height,
                              full_range=camera.full_range if fmt is RawFormat.YUV else None)
    return RawStillPlan(tool_format, camera, output)


def build_raw_still_argv(still: StillSettings, tool: StillTool, plan: RawStillPlan) -> list[str]:
    """One raw picture to stdout, in the tool's own language; `-t` is the settle time in milliseconds."""
    width, height = str(plan.camera.width), str(plan.camera.height)
    if tool.is_legacy:
        # raspiyuv has no -e: I420 unless -rgb or -bgr.
        order = {RawFormat.RGB: ["-rgb"], RawFormat.BGR: ["-bgr"]}.get(plan.tool_format, [])
        argv = [RAW_SIBLING[tool.value], "-o", "-", "-t", str(still.settle_ms), "-n", "-w", width, "-h", height, *order]
        return argv + ["-vf"] * still.vflip + ["-hf"] * still.hflip
    encoding = "yuv420" if plan.tool_format is RawFormat.YUV else "rgb"
    argv = [tool.value, "-o", "-", "--encoding", encoding, "-t", str(still.settle_ms), "-n", "--width", width,
            "--height", height]
    return argv + ["--vflip"] * still.vflip + ["--hflip"] * still.hflip


def check_raw_still_tool(tool: StillTool, raw_tools: Mapping[str, str], facts: ToolFacts | None) -> None:
    """Refuse a Pi whose still tool cannot send a raw picture down the pipe (RemoteError)."""
    if tool.is_legacy:
        if RAW_SIBLING[tool.value] not in raw_tools:
            raise RemoteError(f"{RAW_SIBLING[tool.value]} (raw stills on the legacy camera stack) is not installed "
                              "on the Pi", "install libraspberrypi-bin there (sudo apt install libraspberrypi-bin)")
        return
    if facts is None or not facts.help_read or RAW_STDOUT_OPTION in facts.options:
        return
    raise RemoteError(f"{tool.value} on the Pi is older than libcamera-apps 1.0.2 (November 2022) and writes raw "
                      "pictures for `-o -` to a file named '-' instead of to stdout",
                      "update it there (sudo apt update && sudo apt full-upgrade), or use --format png")


# ------------------------------------------------------------------------------------------ the Pi's link


ROUTE_MARK = "piorch-route"
SPEED_MARK = "piorch-speed"
ROUTES_BEGIN, ROUTES_END = "piorch-routes-begin", "piorch-routes-end"


def build_link_script(laptop_ip: str) -> str:
    """One round trip: the interface the Pi reaches the laptop by, and every interface's speed (Mbit/s).

    `ip route get` names the interface (iproute2 is on every Raspberry Pi OS); /proc/net/route is the
    fallback for a system without it (IPv4 only). A speed file that cannot be read (wireless, loopback,
    a link that is down) prints nothing after the name.
    """
    address = shlex.quote(laptop_ip.split("%", 1)[0])
    return (
        f"if command -v ip >/dev/null 2>&1; then echo \"{ROUTE_MARK} $(ip route get {address} 2>/dev/null | "
        "head -n 1)\"; fi; "
        # ${d##*/}: the interface name, the last part of its /sys path (POSIX parameter expansion).
        f'for d in /sys/class/net/*; do echo "{SPEED_MARK} ${{d##*/}} $(cat "$d/speed" 2>/dev/null)"; done; '
        f"echo {ROUTES_BEGIN}; cat /proc/net/route 2>/dev/null; echo {ROUTES_END}"
    )


@dataclass(frozen=True)
class LinkReport:
    """The Pi's interface towards the laptop (None: not found) and its speed in Mbit/s (None: not known)."""

    iface: str | None
    speed_mbps: int | None
    speeds: dict[str, int | None] = field(default_factory=dict)


def parse_link_report(text: str, laptop_ip: str) -> LinkReport:
    speeds: dict[str, int | None] = {}
    route_line = ""
    routes: list[str] = []
    in_routes = False
    for line in text.splitlines():
        if in_routes:
            if line.strip() == ROUTES_END:
                in_routes = False
            else:
                routes.append(line)
        elif line.startswith(ROUTE_MARK + " "):
            route_line = line[len(ROUTE_MARK) + 1:]
        elif line.startswith(SPEED_MARK + " "):
            parts = line.split()
            if len(parts) >= 2:
                value = parts[2] if len(parts) > 2 else ""
                speeds[parts[1]] = int(value) if value.isdigit() and int(value) > 0 else None
        elif line.strip() == ROUTES_BEGIN:
            in_routes = True
    words = route_line.split()
    iface = words[words.index("dev") + 1] if "dev" in words[:-1] else _route_by_table(routes, laptop_ip)
    return LinkReport(iface, speeds.get(iface) if iface else None, speeds)


def _route_by_table(lines: list[str], laptop_ip: str) -> str | None:
    """/proc/net/route's longest matching prefix (then lowest metric) for an IPv4 address."""
    try:
        address = ipaddress.IPv4Address(laptop_ip)
    except ValueError:
        return None
    best: tuple[int, int, str] | None = None
    for line in lines[1:]:
        fields = line.split()
        try:
            # Destination and Mask as the kernel prints them: the address's bytes in memory order, in hex
            # (little-endian on a Pi); Flags a plain hex number, Metric decimal.
            dest, mask = (int.from_bytes(bytes.fromhex(fields[i]), "little") for i in (1, 7))
            flags, metric = int(fields[3], 16), int(fields[6])
        except (IndexError, ValueError):
            continue
        if flags & 1 and int(address) & mask == dest:  # RTF_UP
            candidate = (bin(mask).count("1"), -metric, fields[0])
            best = candidate if best is None or candidate[:2] > best[:2] else best
    return best[2] if best else None


@dataclass(frozen=True)
class LinkVerdict:
    refuse: bool = False
    message: str | None = None  # a refusal's message, or a warning; None: nothing to say
    fix: str = ""


def judge_link(layout: RawLayout, link: LinkReport) -> LinkVerdict:
    """Compare raw video's rate (every byte the tool sends, padding included) with the Pi's link speed."""
    rate = layout.bits_per_second
    what = f"raw video at {layout.width}x{layout.height}, {layout.fps:g} fps is {rate / 1e6:.1f} Mbit/s"
    if link.iface == "lo" and link.speed_mbps is None:
        return LinkVerdict()  # the laptop itself (the demo): loopback has no speed and no cable
    if link.iface is None or link.speed_mbps is None:
        where = f"of {link.iface} " if link.iface else ""
        return LinkVerdict(message=f"{what}, and the link speed {where}on the Pi could not be read "
                                   "(wireless, or not known): frames may arrive late or be dropped")
    speed = link.speed_mbps * 1_000_000
    if rate > speed:
        most = int(speed // (layout.frame_bytes * 8))
        lower = f"give --fps {most} or less at this size, " if most >= 1 else ""
        return LinkVerdict(True, f"{what}, more than the Pi's {link.iface} link carries ({link.speed_mbps} Mbit/s)",
                           f"{lower}a smaller --width/--height, or --codec h264 (compressed on the Pi); "
                           "--force tries anyway")
    if rate > LINK_WARN_SHARE * speed:
        return LinkVerdict(message=f"{what}, {rate / speed:.0%} of the Pi's {link.iface} link ({link.speed_mbps} "
                                   "Mbit/s): frames may be late or dropped when anything else uses it")
    return LinkVerdict()


def read_link(host: Host, laptop_ip: str, stop: threading.Event | None = None) -> LinkReport:
    """The Pi's interface towards the laptop and its speed (one small command, before the camera starts)."""
    # A route lookup and a dozen small file reads: a Pi that takes 10 s over them is not answering.
    result = host.run(build_link_script(laptop_ip), timeout=10, stop=stop)
    return parse_link_report(result.stdout, laptop_ip)


def check_link(host: Host, laptop_ip: str, layout: RawLayout, force: bool, on_event: EventSink,
               stop: threading.Event | None = None) -> None:
    """Refuse raw video the Pi's link cannot carry (UsageError, unless `force`); warn when it nearly fills it."""
    verdict = judge_link(layout, read_link(host, laptop_ip, stop))
    if verdict.refuse and not force:
        raise UsageError(verdict.message or "the link is too slow", verdict.fix)
    if verdict.message:
        on_event(Notice("warning", verdict.message + (" (--force: trying anyway)" if verdict.refuse else "")))
