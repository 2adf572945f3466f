"""Raw pictures and raw video (issue 12): the tools' command lines and byte layouts, the link-speed decision,
and the laptop's conversions and YUV4MPEG2 twin, as tables and against real bytes (no Pi, no network)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.config import Config, load_config
from orchestrator.errors import RemoteError, UsageError
from orchestrator.events import RawLayout
from orchestrator.pi.camera import build_camera_argv, check_camera_limits, plan_camera
from orchestrator.pi.raw import (
    LinkReport,
    build_link_script,
    build_raw_still_argv,
    build_raw_video_argv,
    check_raw_still_tool,
    judge_link,
    parse_link_report,
    plan_raw_still,
    raw_video_layout,
    require_raw_video_tool,
)
from orchestrator.pi.scripts import build_probe_script, parse_probe_output
from orchestrator.pi.stack import ToolFacts, describe_stack
from orchestrator.pi.still import build_still_argv
from orchestrator.resolve import RecordChoices, SnapChoices, build_record_settings, build_snap_settings
from orchestrator.settings import CameraSettings, CameraTool, RawFormat, StillSettings, StillTool

PI4 = "Raspberry Pi 4 Model B Rev 1.4"
PI5 = "Raspberry Pi 5 Model B Rev 1.0"
VGA = CameraSettings(width=640, height=480, fps=30, duration_ms=2000, codec="yuv420")


# ------------------------------------------------------------------------------------------ video argv


@pytest.mark.parametrize(
    ("tool", "camera", "expected"),
    [
        # raspividyuv: raspivid's language without the encoder: no -b, -ih, -cd, -g, -lev.
        (CameraTool.RASPIVID, VGA,
         ["raspividyuv", "-o", "-", "-t", "2000", "-w", "640", "-h", "480", "-fps", "30", "-n"]),
        (CameraTool.RASPIVID, CameraSettings(codec="yuv420", vflip=True, hflip=True, bitrate=50_000_000),
         ["raspividyuv", "-o", "-", "-t", "0", "-w", "1920", "-h", "1080", "-fps", "30", "-n", "-vf", "-hf"]),
        (CameraTool.RPICAM_VID, VGA,
         ["rpicam-vid", "-o", "-", "-t", "2000", "--codec", "yuv420", "--width", "640", "--height", "480",
          "--framerate", "30", "-n"]),
        (CameraTool.LIBCAMERA_VID, CameraSettings(codec="yuv420", intra_period=30, vflip=True, duration_ms=1),
         ["libcamera-vid", "-o", "-", "-t", "1", "--codec", "yuv420", "--width", "1920", "--height", "1080",
          "--framerate", "30", "-n", "--vflip"]),
    ],
)
def test_raw_video_argv(tool: CameraTool, camera: CameraSettings, expected: list[str]) -> None:
    assert build_raw_video_argv(camera, tool) == expected
    assert build_camera_argv(camera, tool) == expected  # what record sends


def test_raw_video_is_never_refused_for_the_mjpeg_bitrate_ceiling() -> None:
    check_camera_limits(CameraSettings(codec="yuv420", bitrate=60_000_000), CameraTool.RASPIVID)
    with pytest.raises(UsageError, match="MJPEG ceiling"):
        check_camera_limits(CameraSettings(codec="mjpeg", bitrate=60_000_000), CameraTool.RASPIVID)


# ------------------------------------------------------------------------------------------ video layout


@pytest.mark.parametrize(
    ("tool", "board", "size", "stride", "rows"),
    [
        # raspividyuv: the MMAL port is 32-pixel aligned and 16-row aligned (RaspiVidYUV.c).
        (CameraTool.RASPIVID, None, (640, 480), 640, 480),
        (CameraTool.RASPIVID, PI4, (1920, 1080), 1920, 1088),
        (CameraTool.RASPIVID, None, (1000, 750), 1024, 752),
        # rpicam-vid on a Pi 0-4: bcm2835-isp rows of 64 bytes; no extra rows.
        (CameraTool.RPICAM_VID, PI4, (1000, 750), 1024, 750),
        (CameraTool.RPICAM_VID, PI4, (800, 600), 832, 600),
        (CameraTool.LIBCAMERA_VID, "Raspberry Pi Zero 2 W Rev 1.0", (320, 240), 320, 240),
        # on a Pi 5: PiSP chroma rows of 64, so luma rows of 128.
        (CameraTool.RPICAM_VID, PI5, (800, 600), 896, 600),
        (CameraTool.RPICAM_VID, PI5, (1920, 1080), 1920, 1080),
        # board unknown: a width no Pi pads is fine.
        (CameraTool.RPICAM_VID, None, (1280, 720), 1280, 720),
    ],
)
def test_raw_video_layout(tool: CameraTool, board: str | None, size: tuple[int, int], stride: int,
                          rows: int) -> None:
    width, height = size
    layout = raw_video_layout(CameraSettings(width=width, height=height, fps=25, codec="yuv420"), tool, board)
    assert (layout.pixel_format, layout.stride, layout.rows, layout.fps) == ("yuv420p", stride, rows, 25)
    assert layout.frame_bytes == stride * rows * 3 // 2
    assert layout.full_range is (None if tool.is_legacy else True)


@pytest.mark.parametrize(
    ("tool", "board", "size", "words"),
    [
        (CameraTool.RPICAM_VID, None, (800, 600), "multiple of 128"),
        (CameraTool.RPICAM_VID, "Some other board", (1000, 750), "multiple of 128"),
        (CameraTool.RASPIVID, None, (641, 480), "even width and height"),
        (CameraTool.RPICAM_VID, PI4, (640, 481), "even width and height"),
    ],
)
def test_raw_video_layouts_piorch_cannot_know_are_refused(tool: CameraTool, board: str | None,
                                                          size: tuple[int, int], words: str) -> None:
    with pytest.raises(UsageError, match=words):
        raw_video_layout(CameraSettings(width=size[0], height=size[1], codec="yuv420"), tool, board)


def test_plan_for_raw_video_expects_its_whole_rate() -> None:
    plan = plan_camera(VGA, CameraTool.RPICAM_VID, describe_stack(False, PI4, None), bitrate_given=True)
    assert plan.raw is not None and plan.raw.frame_bytes == 460_800
    assert plan.expected_bps == 460_800 * 8 * 30 == 110_592_000
    assert plan.warnings == ("the bitrate does not apply to raw video (--codec yuv420): nothing is encoded",)


def test_legacy_raw_video_needs_raspividyuv() -> None:
    require_raw_video_tool(CameraTool.RPICAM_VID, {})
    require_raw_video_tool(CameraTool.RASPIVID, {"raspividyuv": "/usr/bin/raspividyuv"})
    with pytest.raises(RemoteError, match=r"raspividyuv .* is not installed") as caught:
        require_raw_video_tool(CameraTool.RASPIVID, {"raspiyuv": "/usr/bin/raspiyuv"})
    assert "libraspberrypi-bin" in caught.value.fix


def test_the_probe_finds_the_legacy_raw_tools() -> None:
    script = build_probe_script()
    assert "raspividyuv" in script and "raspiyuv" in script
    probe = parse_probe_output("piorch-tool raspivid /usr/bin/raspivid\npiorch-tool raspividyuv /usr/bin/raspividyuv\n"
                               "piorch-tool raspiyuv /opt/vc/bin/raspiyuv\npiorch-tool evil /x\npiorch-probe-done\n")
    assert probe.raw_tools == {"raspividyuv": "/usr/bin/raspividyuv", "raspiyuv": "/opt/vc/bin/raspiyuv"}
    assert CameraTool.RASPIVID in probe.tools


# ------------------------------------------------------------------------------------------ stills


STILL = StillSettings(width=640, height=480, settle_ms=500)


@pytest.mark.parametrize(
    ("tool", "fmt", "expected", "camera", "converts"),
    [
        # rpicam-still writes I420 and RGB24 (libcamera's BGR888, bytes R,G,B) without padding.
        (StillTool.RPICAM_STILL, RawFormat.YUV,
         ["rpicam-still", "-o", "-", "--encoding", "yuv420", "-t", "500", "-n", "--width", "640", "--height", "480"],
         ("yuv420p", 640, 480), False),
        (StillTool.RPICAM_STILL, RawFormat.RGB,
         ["rpicam-still", "-o", "-", "--encoding", "rgb", "-t", "500", "-n", "--width", "640", "--height", "480"],
         ("rgb24", 1920, 480), False),
        (StillTool.LIBCAMERA_STILL, RawFormat.BGR,
         ["libcamera-still", "-o", "-", "--encoding", "rgb", "-t", "500", "-n", "--width", "640", "--height",
          "480"], ("rgb24", 1920, 480), True),
        (StillTool.RPICAM_STILL, RawFormat.BGRA,
         ["rpicam-still", "-o", "-", "--encoding", "rgb", "-t", "500", "-n", "--width", "640", "--height", "480"],
         ("rgb24", 1920, 480), True),
        # raspiyuv: no -e; I420 unless -rgb or -bgr; buffers padded to 32 pixels and 16 rows.
        (StillTool.RASPISTILL, RawFormat.YUV,
         ["raspiyuv", "-o", "-", "-t", "500", "-n", "-w", "640", "-h", "480"], ("yuv420p", 640, 480), False),
        (StillTool.RASPISTILL, RawFormat.RGB,
         ["raspiyuv", "-o", "-", "-t", "500", "-n", "-w", "640", "-h", "480", "-rgb"], ("rgb24", 1920, 480), False),
        (StillTool.RASPISTILL, RawFormat.BGR,
         ["raspiyuv", "-o", "-", "-t", "500", "-n", "-w", "640", "-h", "480", "-bgr"], ("bgr24", 1920, 480), False),
        (StillTool.RASPISTILL, RawFormat.RGBA,
         ["raspiyuv", "-o", "-", "-t", "500", "-n", "-w", "640", "-h", "480", "-rgb"], ("rgb24", 1920, 480), True),
    ],
)
def test_raw_still_argv_and_layout(tool: StillTool, fmt: RawFormat, expected: list[str],
                                   camera: tuple[str, int, int], converts: bool) -> None:
    still = StillSettings(image_format=fmt, width=640, height=480, settle_ms=500)
    plan = plan_raw_still(fmt, still, tool)
    assert build_raw_still_argv(still, tool, plan) == expected == build_still_argv(still, tool)
    assert (plan.camera.pixel_format, plan.camera.stride, plan.camera.rows) == camera
    assert plan.converts is converts
    assert plan.output.pixel_format == fmt.pixel_format
    assert plan.output.frame_bytes == {"yuv": 460_800, "rgb": 921_600, "bgr": 921_600, "rgba": 1_228_800,
                                       "bgra": 1_228_800}[fmt.value]


def test_raspiyuv_pads_odd_sizes_and_the_file_keeps_the_padding() -> None:
    still = StillSettings(image_format=RawFormat.YUV, width=1000, height=750, vflip=True)
    plan = plan_raw_still(RawFormat.YUV, still, StillTool.RASPISTILL)
    assert (plan.camera.stride, plan.camera.rows, plan.converts) == (1024, 752, False)
    assert plan.output == plan.camera  # the camera's own bytes, padding and all: the manifest says where
    assert build_still_argv(still, StillTool.RASPISTILL)[-1] == "-vf"
    rgba = plan_raw_still(RawFormat.RGBA, StillSettings(image_format=RawFormat.RGBA, width=1000, height=750),
                          StillTool.RASPISTILL)
    assert (rgba.camera.stride, rgba.output.stride, rgba.output.rows) == (3072, 4000, 750)


def test_resize_makes_a_packed_picture_of_the_new_size() -> None:
    still = StillSettings(image_format=RawFormat.RGB, width=640, height=480, resize=(320, 240))
    plan = plan_raw_still(RawFormat.RGB, still, StillTool.RPICAM_STILL)
    assert plan.converts and (plan.output.width, plan.output.height, plan.output.stride) == (320, 240, 960)


@pytest.mark.parametrize(
    ("fmt", "width", "height", "words"),
    [(RawFormat.RGB, None, None, "needs --width and --height"), (RawFormat.YUV, 641, 480, "even width")],
)
def test_raw_stills_piorch_cannot_describe_are_refused(fmt: RawFormat, width: int | None, height: int | None,
                                                       words: str) -> None:
    with pytest.raises(UsageError, match=words):
        plan_raw_still(fmt, StillSettings(image_format=fmt, width=width, height=height), StillTool.RPICAM_STILL)


def _facts(*options: str) -> ToolFacts:
    return ToolFacts(tool="libcamera-still", options=frozenset(options))


def test_a_libcamera_still_too_old_for_raw_to_stdout_is_refused() -> None:
    check_raw_still_tool(StillTool.LIBCAMERA_STILL, {}, _facts("list-cameras", "buffer-count"))
    check_raw_still_tool(StillTool.LIBCAMERA_STILL, {}, None)  # help not read: not refused on a guess
    with pytest.raises(RemoteError, match=r"older than libcamera-apps 1\.0\.2"):
        check_raw_still_tool(StillTool.LIBCAMERA_STILL, {}, _facts("list-cameras", "width"))
    with pytest.raises(RemoteError, match=r"raspiyuv .* is not installed"):
        check_raw_still_tool(StillTool.RASPISTILL, {"raspividyuv": "/usr/bin/raspividyuv"}, None)
    check_raw_still_tool(StillTool.RASPISTILL, {"raspiyuv": "/usr/bin/raspiyuv"}, None)


# ------------------------------------------------------------------------------------------ the link


ROUTES = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "wlan0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
    "eth0\t0032A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
    "wlan0\t0000A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0\n"
)
SPEEDS = "piorch-speed eth0 100\npiorch-speed lo \npiorch-speed wlan0 \npiorch-speed usb0 -1\n"


@pytest.mark.parametrize(
    ("text", "laptop", "iface", "speed"),
    [
        ("piorch-route 192.168.50.1 dev eth0 src 192.168.50.2 uid 1000 \n" + SPEEDS, "192.168.50.1", "eth0", 100),
        ("piorch-route local 127.0.0.1 dev lo table local src 127.0.0.1 uid 0\n" + SPEEDS, "127.0.0.1", "lo", None),
        ("piorch-route 10.0.0.9 via 192.168.0.1 dev wlan0 src 192.168.0.7\n" + SPEEDS, "10.0.0.9", "wlan0", None),
        # No `ip`: the route table, longest prefix first.
        (SPEEDS + "piorch-routes-begin\n" + ROUTES + "piorch-routes-end\n", "192.168.50.1", "eth0", 100),
        (SPEEDS + "piorch-routes-begin\n" + ROUTES + "piorch-routes-end\n", "8.8.8.8", "wlan0", None),
        (SPEEDS + "piorch-routes-begin\n" + ROUTES + "piorch-routes-end\n", "fe80::1", None, None),
        ("piorch-route \n" + SPEEDS, "192.168.50.1", None, None),
        ("garbage dev\npiorch-speed\n", "192.168.50.1", None, None),
    ],
)
def test_link_report_parsed(text: str, laptop: str, iface: str | None, speed: int | None) -> None:
    report = parse_link_report(text, laptop)
    assert (report.iface, report.speed_mbps) == (iface, speed)


VGA_RAW = RawLayout("yuv420p", 640, 480, 640, 480, 30)  # 110.6 Mbit/s


@pytest.mark.parametrize(
    ("layout", "link", "refuse", "words"),
    [
        (VGA_RAW, LinkReport("eth0", 100), True,
         "raw video at 640x480, 30 fps is 110.6 Mbit/s, more than the Pi's eth0 link carries (100 Mbit/s)"),
        (RawLayout("yuv420p", 640, 480, 640, 480, 25), LinkReport("eth0", 100), False,
         "raw video at 640x480, 25 fps is 92.2 Mbit/s, 92% of the Pi's eth0 link (100 Mbit/s)"),
        (VGA_RAW, LinkReport("eth0", 1000), False, None),
        (VGA_RAW, LinkReport("wlan0", None), False, "the link speed of wlan0 on the Pi could not be read"),
        (VGA_RAW, LinkReport(None, None), False, "the link speed on the Pi could not be read"),
        (VGA_RAW, LinkReport("lo", None), False, None),  # the demo: the laptop itself
        (VGA_RAW, LinkReport("lo", 10), True, "more than the Pi's lo link carries (10 Mbit/s)"),
    ],
)
def test_link_decision(layout: RawLayout, link: LinkReport, refuse: bool, words: str | None) -> None:
    verdict = judge_link(layout, link)
    assert verdict.refuse is refuse
    assert (verdict.message is None) if words is None else (verdict.message is not None and words in verdict.message)


def test_a_refusal_says_what_fits() -> None:
    fix = judge_link(VGA_RAW, LinkReport("eth0", 100)).fix
    assert "--fps 27 or less" in fix and "--codec h264" in fix and "--force" in fix
    huge = RawLayout("yuv420p", 4056, 3040, 4096, 3040, 10)
    assert "--fps" not in judge_link(huge, LinkReport("eth0", 100)).fix  # not even one frame a second fits


def test_link_script_runs_here_and_finds_loopback() -> None:
    result = subprocess.run(["sh", "-c", build_link_script("127.0.0.1")], capture_output=True, text=True, timeout=10)
    report = parse_link_report(result.stdout, "127.0.0.1")
    assert report.iface == "lo" and "lo" in report.speeds


def test_link_script_quotes_a_hostile_address(tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    script = build_link_script(f"1.2.3.4; touch {marker}")
    subprocess.run(["sh", "-c", script], capture_output=True, timeout=10)
    assert not marker.exists()
    assert "%" not in build_link_script("fe80::1%eth0")  # the zone is the laptop's, not the Pi's


# ------------------------------------------------------------------------------------------ the layout itself


def test_layout_sizes_and_manifest() -> None:
    padded = RawLayout("yuv420p", 1920, 1080, 1920, 1088, 30)
    assert padded.padded and padded.frame_bytes == 1920 * 1088 * 3 // 2
    assert RawLayout.packed("bgra", 10, 4).stride == 40 and not RawLayout.packed("bgra", 10, 4).padded
    assert padded.describe() == {"pixel_format": "yuv420p", "width": 1920, "height": 1080, "stride": 1920,
                                 "rows": 1088, "frame_bytes": 3_133_440, "fps": 30}
    assert RawLayout.packed("yuv420p", 4, 2, full_range=True).describe()["color_range"] == "full"
    assert json.dumps(padded.describe())  # plain JSON


def test_the_route_table_fallback_agrees_with_ip_here(tmp_path: Path) -> None:
    with_ip = parse_link_report(subprocess.run(["sh", "-c", build_link_script("8.8.8.8")], capture_output=True,
                                               text=True, timeout=10).stdout, "8.8.8.8")
    if with_ip.iface is None:
        pytest.skip("this machine has no route to 8.8.8.8")
    # A PATH without `ip` (a minimal system): only /proc/net/route is left.
    for tool in ("sh", "cat", "head"):
        (tmp_path / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    table = subprocess.run([str(tmp_path / "sh"), "-c", build_link_script("8.8.8.8")], capture_output=True,
                           text=True, timeout=10, env={"PATH": str(tmp_path)})
    assert "\npiorch-route " not in "\n" + table.stdout and "piorch-routes-begin" in table.stdout
    assert parse_link_report(table.stdout, "8.8.8.8").iface == with_ip.iface


# ------------------------------------------------------------------------------------------ the options


def _config(**flags: object) -> Config:
    return load_config({"pi": "cam1", **flags}, None, {"PIORCH_CONFIG": "/nonexistent/piorch.toml"})


@pytest.mark.parametrize(
    ("choices", "words"),
    [
        (SnapChoices(image_format="rgb"), "--format rgb needs --width and --height"),
        (SnapChoices(image_format="yuv", width=641, height=480), "even width and height (--width/--height 641x480)"),
        (SnapChoices(image_format="yuv", width=640, height=480, resize="321x240"), "even width and height (--resize"),
        (SnapChoices(image_format="jpg", resize="320x240"), "--resize scales raw pictures, not jpg"),
        (SnapChoices(image_format="bgr", width=640, height=480, resize="320"), "not a size"),
        (SnapChoices(image_format="bgr", width=640, height=480, resize="1x240"), "2 to 16384"),
        (SnapChoices(image_format="hsv"), "use jpg, png, bmp or gif, or raw yuv, rgb, bgr, rgba or bgra"),
    ],
)
def test_snap_raw_options_refused(choices: SnapChoices, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        build_snap_settings(_config(), choices)
    assert words in str(caught.value)


def test_snap_raw_options_accepted() -> None:
    settings, _ = build_snap_settings(_config(), SnapChoices(image_format="BGRA", width=640, height=480,
                                                             resize=" 320 x 240 "))
    assert settings.still.image_format is RawFormat.BGRA and settings.still.resize == (320, 240)


@pytest.mark.parametrize(
    ("choices", "words"),
    [
        (RecordChoices(codec="yuv420", keep_raw=True), "the raw .yuv is always kept"),
        (RecordChoices(codec="yuv420", view=True), "--view plays H.264 or MJPEG"),
        (RecordChoices(codec="yuv420", segment_s=5), "--segment cuts H.264"),
        (RecordChoices(codec="i420"), "use h264, mjpeg or yuv420"),
    ],
)
def test_record_raw_options_refused(choices: RecordChoices, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        build_record_settings(_config(), choices)
    assert words in str(caught.value)


# ------------------------------------------------------------------------------------------ the tools' own parsers


@pytest.mark.parametrize("tool", [StillTool.RASPISTILL, StillTool.RPICAM_STILL, StillTool.LIBCAMERA_STILL])
@pytest.mark.parametrize("fmt", list(RawFormat))
def test_raw_still_argv_is_accepted_by_the_tools_own_option_language(tool: StillTool, fmt: RawFormat) -> None:
    from orchestrator.sim import still_options

    still = StillSettings(fmt, 800, 600, vflip=True, hflip=True, settle_ms=1500)
    argv = build_still_argv(still, tool)
    parsed = still_options.parse_still_args(argv[0], argv[1:])
    tool_format = plan_raw_still(fmt, still, tool).tool_format
    encoding = ({"yuv": "i420", "rgb": "rgb24", "bgr": "bgr24"} if tool.is_legacy else
                {"yuv": "yuv420", "rgb": "rgb24"})[tool_format.value]
    assert (parsed.encoding, parsed.output, parsed.timeout_ms) == (encoding, "-", 1500)
    assert (parsed.width, parsed.height, parsed.vflip, parsed.hflip, parsed.nopreview) == (800, 600, True, True, True)


@pytest.mark.parametrize("tool", [CameraTool.RASPIVID, CameraTool.RPICAM_VID, CameraTool.LIBCAMERA_VID])
def test_raw_video_argv_is_accepted_by_the_tools_own_option_language(tool: CameraTool) -> None:
    from orchestrator.sim.options import parse_args

    camera = CameraSettings(width=800, height=600, fps=20, duration_ms=1500, codec="yuv420", vflip=True)
    argv = build_camera_argv(camera, tool)
    parsed = parse_args(argv[0], argv[1:])
    assert (parsed.codec, parsed.output, parsed.timeout_ms) == ("i420" if tool.is_legacy else "yuv420", "-", 1500)
    assert (parsed.width, parsed.height, parsed.framerate, parsed.vflip) == (800, 600, 20, True)
