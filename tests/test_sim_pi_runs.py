"""The simulated Pis, run as the real tools are run: through stand-in shims, as subprocesses, one board/build/
release combination per case. Each test asserts what a user would see: exit codes, stderr lines, the bytes
on stdout (B-frames or none), what --help and --version print, and which tools exist at all.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.sim.h264 import BFRAMES_CLIP_PATH, build_frame_plan, nal_type, slice_type, split_nal_units
from orchestrator.sim.mjpeg_clip import split_jpeg_images
from orchestrator.sim.runtime import camera_is_free
from orchestrator.sim.stand_in import SIM_STILL_TOOLS, SIM_TOOLS, install_stand_ins
from tests.test_sim import Sim

DEADLINE_S = 10.0
LIBCAMERA_PREFIX = re.compile(r"^\[\d+:\d\d:\d\d\.\d{9}\] \[\d+\]", re.MULTILINE)
CAMERA_LINES = [
    "[T] [PID]  INFO Camera camera_manager.cpp:325 libcamera v0.3.0+piorch-simulator",
    "[T] [PID]  INFO Camera camera.cpp:1183 configuring streams: (0) 640x480-YUV420",
]


class Pi(Sim):
    """test_sim's simulated Pi, with the board/build/release set on its shims."""

    def tools(self) -> list[str]:
        return sorted(path.name for path in self.bin_dir.iterdir())

    def runs(self) -> list[dict[str, object]]:
        path = self.log_dir / "runs.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def stderr_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return LIBCAMERA_PREFIX.sub("[T] [PID]", result.stderr.decode()).splitlines()


@pytest.fixture
def make_pi(tmp_path: Path) -> Callable[..., Pi]:
    def make(board: str = "pi4", build: str = "full", version: str | None = None) -> Pi:
        home = tmp_path / f"{board}-{build}-{version}"
        extra = {"PIORCH_SIM_BOARD": board, "PIORCH_SIM_BUILD": build, "PIORCH_SIM_LOG": str(home / "log"),
                 "PIORCH_SIM_LOCK": str(home / "camera.lock")}
        if version:
            extra["PIORCH_SIM_VERSION"] = version
        install_stand_ins(home / "bin", SIM_TOOLS + SIM_STILL_TOOLS, extra_env=extra)
        # Only what the shims set: nothing of the caller's PIORCH_SIM_* may leak into the simulated Pi.
        env = {name: value for name, value in os.environ.items() if not name.startswith("PIORCH_SIM_")}
        return Pi(home / "bin", home / "log", home / "camera.lock", env)

    return make


def _vcl_slice_types(data: bytes) -> str:
    return "".join(slice_type(nal) for nal in split_nal_units(data) if nal_type(nal) in (1, 5))


def _decoded_picture_types(data: bytes) -> str:
    av = pytest.importorskip("av")
    with av.open(io.BytesIO(data), format="h264") as container:
        # AVPictureType: 1 I, 2 P, 3 B (older PyAV gives an enum with that value)
        return "".join(" IPB"[int(frame.pict_type)] for frame in container.decode(video=0))


def _jpeg_size(image: bytes) -> tuple[int, int]:
    av = pytest.importorskip("av")
    with av.open(io.BytesIO(image), format="mjpeg") as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


def _planned(clip: Path, frames: int) -> bytes:
    plan = build_frame_plan(clip.read_bytes(), inline_headers=True)
    return b"".join(plan.frame(index) for index in range(frames))


# -------------------------------------------------------------------------------------------- Pi 5, full


def test_tools_each_pi_has(make_pi: Callable[..., Pi]) -> None:
    assert make_pi("pi5", "full", "1.13.0").tools() == ["rpicam-still", "rpicam-vid"]
    assert make_pi("pi4", "full", "1.3.0").tools() == ["libcamera-still", "libcamera-vid", "raspistill", "raspivid"]
    assert make_pi().tools() == sorted(SIM_TOOLS + SIM_STILL_TOOLS)  # unpinned: every name, as always
    with pytest.raises(ValueError, match="no such Pi"):
        make_pi("pi5", "full", "1.1.0")


def test_pi5_h264_to_stdout_needs_libav_format(make_pi: Callable[..., Pi]) -> None:
    pi = make_pi("pi5", "full", "1.13.0")
    result = pi.run("rpicam-vid", "-t", "1s", "-n", "-o", "-")
    assert result.returncode == 255 and result.stdout == b""
    assert stderr_lines(result) == [
        *CAMERA_LINES,
        "[NULL @ 0x5581e0c2f4c0] Unable to choose an output format for '-'; use a standard extension for the "
        "filename or specify the format manually.",
        "ERROR: *** libav: cannot allocate output context, try setting with --libav-format ***",
    ]
    (record,) = pi.runs()
    assert (record["exit_code"], record["reason"], record["bytes"]) == (255, "error", 0)
    assert camera_is_free(pi.lock)


