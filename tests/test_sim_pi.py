"""The simulated Pi's profiles, pure: which Pi the environment describes, which tools and options each release
and build has, what --version says, which encoder each Pi sets up and how each one refuses.

Every expected message below was checked against the real sources: raspberrypi/rpicam-apps at the release
named in the case (encoder/encoder.cpp, encoder/libav_encoder.cpp, core/*options*, utils/version.py,
apps/meson.build), raspberrypi/userland (RaspiVid.c, RaspiCamControl.c) and FFmpeg's libavformat/mux.c.
The subprocess runs are in test_sim_pi_runs.py.
"""

from __future__ import annotations

import pytest

from orchestrator.sim.boost_cli import Kind, option_table, parse_version
from orchestrator.sim.encoders import Encoder, Encoding, Refusal, choose_raspivid_encoding, choose_rpicam_encoding
from orchestrator.sim.h264 import (
    BFRAMES_CLIP_PATH,
    CLIP_PATH,
    build_frame_plan,
    nal_type,
    slice_type,
    split_access_units,
    split_nal_units,
)
from orchestrator.sim.options import (
    SimUsageError,
    legacy_run_ms,
    parse_legacy_args,
    parse_rpicam_args,
)
from orchestrator.sim.profile import RELEASES, Board, Build, PiProfile, build_version_text, profile_from_env
from orchestrator.sim.runtime import Fault, parse_fault

PI4 = PiProfile()
PI5 = PiProfile(Board.PI5)
PI5_LITE = PiProfile(Board.PI5, Build.LITE)


def pinned(board: str, build: str, version: str) -> PiProfile:
    return profile_from_env({"PIORCH_SIM_BOARD": board, "PIORCH_SIM_BUILD": build, "PIORCH_SIM_VERSION": version})


# ----------------------------------------------------------------------------------------------- profiles


def test_profile_defaults_are_the_simulator_as_it_was() -> None:
    assert profile_from_env({}) == PiProfile(Board.PI4, Build.FULL, (1, 13, 0), pinned=False)
    assert all(PI4.has_tool(tool) for tool in ("raspivid", "libcamera-vid", "rpicam-vid", "raspistill"))
    assert pinned("pi5", "lite", "1.5.0") == PiProfile(Board.PI5, Build.LITE, (1, 5, 0), pinned=True)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PIORCH_SIM_BOARD": "pi3"}, "PIORCH_SIM_BOARD='pi3': expected pi4 or pi5"),
        ({"PIORCH_SIM_BUILD": "tiny"}, "PIORCH_SIM_BUILD='tiny': expected full or lite"),
        ({"PIORCH_SIM_VERSION": "1.13"}, "PIORCH_SIM_VERSION: not a release number like 1.13.0: '1.13'"),
        ({"PIORCH_SIM_VERSION": "1.5.4"}, "PIORCH_SIM_VERSION=1.5.4: not an rpicam-apps release (known: 1.0.0,"),
        ({"PIORCH_SIM_BOARD": "pi5", "PIORCH_SIM_VERSION": "1.2.1"},
         "PIORCH_SIM_BOARD=pi5 with PIORCH_SIM_VERSION=1.2.1"),
    ],
)
def test_profile_refuses_a_pi_that_never_existed(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        profile_from_env(env)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("board", "version", "present"),
    [
        # apps/meson.build: rpicam-* from 1.4.0 with libcamera-* symlinks, which 1.8.0 removed
        ("pi4", "1.3.0", {"raspivid", "raspistill", "libcamera-vid", "libcamera-still"}),
        ("pi4", "1.4.0", {"raspivid", "raspistill", "libcamera-vid", "libcamera-still", "rpicam-vid", "rpicam-still"}),
        ("pi4", "1.7.0", {"raspivid", "raspistill", "libcamera-vid", "libcamera-still", "rpicam-vid", "rpicam-still"}),
        ("pi4", "1.8.0", {"raspivid", "raspistill", "rpicam-vid", "rpicam-still"}),
        ("pi5", "1.2.2", {"libcamera-vid", "libcamera-still"}),  # no MMAL on a Pi 5: no raspivid
        ("pi5", "1.13.0", {"rpicam-vid", "rpicam-still"}),
    ],
)
def test_tool_names_follow_the_release(board: str, version: str, present: set[str]) -> None:
    tools = ("raspivid", "raspistill", "libcamera-vid", "libcamera-still", "rpicam-vid", "rpicam-still")
    pi = pinned(board, "full", version)
    assert {tool for tool in tools if pi.has_tool(tool)} == present


