"""Tables for what piorch learns about the Pi's camera stack and what it decides from it (issue 11).

The tool's own words (`--version`, `--help`), the board's device-tree model, and from those: the H.264 encoder,
the options each build gets, the limits said before the camera starts, the refusals.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.errors import RemoteError, UsageError
from orchestrator.jobs.doctor import Status, judge_camera_stack
from orchestrator.pi.camera import (
    EncoderOptions,
    build_camera_argv,
    check_camera_limits,
    macroblocks_per_second,
    plan_camera,
)
from orchestrator.pi.capture import camera_stack, describe_tools
from orchestrator.pi.scripts import build_probe_script, parse_probe_output
from orchestrator.pi.stack import (
    BoardFamily,
    CameraStack,
    H264Encoder,
    ToolFacts,
    board_family,
    describe_stack,
    h264_encoder,
    parse_help_options,
    parse_tool_version,
)
from orchestrator.pi.still import check_still_to_stdout
from orchestrator.resolve import duration_ms
from orchestrator.settings import CameraSettings, CameraTool, StillTool

PI5 = "Raspberry Pi 5 Model B Rev 1.0"
PI4 = "Raspberry Pi 4 Model B Rev 1.4"


def boost_help(*names: str) -> str:
    """A `--help` listing in boost::program_options' layout, abridged to the given long options."""
    lines = ["Valid options are:", "  -h [ --help ] [=arg(=1)] (=0)         Print this help message"]
    for name in names:
        lines.append(f"  --{name} arg                           Sets {name}.")
        # A wrapped description: indented far more, and may well mention another option.
        lines.append("                                        See also --not-an-option for details.")
    return "\n".join(lines) + "\n"


# Long options of real builds that matter here (core/video_options.hpp at each tag).
BASE = ("timeout", "codec", "bitrate", "width", "height", "framerate", "inline", "intra", "list-cameras")
LIBAV_1_4 = (*BASE, "libav-video-codec", "libav-format", "libav-audio")  # a libav build before 1.6
LIBAV_1_13 = (*LIBAV_1_4, "low-latency")


def facts(options: tuple[str, ...] = LIBAV_1_13, libav: bool | None = True,
          version: tuple[int, int, int] | None = (1, 13, 0), tool: str = "rpicam-vid") -> ToolFacts:
    return ToolFacts(tool=tool, build=None if version is None else "v" + ".".join(map(str, version)),
                     version=version, libav_capability=libav, options=frozenset(options))


# -- what the tool says --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "build", "version", "libav"),
    [
        ("rpicam-apps build: v1.13.0 6fcb0a381071 07-08-2026 (09:11:11)\n"
         "rpicam-apps capabilites: egl:1 qt:1 drm:1 libav:1\nlibcamera build: v0.5.0+59-d83ff0a4\n",
         "v1.13.0 6fcb0a381071 07-08-2026 (09:11:11)", (1, 13, 0), True),
        # rpicam-apps-lite from 1.5.3 on says so itself.
        ("rpicam-apps build: v1.9.0 eca9928b76c1 03-09-2025 (11:12:24)\n"
         "rpicam-apps capabilites: egl:0 qt:0 drm:1 libav:0\n", "v1.9.0 eca9928b76c1 03-09-2025 (11:12:24)",
         (1, 9, 0), False),
        # Before 1.5.2: a commit and the build date, no version number; no capabilities line.
        ("rpicam-apps build: 9ae39f85ae6b 30-01-2024 (10:23:29)\nlibcamera build: v0.2.0+46-075b54d5\n",
         "9ae39f85ae6b 30-01-2024 (10:23:29)", None, None),
        ("libcamera-apps build: 7e4d3d71867f 11-07-2023 (10:42:39)\n", "7e4d3d71867f 11-07-2023 (10:42:39)", None,
         None),
        # Spelled right, should a release ever fix it.
        ("rpicam-apps build: v2.0.0 x\nrpicam-apps capabilities: libav:1\n", "v2.0.0 x", (2, 0, 0), True),
        # Not the tool piorch expects.
        ("sh: 1: rpicam-vid: not found\n", None, None, None),
        ("", None, None, None),
        # Hostile: escapes dropped, length capped, a trailing `libav:1x` is no capability.
        ("rpicam-apps build: v1.2.3\x1b[31m; rm -rf /\nrpicam-apps capabilites: libav:1x\n", "v1.2.3[31m; rm -rf /",
         (1, 2, 3), None),
        ("rpicam-apps build: " + "v" * 500, "v" * 120, None, None),
    ],
)
def test_tool_version(text: str, build: str | None, version: tuple[int, int, int] | None, libav: bool | None) -> None:
    assert parse_tool_version(text) == (build, version, libav)