def test_pi5_streams_bframes_without_low_latency(make_pi: Callable[..., Pi]) -> None:
    pi = make_pi("pi5", "full", "1.13.0")
    result = pi.run("rpicam-vid", "--frames", "30", "--framerate", "60", "--libav-format", "h264", "-n", "-o", "-")
    assert result.returncode == 0, result.stderr
    assert stderr_lines(result) == CAMERA_LINES  # --frames: no "Halting: reached timeout" line
    types = [nal_type(nal) for nal in split_nal_units(result.stdout)]
    # libx264's GOP is the frame rate: one IDR in 30 frames at 60 fps; its SEI once, at the start
    assert types[:4] == [7, 8, 6, 5] and types.count(7) == types.count(5) == 1 and types.count(6) == 1
    assert _vcl_slice_types(result.stdout)[:5] == "IPBPB"  # decode order ...
    assert _decoded_picture_types(result.stdout)[:5] == "IBPBP"  # ... is not display order
    (record,) = pi.runs()
    assert record["frames"] == 30 and record["bytes"] == len(result.stdout)


def test_pi5_low_latency_has_no_bframes(make_pi: Callable[..., Pi]) -> None:
    pi = make_pi("pi5", "full", "1.13.0")
    result = pi.run("rpicam-vid", "--frames", "30", "--framerate", "60", "--libav-format", "h264", "--low-latency",
                    "-n", "-o", "-")
    assert result.returncode == 0, result.stderr
    assert "B" not in _vcl_slice_types(result.stdout)
    assert _decoded_picture_types(result.stdout) == _vcl_slice_types(result.stdout)[::4]  # 4 slices a frame
    assert len(_vcl_slice_types(result.stdout)) == 4 * 30