@pytest.mark.parametrize(
    ("pi", "expected"),
    [
        # utils/version.py before 1.5.2: the commit and the build date only; "libcamera-apps" before 1.4.0
        (pinned("pi4", "full", "1.2.1"), "libcamera-apps build: 7e4d3d71867f 11-07-2023 (10:42:39)\n"),
        (pinned("pi4", "full", "1.4.2"), "rpicam-apps build: 9ae39f85ae6b 30-01-2024 (10:23:29)\n"),
        # 1.5.2: "v<release> <commit> <date>"; 1.5.3 adds the capabilities line (sic: "capabilites")
        (pinned("pi4", "full", "1.5.2"), "rpicam-apps build: v1.5.2 a8ccf9f3cd9d 28-09-2024 (09:17:27)\n"),
        (pinned("pi5", "full", "1.13.0"), "rpicam-apps build: v1.13.0 6fcb0a381071 07-08-2026 (09:11:11)\n"
                                          "rpicam-apps capabilites: egl:1 qt:1 drm:1 libav:1\n"),
        (pinned("pi5", "lite", "1.6.0"), "rpicam-apps build: v1.6.0 025ca84648c9 27-01-2025 (14:31:36)\n"
                                         "rpicam-apps capabilites: egl:0 qt:0 drm:1 libav:0\n"),
    ],
)
def test_version_text(pi: PiProfile, expected: str) -> None:
    assert build_version_text(pi) == expected + "libcamera build: v0.3.0+piorch-simulator\n"


def test_every_release_is_known() -> None:
    assert len(RELEASES) == 31 and min(RELEASES) == (1, 0, 0) and max(RELEASES) == (1, 13, 0)
    assert parse_version("1.10.1") == (1, 10, 1)


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("ignore-term", Fault(ignore_term=True)),
        ("ignore-term,crash-after=5", Fault(crash_after=5, ignore_term=True)),
        ("no-camera,ignore-term", Fault(no_camera=True, ignore_term=True)),
    ],
)
def test_parse_fault_combinations(text: str, fault: Fault) -> None:
    assert parse_fault(text) == fault


# ----------------------------------------------------------------------------------------- option tables


def _names(app: str, version: str, libav: bool) -> set[str]:
    return {option.long for option in option_table(app, parse_version(version), libav)}


@pytest.mark.parametrize(
    ("version", "libav", "has_format", "has_low_latency"),
    [
        ("1.0.0", True, True, False),  # --libav-format came with the libav encoder itself (2022)
        ("1.0.0", False, False, False),  # ... inside #if LIBAV_PRESENT
        ("1.5.3", True, True, False),
        ("1.6.0", True, True, True),  # --low-latency: rpicam-apps 1.6.0
        ("1.6.0", False, False, False),
        ("1.8.0", False, False, False),
        ("1.8.1", False, True, True),  # the encoder became a loadable library: every build has the options
        ("1.13.0", False, True, True),
    ],
)
def test_libav_options_by_release_and_build(version: str, libav: bool, has_format: bool, has_low_latency: bool) -> None:
    names = _names("video", version, libav)
    assert ("libav-format" in names, "low-latency" in names) == (has_format, has_low_latency)