def test_help_options_are_the_listed_long_names_only() -> None:
    text = boost_help("libav-format", "low-latency") + "  -t [ --timeout ] arg (=5sec)   Time\n  --width arg (=0)\n"
    assert parse_help_options(text) == {"help", "libav-format", "low-latency", "timeout", "width"}
    # Wrapped descriptions, captions, the simulator's footer and shell noise name no option.
    assert parse_help_options("Valid options are:\n          --deep-indent\nERROR: --bogus\n--flush\n") == set()
    assert parse_help_options("") == set()


@pytest.mark.parametrize(
    ("model", "family"),
    [
        (PI5, BoardFamily.PISP), ("Raspberry Pi 500 Rev 1.0", BoardFamily.PISP),
        ("Raspberry Pi Compute Module 5 Rev 1.0", BoardFamily.PISP),
        (PI4, BoardFamily.VC4), ("Raspberry Pi 400 Rev 1.0", BoardFamily.VC4),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", BoardFamily.VC4), ("Raspberry Pi Zero 2 W Rev 1.0", BoardFamily.VC4),
        ("Raspberry Pi Model B Plus Rev 1.2", BoardFamily.VC4),
        ("Raspberry Pi Compute Module 4 Rev 1.0", BoardFamily.VC4),
        ("Raspberry Pi Compute Module Rev 1.0", BoardFamily.VC4),
        ("Raspberry Pi 6 Model B", None), ("Raspberry Pi 50", None), ("Hardkernel ODROID-C4", None), ("", None),
        (None, None),
    ],
)
def test_board_family(model: str | None, family: BoardFamily | None) -> None:
    assert board_family(model) is family


@pytest.mark.parametrize(
    ("legacy", "board", "tool_facts", "encoder"),
    [
        (True, None, None, H264Encoder.HARDWARE),  # raspivid: the firmware encoder, on any board
        (False, PI4, facts(), H264Encoder.HARDWARE),
        (False, PI4, facts(BASE, libav=False), H264Encoder.HARDWARE),  # lite on a Pi 4 records H.264 fine
        (False, PI5, facts(), H264Encoder.SOFTWARE),
        (False, PI5, facts(BASE, libav=False), H264Encoder.NONE),  # rpicam-apps-lite on a Pi 5
        # Before the capabilities line: libav options in --help only in libav builds (up to 1.8.0).
        (False, PI5, facts(LIBAV_1_4, libav=None, version=None), H264Encoder.SOFTWARE),
        (False, PI5, facts(BASE, libav=None, version=None), H264Encoder.NONE),
        (False, PI5, facts((), libav=None, version=None), H264Encoder.UNKNOWN),  # answers unreadable
        (False, PI5, None, H264Encoder.UNKNOWN),
        (False, None, facts(), H264Encoder.UNKNOWN),  # board unreadable: the tool's own failure will say
    ],
)
def test_h264_encoder(legacy: bool, board: str | None, tool_facts: ToolFacts | None, encoder: H264Encoder) -> None:
    assert h264_encoder(legacy, board, tool_facts) is encoder


# -- the probe -----------------------------------------------------------------------------------------------

def probe_text(board: str | None, version: str, help_text: str, tool: str = "rpicam-vid") -> str:
    lines = [f"piorch-tool {tool} /usr/bin/{tool}", "piorch-nc-begin", "OpenBSD netcat (Debian patchlevel 1.219-1)",
             "piorch-nc-end", "piorch-setsid", f"piorch-about {tool}", "piorch-version-begin", version, "",
             "piorch-version-end", "piorch-help-begin", help_text, "", "piorch-help-end"]
    if board is not None:
        lines.append(f"piorch-board {board}")
    return "\n".join([*lines, "piorch-probe-done"]) + "\n"