def test_pi5_file_named_h264_works_without_libav_format(make_pi: Callable[..., Pi], tmp_path: Path) -> None:
    target = tmp_path / "out.h264"
    # at the shipped B-frame clip's own size and rate, the simulator sends that clip
    result = make_pi("pi5", "full", "1.13.0").run("rpicam-vid", "--frames", "5", "--framerate", "25", "--width", "640",
                                                   "--height", "360", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == _planned(BFRAMES_CLIP_PATH, 5)


def test_pi5_older_release_and_ffmpeg(make_pi: Callable[..., Pi]) -> None:
    # Bookworm's rpicam-apps 1.5.0 with FFmpeg 5.1: the older FFmpeg wording; --low-latency does not exist yet
    pi = make_pi("pi5", "full", "1.5.0")
    result = pi.run("rpicam-vid", "-t", "1s", "-o", "-")
    assert result.returncode == 255
    assert stderr_lines(result)[2:] == [
        "[NULL @ 0x5581e0c2f4c0] Unable to find a suitable output format for '-'",
        "ERROR: *** libav: cannot allocate output context, try setting with --libav-format ***",
    ]
    refused = pi.run("rpicam-vid", "--libav-format", "h264", "--low-latency", "-o", "-")
    assert (refused.returncode, refused.stderr) == (255, b"ERROR: *** unrecognised option '--low-latency' ***\n")
    assert b"--low-latency" not in pi.run("rpicam-vid", "--help").stdout
    assert b"--libav-format" in pi.run("rpicam-vid", "--help").stdout


@pytest.mark.parametrize(
    ("codec", "args"), [("mjpeg", ["-b", "50mbps"]), ("yuv420", ["--width", "128", "--height", "96"])]
)
def test_pi5_software_paths(make_pi: Callable[..., Pi], codec: str, args: list[str]) -> None:
    for build in ("full", "lite"):
        result = make_pi("pi5", build, "1.13.0").run("rpicam-vid", "--codec", codec, *args, "--frames", "6",
                                                      "--framerate", "60", "-o", "-")
        assert result.returncode == 0, result.stderr
        if codec == "mjpeg":  # libjpeg in software; the bitrate is ignored: the images, nothing between them
            images = split_jpeg_images(result.stdout)
            assert len(images) == 6 and b"".join(images) == result.stdout
            assert {_jpeg_size(image) for image in images} == {(640, 480)}  # rpicam-vid's default size
        else:  # raw I420, Y then U then V, frame after frame; a moving bar, so no two neighbours are equal
            frame = 128 * 96 * 3 // 2
            frames = [result.stdout[i : i + frame] for i in range(0, len(result.stdout), frame)]
            assert len(result.stdout) == 6 * frame and len(set(frames)) == 6


# -------------------------------------------------------------------------------------------- Pi 5, lite


def test_pi5_lite_has_no_h264(make_pi: Callable[..., Pi]) -> None:
    pi = make_pi("pi5", "lite", "1.13.0")
    for args in (["-o", "-"], ["--libav-format", "h264", "-o", "-"]):  # 1.8.1 on: the option exists, libav not
        result = pi.run("rpicam-vid", "-t", "1s", *args)
        assert result.returncode == 255 and result.stdout == b""
        assert stderr_lines(result) == [*CAMERA_LINES, "ERROR: *** Unable to find an appropriate H.264 codec ***"]
    libav = pi.run("rpicam-vid", "-t", "1s", "--codec", "libav", "-o", "-")
    assert stderr_lines(libav)[-1] == "ERROR: *** Unrecognised codec libav ***"
    capabilities = pi.run("rpicam-vid", "--version").stdout.splitlines()[1]
    assert capabilities == b"rpicam-apps capabilites: egl:0 qt:0 drm:1 libav:0"


def test_pi5_lite_before_1_8_1_does_not_know_libav_options(make_pi: Callable[..., Pi]) -> None:
    pi = make_pi("pi5", "lite", "1.7.0")
    result = pi.run("rpicam-vid", "--libav-format", "h264", "-o", "-")
    # refused while parsing: before the camera is touched, so no libcamera lines
    assert (result.returncode, result.stderr) == (255, b"ERROR: *** unrecognised option '--libav-format' ***\n")
    assert b"--libav-format" not in pi.run("rpicam-vid", "-h").stdout
    assert b"--libav-format" in make_pi("pi5", "lite", "1.8.1").run("rpicam-vid", "-h").stdout


# --------------------------------------------------------------------------------------- older releases


def test_libcamera_vid_before_1_4(make_pi: Callable[..., Pi]) -> None:
    pi = make_pi("pi4", "full", "1.2.1")
    version = pi.run("libcamera-vid", "--version")
    assert version.stdout == b"libcamera-apps build: 7e4d3d71867f 11-07-2023 (10:42:39)\n" \
                             b"libcamera build: v0.3.0+piorch-simulator\n"
    units = pi.run("libcamera-vid", "-t", "10s", "-o", "-")
    assert units.returncode == 255
    assert units.stderr == b"ERROR: *** the argument ('10s') for option '-t' is invalid ***\n"
    plain = pi.run("libcamera-vid", "--frames", "3", "-o", "-")
    assert plain.returncode == 0 and [nal_type(nal) for nal in split_nal_units(plain.stdout)][:3] == [7, 8, 5]


# ----------------------------------------------------------------------------------------------- raspivid


@pytest.mark.parametrize(
    ("args", "bytes_per_s", "lines"),
    [
        (["-b", "30000000"], 25_000_000 / 8, ["Bitrate too high: Reducing to 25MBit/s"]),
        (["-b", "30000000", "-lev", "4.2"], 30_000_000 / 8, []),
    ],
)
def test_raspivid_paces_at_the_bitrate_it_really_uses(
    make_pi: Callable[..., Pi], args: list[str], bytes_per_s: float, lines: list[str]
) -> None:
    result = make_pi().run("raspivid", "-t", "1000", "-fps", "25", *args, "-n", "-o", "-")
    assert result.returncode == 0
    assert stderr_lines(result) == lines
    assert abs(len(result.stdout) - bytes_per_s) <= 0.15 * bytes_per_s


def test_raspivid_refuses_too_many_macroblocks(make_pi: Callable[..., Pi]) -> None:
    pi = make_pi()
    result = pi.run("raspivid", "-w", "1920", "-h", "1080", "-fps", "120", "-t", "1000", "-o", "-")
    assert (result.returncode, result.stdout) == (70, b"")
    assert result.stderr == (b"mmal: Too many macroblocks/s requested\nmmal: main: Failed to create encode component\n"
                             b"mmal: Failed to run camera app. Please check for firmware updates\n\n")
    assert camera_is_free(pi.lock)
    raised = pi.run("raspivid", "-w", "1920", "-h", "1080", "-fps", "60", "-t", "100", "-o", "-")
    assert raised.returncode == 0 and stderr_lines(raised) == ["Too many macroblocks/s: Increasing H264 Level to 4.2"]


def test_rpicam_says_it_overrides_the_level(make_pi: Callable[..., Pi]) -> None:
    result = make_pi().run("rpicam-vid", "--width", "1920", "--height", "1080", "--framerate", "60", "--frames", "2",
                           "-o", "-")
    assert result.returncode == 0
    assert stderr_lines(result)[0] == "Overriding H.264 level 4.2"


# ------------------------------------------------------------------------------------------------ faults


def test_ignore_term_fault_needs_kill(make_pi: Callable[..., Pi]) -> None:
    pi = make_pi("pi5", "full", "1.13.0")
    process = pi.start("rpicam-vid", "-t", "0", "--libav-format", "h264", "-o", "-", PIORCH_SIM_FAULT="ignore-term")
    assert process.stdout is not None and process.stderr is not None
    try:
        assert process.stdout.read(4) == b"\x00\x00\x00\x01"
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None  # still recording, still holding the camera
        assert process.stdout.read(1000) and not camera_is_free(pi.lock)
    finally:
        process.kill()  # the only way to end it, here as on the Pi
        assert process.wait(timeout=DEADLINE_S) == -signal.SIGKILL
        process.stdout.close()
        process.stderr.close()
    assert camera_is_free(pi.lock)  # the kernel drops the flock with the process
    assert pi.runs() == [] and (pi.log_dir / f"running-{process.pid}").exists()  # no chance to log or tidy