def test_option_types_changed_with_the_releases() -> None:
    old = {option.long: option for option in option_table("video", (1, 2, 1))}
    new = {option.long: option for option in option_table("video", (1, 2, 2))}
    assert (old["timeout"].ctype, new["timeout"].ctype) == ("uint", "str")  # -t 10s from 1.2.2 on
    assert (old["bitrate"].ctype, new["bitrate"].ctype) == ("uint", "str")  # -b 10mbps likewise
    hdr = {version: {o.long: o for o in option_table("video", version)}["hdr"] for version in ((1, 2, 2), (1, 3, 0))}
    assert (hdr[(1, 2, 2)].kind, hdr[(1, 3, 0)].kind, hdr[(1, 3, 0)].implicit) == (Kind.FLAG, Kind.IMPLICIT, "auto")
    assert "zsl" not in _names("still", "1.2.2", True) and "zsl" in _names("still", "1.3.0", True)
    assert "rawfull" in _names("still", "1.2.2", True) and "rawfull" not in _names("still", "1.3.0", True)


@pytest.mark.parametrize(
    ("pi", "args", "message"),
    [
        (pinned("pi5", "lite", "1.5.0"), ["--libav-format", "h264"], "unrecognised option '--libav-format'"),
        (pinned("pi5", "full", "1.5.0"), ["--low-latency"], "unrecognised option '--low-latency'"),
        (pinned("pi4", "full", "1.2.1"), ["-t", "10s"], "the argument ('10s') for option '-t' is invalid"),
        (pinned("pi4", "full", "1.2.1"), ["-b", "10mbps"], "the argument ('10mbps') for option '-b' is invalid"),
        (pinned("pi4", "full", "1.13.0"), ["--lowlatency"], "unrecognised option '--lowlatency'"),
    ],
)
def test_options_a_release_did_not_have_are_refused(pi: PiProfile, args: list[str], message: str) -> None:
    with pytest.raises(SimUsageError) as caught:
        parse_rpicam_args(args, pi=pi)
    assert caught.value.message == message


def test_old_releases_read_plain_milliseconds_and_bits() -> None:
    options = parse_rpicam_args(["-t", "1500", "-b", "8000000"], pi=pinned("pi4", "full", "1.2.1"))
    assert (options.timeout_ms, options.bitrate) == (1500, 8_000_000)


def test_help_comes_before_time_strings_from_1_8_0() -> None:
    # core/options.cpp: Options::Parse checks --help before timeout.set() from 1.8.0, after it before
    assert parse_rpicam_args(["-t", "soon", "-h"], pi=pinned("pi4", "full", "1.8.0")).show_help
    with pytest.raises(SimUsageError, match="Invalid time string provided"):
        parse_rpicam_args(["-t", "soon", "-h"], pi=pinned("pi4", "full", "1.7.0"))


# ---------------------------------------------------------------------------------- encoders, rpicam-vid


def _rpicam(pi: PiProfile, *args: str) -> Encoding | Refusal:
    return choose_rpicam_encoding(parse_rpicam_args(list(args), pi=pi), pi)


FORMAT_ERROR = "ERROR: *** libav: cannot allocate output context, try setting with --libav-format ***"


@pytest.mark.parametrize(
    ("pi", "args", "lines"),
    [
        # FFmpeg 7.1 (Trixie) names the file it cannot guess a format for, then rpicam-vid's exception
        (PI5, ["-o", "-"], ("[NULL @ 0x5581e0c2f4c0] Unable to choose an output format for '-'; use a standard "
                            "extension for the filename or specify the format manually.", FORMAT_ERROR)),
        (PI5, ["-o", "/tmp/fifo"], ("[NULL @ 0x5581e0c2f4c0] Unable to choose an output format for '/tmp/fifo'; use "
                                    "a standard extension for the filename or specify the format manually.",
                                    FORMAT_ERROR)),
        # FFmpeg 5.1 (Bookworm) words it differently
        (pinned("pi5", "full", "1.5.0"), ["-o", "-"],
         ("[NULL @ 0x5581e0c2f4c0] Unable to find a suitable output format for '-'", FORMAT_ERROR)),
        (pinned("pi5", "full", "1.4.1"), ["-o", "-"],  # before 1.4.2 the message had no advice
         ("[NULL @ 0x5581e0c2f4c0] Unable to find a suitable output format for '-'",
          "ERROR: *** libav: cannot allocate output context ***")),
        (PI5, ["--libav-format", "raw264", "-o", "-"],
         ("[NULL @ 0x5581e0c2f4c0] Requested output format 'raw264' is not known.", FORMAT_ERROR)),
        (PI5_LITE, ["-o", "-"], ("ERROR: *** Unable to find an appropriate H.264 codec ***",)),
        (PI5_LITE, ["--libav-format", "h264", "-o", "-"],
         ("ERROR: *** Unable to find an appropriate H.264 codec ***",)),
        (PiProfile(build=Build.LITE), ["--codec", "libav", "-o", "-"], ("ERROR: *** Unrecognised codec libav ***",)),
        # --codec libav needs --libav-format on a Pi 4 too
        (PI4, ["--codec", "libav", "-o", "-"], ("[NULL @ 0x5581e0c2f4c0] Unable to choose an output format for '-'; "
                                                "use a standard extension for the filename or specify the format "
                                                "manually.", FORMAT_ERROR)),
        (PI5, ["--libav-format", "h264", "--save-pts", "t.txt", "-o", "-"],
         ("", "ERROR: The libav encoder does not currently support the circular, segment, save_pts, split, or pause "
              "command line options with non-elementary streams!", "",
          "ERROR: *** libav: Incompatible options selected. ***")),
    ],
)
def test_rpicam_refusals(pi: PiProfile, args: list[str], lines: tuple[str, ...]) -> None:
    assert _rpicam(pi, *args) == Refusal(lines, 255)