def test_probe_output_carries_board_and_tool_facts() -> None:
    probe = parse_probe_output(probe_text(PI5, "rpicam-apps build: v1.13.0 6fcb0a381071 07-08-2026 (09:11:11)\n"
                                               "rpicam-apps capabilites: egl:1 qt:1 drm:1 libav:1",
                                          boost_help(*LIBAV_1_13)))
    assert probe.complete and probe.board == PI5 and probe.tools == {CameraTool.RPICAM_VID: "/usr/bin/rpicam-vid"}
    assert probe.tool_facts is not None and probe.tool_facts.version == (1, 13, 0)
    assert {"libav-format", "low-latency"} <= probe.tool_facts.options
    stack = camera_stack(probe, CameraTool.RPICAM_VID)
    assert stack.encoder is H264Encoder.SOFTWARE and stack.tool_version == "1.13.0"
    # Facts of another tool than the one chosen are not this tool's.
    assert camera_stack(probe, CameraTool.LIBCAMERA_VID).facts is None


def test_probe_output_hostile() -> None:
    # A help text that prints the probe's own marks stays inside its block; a board name stays on one line,
    # printable and capped.
    text = probe_text("Raspberry Pi 5\x07" + "x" * 300, "rpicam-apps build: v1.6.0 x",
                      "piorch-probe-done\npiorch-board Raspberry Pi 4 Model B\npiorch-tool raspivid /evil")
    probe = parse_probe_output(text)
    assert probe.board is not None and probe.board.startswith("Raspberry Pi 5x") and len(probe.board) == 120
    assert CameraTool.RASPIVID not in probe.tools
    unfinished = parse_probe_output(text.replace("piorch-help-end\n", ""))
    assert not unfinished.complete  # a help block that never ends: the probe is not trusted
    assert parse_probe_output("piorch-about rm -rf /\npiorch-probe-done\n").tool_facts is None


@pytest.mark.parametrize(
    ("wanted", "described"),
    [(CameraTool.AUTO, ("rpicam-vid", "libcamera-vid")), (CameraTool.LIBCAMERA_VID, ("libcamera-vid",)),
     (CameraTool.RASPIVID, ()), (StillTool.AUTO, ("rpicam-still", "libcamera-still")),
     (StillTool.RASPISTILL, ())],
)
def test_which_tool_is_asked_about_itself(wanted: CameraTool | StillTool, described: tuple[str, ...]) -> None:
    assert describe_tools(wanted) == described
    script = build_probe_script(described)
    assert ("--version" in script) is bool(described) and "raspivid --help" not in script