@pytest.mark.parametrize(
    ("pi", "args", "expected"),
    [
        (PI4, ["-o", "-"], Encoding(Encoder.HARDWARE_H264)),
        (PI4, ["--inline", "-b", "8mbps", "-o", "-"], Encoding(Encoder.HARDWARE_H264, 8_000_000, inline_headers=True)),
        (PI4, ["--libav-format", "h264", "-o", "-"], Encoding(Encoder.HARDWARE_H264)),  # accepted, not used
        (PI5, ["--libav-format", "h264", "-o", "-"], Encoding(Encoder.LIBX264, inline_headers=True, b_frames=True)),
        (PI5, ["--libav-format", "h264", "--low-latency", "-o", "-"], Encoding(Encoder.LIBX264, inline_headers=True)),
        (PI5, ["-o", "clip.h264"], Encoding(Encoder.LIBX264, inline_headers=True, b_frames=True)),  # guessed
        (PI5, ["-t", "1s"], Encoding(Encoder.LIBX264, inline_headers=True, b_frames=True)),  # no output: h264
        (PI5, ["--save-pts", "t.txt", "-o", "x.h264"], Encoding(Encoder.LIBX264, inline_headers=True, b_frames=True)),
        (PI5, ["--codec", "mjpeg", "-b", "50mbps", "-o", "-"], Encoding(Encoder.MJPEG)),  # -b ignored
        (PI5_LITE, ["--codec", "mjpeg", "-o", "-"], Encoding(Encoder.MJPEG)),
        (PI5_LITE, ["--codec", "yuv420", "-o", "-"], Encoding(Encoder.YUV420)),
        (pinned("pi5", "full", "1.5.0"), ["--libav-format", "h264", "--save-pts", "t", "-o", "-"],
         Encoding(Encoder.LIBX264, inline_headers=True, b_frames=True, lines=(
             "", "ERROR: Pi 5 and libav encoder does not currently support the circular, segment, save_pts or split "
                 "command line options, they will be ignored!", ""))),
    ],
)
def test_rpicam_encodings(pi: PiProfile, args: list[str], expected: Encoding) -> None:
    assert _rpicam(pi, *args) == expected


def test_rpicam_level_override_notice() -> None:
    # ParseVideo (from 1.2.0): above level 4's 245,760 macroblocks/s, at the default verbosity
    assert parse_rpicam_args(["--width", "1920", "--height", "1080", "--framerate", "60"]).notices == (
        "Overriding H.264 level 4.2",)
    assert parse_rpicam_args(["--width", "1920", "--height", "1080", "--framerate", "30"]).notices == ()
    assert parse_rpicam_args(["--width", "1920", "--height", "1080", "--framerate", "60", "-v0"]).notices == ()


# ------------------------------------------------------------------------------------- encoders, raspivid