def test_probe_script_ignores_names_that_are_not_tools() -> None:
    assert build_probe_script(["rm -rf /", "raspivid"]) == build_probe_script()


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_probe_script_asks_the_tool_and_reads_the_board(tmp_path: Path, shell: str) -> None:
    """The real script, in dash and bash, with a stand-in rpicam-vid and a device tree of a Pi 5 (a private
    mount namespace puts one at /sys/firmware/devicetree, where a Pi has it)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -m (root) to give the probe a device tree")
    tool = tmp_path / "rpicam-vid"
    tool.write_text("#!/bin/sh\ncase \"$1\" in --version) echo 'rpicam-apps build: v1.4.2 x';;\n"
                    f"--help) cat <<'EOF'\n{boost_help(*LIBAV_1_4)}EOF\n;; *) exit 1;; esac\n")
    tool.chmod(0o755)
    model = tmp_path / "model"
    model.write_bytes(PI5.encode() + b"\0")
    fake_tree = (f"mount -t tmpfs piorch-test /sys/firmware && mkdir -p /sys/firmware/devicetree/base && "
                 f"cp {model} /sys/firmware/devicetree/base/model && ")
    script = build_probe_script(describe_tools(CameraTool.AUTO))
    result = subprocess.run(["unshare", "-m", shell, "-c", fake_tree + f"PATH={tmp_path}:$PATH; " + script],
                            capture_output=True, text=True, timeout=30)
    probe = parse_probe_output(result.stdout)
    assert probe.complete, result.stderr
    assert probe.board == PI5
    assert probe.tool_facts == ToolFacts("rpicam-vid", "v1.4.2 x", (1, 4, 2), None, frozenset({"help", *LIBAV_1_4}))


# -- what piorch sends, and what it refuses ------------------------------------------------------------------

H264 = CameraSettings(duration_ms=5000)
MJPEG = CameraSettings(duration_ms=5000, codec="mjpeg", width=1280, height=720, fps=30)


def stack(board: str | None, tool_facts: ToolFacts | None, legacy: bool = False) -> CameraStack:
    return describe_stack(legacy, board, tool_facts)


@pytest.mark.parametrize(
    ("board", "tool_facts", "options", "warned"),
    [
        # Pi 4: the hardware encoder, nothing extra.
        (PI4, facts(), EncoderOptions(), False),
        # Pi 5, rpicam-apps 1.6 or later: --libav-format for the pipe, --low-latency for no B-frames.
        (PI5, facts(), EncoderOptions(libav_format=True, low_latency=True), False),
        # Pi 5 with 1.4/1.5: no --low-latency to send (it would be refused); B-frames, said as a warning.
        (PI5, facts(LIBAV_1_4, libav=None, version=None), EncoderOptions(libav_format=True), True),
        # Board unknown: what the tool lists is sent (libav ignores nothing it is given, the hardware encoder
        # never reads these options).
        (None, facts(), EncoderOptions(libav_format=True, low_latency=True), False),
        (None, facts(BASE, libav=False), EncoderOptions(), False),
    ],
)
def test_plan_h264(board: str | None, tool_facts: ToolFacts, options: EncoderOptions, warned: bool) -> None:
    plan = plan_camera(H264, CameraTool.RPICAM_VID, stack(board, tool_facts))
    assert plan.options == options and bool(plan.warnings) is warned
    assert plan.expected_bps == H264.bitrate
    if warned:
        assert "--low-latency" in plan.warnings[0] and "B-frames" in plan.warnings[0]


def test_pi5_lite_is_refused_with_the_fix() -> None:
    with pytest.raises(RemoteError) as caught:
        plan_camera(H264, CameraTool.RPICAM_VID, stack(PI5, facts(BASE, libav=False)))
    text = str(caught.value)
    assert "cannot record H.264" in text and "rpicam-apps-lite" in text
    assert "sudo apt install rpicam-apps" in text and "--codec mjpeg" in text and "\n" not in text
    # MJPEG is the way out on that very Pi.
    plan = plan_camera(MJPEG, CameraTool.RPICAM_VID, stack(PI5, facts(BASE, libav=False)))
    assert plan.options == EncoderOptions()


def test_pi5_libav_without_libav_format_is_refused() -> None:
    with pytest.raises(RemoteError, match="lists no --libav-format"):
        plan_camera(H264, CameraTool.RPICAM_VID, stack(PI5, facts(("libav-video-codec",), libav=True)))


def test_raspivid_plan_is_hardware_and_plain() -> None:
    legacy = stack(None, None, legacy=True)
    plan = plan_camera(CameraSettings(bitrate=40_000_000), CameraTool.RASPIVID, legacy)
    assert legacy.encoder is H264Encoder.HARDWARE and plan.options == EncoderOptions() and not plan.warnings


def test_mjpeg_bitrate_is_what_mjpeg_sends() -> None:
    rpicam = plan_camera(MJPEG, CameraTool.RPICAM_VID, stack(PI4, facts()), bitrate_given=True)
    # 1280 x 720 x 30 fps at 1.5 bits a pixel, not the 16 Mbit/s asked for.
    assert rpicam.expected_bps == 41_472_000
    assert "ignores the bitrate" in rpicam.warnings[0] and "41 Mbit/s" in rpicam.warnings[0]
    assert not plan_camera(MJPEG, CameraTool.RPICAM_VID, stack(PI4, facts())).warnings  # nothing asked, no word
    # raspivid's MJPEG is rate-controlled: the bitrate is what it sends.
    legacy = plan_camera(MJPEG, CameraTool.RASPIVID, stack(None, None, legacy=True), bitrate_given=True)
    assert legacy.expected_bps == MJPEG.bitrate and not legacy.warnings
    assert "-b" not in build_camera_argv(MJPEG, CameraTool.RPICAM_VID, rpicam.options)


@pytest.mark.parametrize(
    ("camera", "tool", "words"),
    [
        (CameraSettings(width=1920, height=1080, fps=120), CameraTool.RASPIVID, "979,200 macroblocks/s"),
        (CameraSettings(width=1920, height=1080, fps=65), CameraTool.RASPIVID, "--fps 64 or less"),
        (CameraSettings(codec="mjpeg", bitrate=25_000_001), CameraTool.RASPIVID, "MJPEG ceiling of 25 Mbit/s"),
    ],
)
def test_raspivid_limits_refused(camera: CameraSettings, tool: CameraTool, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_camera_limits(camera, tool)
    assert words in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("camera", "tool"),
    [
        (CameraSettings(width=1920, height=1080, fps=64), CameraTool.RASPIVID),  # exactly 522,240
        (CameraSettings(width=640, height=480, fps=120), CameraTool.RASPIVID),
        (CameraSettings(codec="mjpeg", width=1920, height=1080, fps=120, bitrate=25_000_000), CameraTool.RASPIVID),
        (CameraSettings(bitrate=62_500_000), CameraTool.RASPIVID),  # sent with -lev 4.2
        (CameraSettings(width=1920, height=1080, fps=120), CameraTool.RPICAM_VID),  # rpicam-vid raises the level
    ],
)
def test_within_limits(camera: CameraSettings, tool: CameraTool) -> None:
    check_camera_limits(camera, tool)


def test_macroblocks_round_up() -> None:
    assert macroblocks_per_second(1920, 1080, 1) == 120 * 68  # 1080 rows are 68 macroblocks (1088)
    assert macroblocks_per_second(1920, 1080, 64) == 522_240


# -- durations, stills ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("minutes", "seconds", "expected"),
    [(None, None, 0), (None, 0.0, 0), (None, 0.001, 1), (None, 0.0006, 1), (None, 2.5, 2500), (0.5, None, 30_000)],
)
def test_durations_the_tools_can_express(minutes: float | None, seconds: float | None, expected: int) -> None:
    assert duration_ms(minutes, seconds) == expected


@pytest.mark.parametrize(("minutes", "seconds", "words"),
                         [(None, 0.0004, "--seconds 0.0004"), (None, 0.0005, "--seconds 0.0005"),
                          (0.000001, None, "--minutes 1e-06")])
def test_durations_that_would_be_minus_t_0_are_refused(minutes: float | None, seconds: float | None,
                                                       words: str) -> None:
    with pytest.raises(UsageError) as caught:
        duration_ms(minutes, seconds)
    assert words in caught.value.message and "under a millisecond" in caught.value.message


@pytest.mark.parametrize(
    ("tool", "options", "refused"),
    [
        (StillTool.LIBCAMERA_STILL, ("timeout", "encoding"), True),  # before Nov 2021: `-o -` is a file named '-'
        (StillTool.LIBCAMERA_STILL, ("timeout", "encoding", "list-cameras"), False),
        (StillTool.RPICAM_STILL, ("timeout", "list-cameras"), False),
        (StillTool.LIBCAMERA_STILL, (), False),  # help unreadable: not refused on a guess
        (StillTool.RASPISTILL, (), False),
    ],
)
def test_stills_to_stdout_need_a_november_2021_build(tool: StillTool, options: tuple[str, ...], refused: bool) -> None:
    tool_facts = ToolFacts(tool=tool.value, options=frozenset(options))
    if refused:
        with pytest.raises(RemoteError, match="older than November 2021"):
            check_still_to_stdout(tool, tool_facts)
    else:
        check_still_to_stdout(tool, tool_facts)


# -- doctor --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("tool", "board", "tool_facts", "status", "words"),
    [
        (CameraTool.RASPIVID, PI4, None, Status.PASS, f"{PI4}; legacy stack, raspivid; H.264 in hardware"),
        (CameraTool.RPICAM_VID, PI4, facts(), Status.PASS,
         f"{PI4}; libcamera stack, rpicam-vid 1.13.0; H.264 in hardware (VideoCore)"),
        (CameraTool.RPICAM_VID, PI5, facts(), Status.PASS,
         f"{PI5}; libcamera stack, rpicam-vid 1.13.0; H.264 in software (libx264 through libav), no B-frames"),
        (CameraTool.RPICAM_VID, PI5, facts(LIBAV_1_4, libav=None, version=None), Status.WARN, "makes B-frames"),
        (CameraTool.RPICAM_VID, PI5, facts(BASE, libav=False, version=(1, 9, 0)), Status.FAIL,
         f"{PI5}; libcamera stack, rpicam-vid 1.9.0; no H.264 encoder: rpicam-vid on the {PI5} cannot record H.264"),
        (CameraTool.RPICAM_VID, None, facts(), Status.PASS, "board unknown; libcamera stack, rpicam-vid 1.13.0; "
                                                            "H.264 hardware or software unknown"),
        (CameraTool.LIBCAMERA_VID, None, None, Status.PASS, "libcamera-vid (no version)"),
    ],
)
def test_doctor_reports_the_stack(tool: CameraTool, board: str | None, tool_facts: ToolFacts | None, status: Status,
                                  words: str) -> None:
    check = judge_camera_stack(tool, stack(board, tool_facts, legacy=tool.is_legacy))
    assert check.name == "camera-stack" and check.status is status and words in check.detail
    if status is Status.FAIL:
        assert "sudo apt install rpicam-apps" in check.fix and "--codec mjpeg" in check.fix
    assert judge_camera_stack(None, None).status is Status.SKIP