@pytest.mark.parametrize(
    ("args", "bitrate", "lines"),
    [
        (["-b", "25000000"], 25_000_000, ()),
        (["-b", "30000000"], 25_000_000, ("Bitrate too high: Reducing to 25MBit/s",)),
        (["-b", "30000000", "-lev", "4.2"], 30_000_000, ()),
        (["-b", "30000000", "-lev", "4.1"], 30_000_000, ()),
        (["-b", "70000000", "-lev", "4.2"], 62_500_000, ("Bitrate too high: Reducing to 62.5MBit/s",)),
        # the cap follows the level asked for; the level raised for the macroblock rate comes after it
        (["-b", "30000000", "-fps", "60"], 25_000_000,
         ("Bitrate too high: Reducing to 25MBit/s", "Too many macroblocks/s: Increasing H264 Level to 4.2")),
        (["-w", "1920", "-h", "1080", "-fps", "30"], 17_000_000, ()),  # 244,800 MB/s: level 4 holds
    ],
)
def test_raspivid_bitrate_and_level(args: list[str], bitrate: int, lines: tuple[str, ...]) -> None:
    assert choose_raspivid_encoding(parse_legacy_args(args)) == Encoding(Encoder.HARDWARE_H264, bitrate, lines=lines)


def test_raspivid_mjpeg_cap_and_padding() -> None:
    encoding = choose_raspivid_encoding(parse_legacy_args(["-cd", "MJPEG", "-b", "30000000", "-lev", "4.2"]))
    assert encoding == Encoding(Encoder.MJPEG, lines=("Bitrate too high: Reducing to 25MBit/s",))


def test_raspivid_refuses_too_many_macroblocks() -> None:
    refused = choose_raspivid_encoding(parse_legacy_args(["-w", "1920", "-h", "1080", "-fps", "120"]))
    assert refused == Refusal((
        "mmal: Too many macroblocks/s requested",
        "mmal: main: Failed to create encode component",
        "mmal: Failed to run camera app. Please check for firmware updates",
        "",
    ), 70)


@pytest.mark.parametrize(("args", "timeout_ms", "run_ms"),
                         [([], 5000, 5000), (["-t", "-1"], 5000, 5000), (["-t", "150"], 150, 200),
                          (["-t", "0"], 0, 0), (["-t", "-5"], -5, -5), (["-t", "1"], 1, 100)])
def test_raspivid_timeout(args: list[str], timeout_ms: int, run_ms: int) -> None:
    options = parse_legacy_args(args)
    assert (options.timeout_ms, legacy_run_ms(options.timeout_ms)) == (timeout_ms, run_ms)


# ------------------------------------------------------------------------------------------ the B-frame clip


def test_bframes_clip_layout() -> None:
    clip = BFRAMES_CLIP_PATH.read_bytes()
    frames = split_access_units(clip)
    assert len(frames) == 50 and len(clip) < 300_000
    assert [nal_type(nal) for nal in frames[0]] == [7, 8, 6, 5]  # x264 names itself in an SEI, once
    assert [nal_type(nal) for nal in frames[25]] == [7, 8, 5]
    vcl = [nal for frame in frames for nal in frame if nal_type(nal) in (1, 5)]
    assert len(vcl) == 50  # one slice a frame
    order = "".join(slice_type(nal) for nal in vcl)
    assert order[:5] == "IPBPB" and order.count("B") == 24 and order.count("I") == 2  # decode order
    assert [slice_type(nal) for nal in split_nal_units(CLIP_PATH.read_bytes()) if nal_type(nal) in (1, 5)].count(
        "B") == 0


def test_bframes_plan_sends_the_sei_once() -> None:
    plan = build_frame_plan(BFRAMES_CLIP_PATH.read_bytes(), inline_headers=True)
    assert [nal_type(nal) for nal in split_nal_units(plan.frame(0))] == [7, 8, 6, 5]
    assert [nal_type(nal) for nal in split_nal_units(plan.frame(50))] == [7, 8, 5]
    assert [nal_type(nal) for nal in split_nal_units(plan.frame(25))] == [7, 8, 5]
