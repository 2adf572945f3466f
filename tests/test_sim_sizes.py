"""The simulated camera honours the size, rate and codec asked for, run as a real tool is run: through its
stand-in shim, output on a pipe or in a file, and checked as a user would (PyAV decodes it; raw frames are
counted and compared byte for byte with the scene), with the run log's bytes and hash matching what it wrote.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.sim.h264 import NAL_IDR, NAL_SEI, NAL_SPS, nal_type, slice_type, split_access_units, split_nal_units
from orchestrator.sim.mjpeg_clip import split_jpeg_images
from orchestrator.sim.profile import Board
from orchestrator.sim.raw import RawKind, legacy_layout, pack, rpicam_video_layout
from orchestrator.sim.scene import build_scene, oriented
from orchestrator.sim.stand_in import SIM_RAW_TOOLS, SIM_STILL_TOOLS, SIM_TOOLS, install_stand_ins

av = pytest.importorskip("av")
np = pytest.importorskip("numpy")
DEADLINE_S = 60.0  # a cold cache encodes a 1080p loop first


@dataclass(frozen=True)
class Camera:
    bin_dir: Path
    log_dir: Path
    env: dict[str, str]

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(self.bin_dir / tool), *args], capture_output=True, env=self.env,
                              timeout=DEADLINE_S)

    def last_run(self) -> dict[str, Any]:
        return json.loads((self.log_dir / "runs.jsonl").read_text().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture
def camera(tmp_path: Path) -> Callable[..., Camera]:
    def make(board: str = "pi4", **env: str) -> Camera:
        home = tmp_path / board
        extra = {"PIORCH_SIM_BOARD": board, "PIORCH_SIM_LOG": str(home / "log"),
                 "PIORCH_SIM_LOCK": str(home / "camera.lock"), **env}
        install_stand_ins(home / "bin", SIM_TOOLS + SIM_STILL_TOOLS + SIM_RAW_TOOLS, extra_env=extra)
        clean = {name: value for name, value in os.environ.items() if not name.startswith("PIORCH_SIM_")}
        return Camera(home / "bin", home / "log", clean)

    return make


def logged_as_written(camera: Camera, data: bytes) -> dict[str, Any]:
    run = camera.last_run()
    assert run["bytes"] == len(data) and run["sha256"] == hashlib.sha256(data).hexdigest()
    return run


def decoded(data: bytes, form: str = "h264") -> list[Any]:
    with av.open(io.BytesIO(data), format=form) as container:
        return list(container.decode(video=0))


def picture_type(frame: Any) -> str:
    return " IPB"[int(frame.pict_type)]  # AVPictureType: 1 I, 2 P, 3 B (older PyAV: an enum of that value)


def idr_frames(data: bytes) -> list[int]:
    """Indexes (decode order) of the frames that start with an IDR."""
    units = split_access_units(data)
    return [index for index, unit in enumerate(units) if any(nal_type(nal) == NAL_IDR for nal in unit)]


# ------------------------------------------------------------------------------------------------- H.264


@pytest.mark.parametrize(
    ("tool", "args", "size", "gop"),
    [
        ("raspivid", ["-w", "1280", "-h", "720", "-fps", "30", "-g", "15", "-ih", "-b", "2000000"], (1280, 720), 15),
        ("rpicam-vid", ["--width", "320", "--height", "240", "--framerate", "30", "--inline"], (320, 240), 60),
        ("libcamera-vid", ["--width", "1920", "--height", "1080", "--framerate", "30", "--intra", "10", "--inline"],
         (1920, 1080), 10),
    ],
)
def test_pi4_h264_at_the_asked_size_rate_and_gop(camera: Callable[..., Camera], tool: str, args: list[str],
                                                  size: tuple[int, int], gop: int) -> None:
    pi = camera()
    result = pi.run(tool, *args, "-t", "2000", "-n", "-o", "-")
    assert result.returncode == 0, result.stderr
    data = result.stdout
    frames = decoded(data)
    assert {(frame.width, frame.height) for frame in frames} == {size}
    assert abs(len(frames) - 60) <= 3  # 2 s at 30 fps, paced
    assert idr_frames(data) == list(range(0, len(frames), gop))
    assert all(picture_type(frame) != "B" for frame in frames)  # the hardware encoder makes no B-frames
    assert NAL_SEI not in [nal_type(nal) for nal in split_nal_units(data)]  # nor an encoder SEI
    pictures = [frame.to_ndarray(format="gray") for frame in frames[:8]]
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(pictures))  # all differ
    assert logged_as_written(pi, data)["frames"] == len(frames)


def test_pi4_without_inline_headers_has_one_sps(camera: Callable[..., Camera], tmp_path: Path) -> None:
    pi = camera()
    target = tmp_path / "out.h264"
    result = pi.run("rpicam-vid", "--width", "640", "--height", "480", "--intra", "20", "--frames", "50",
                    "--framerate", "100", "-o", str(target))
    assert result.returncode == 0, result.stderr
    data = target.read_bytes()
    types = [nal_type(nal) for nal in split_nal_units(data)]
    assert types[:3] == [7, 8, 5] and types.count(NAL_SPS) == 1 and idr_frames(data) == [0, 20, 40]
    assert len(decoded(data)) == 50
    logged_as_written(pi, data)


def test_pi5_libx264_has_b_frames_unless_low_latency(camera: Callable[..., Camera]) -> None:
    pi = camera("pi5")
    common = ["--width", "1280", "--height", "720", "--framerate", "50", "--frames", "40", "--libav-format", "h264",
              "-n", "-o", "-"]
    plain = pi.run("rpicam-vid", *common)
    assert plain.returncode == 0, plain.stderr
    vcl = "".join(slice_type(nal) for nal in split_nal_units(plain.stdout) if nal_type(nal) in (1, 5))
    assert vcl[:5] == "IPBPB" and idr_frames(plain.stdout) == [0]  # GOP = the frame rate: 50
    frames = decoded(plain.stdout)
    assert len(frames) == 40 and {(f.width, f.height) for f in frames} == {(1280, 720)}
    assert "".join(picture_type(f) for f in frames[:5]) == "IBPBP"  # display order differs from decode order
    logged_as_written(pi, plain.stdout)
    fast = pi.run("rpicam-vid", *common, "--low-latency")
    assert fast.returncode == 0, fast.stderr
    units = split_access_units(fast.stdout)
    assert len(units) == 40 and all(sum(nal_type(n) in (1, 5) for n in unit) == 4 for unit in units)  # 4 slices
    assert all(picture_type(f) != "B" for f in decoded(fast.stdout))


def test_same_request_same_bytes_and_a_cached_loop(camera: Callable[..., Camera], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    pi = camera(PIORCH_SIM_CACHE=str(cache))
    args = ("--width", "800", "--height", "600", "--framerate", "60", "--frames", "30", "--inline", "-o", "-")
    first = pi.run("rpicam-vid", *args)
    (stored,) = cache.glob("h264-*.bin")
    second = pi.run("rpicam-vid", *args)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout and stored.stat().st_size > 0
    assert oct(cache.stat().st_mode & 0o777) == "0o700"


def test_odd_sizes_are_refused_by_the_simulator(camera: Callable[..., Camera]) -> None:
    result = camera().run("rpicam-vid", "--width", "641", "--height", "480", "-t", "100", "-o", "-")
    assert (result.returncode, result.stdout) == (1, b"")
    assert b"simulator: H.264 at an odd size (641x480) is not simulated" in result.stderr


# ------------------------------------------------------------------------------------------------- MJPEG


def test_mjpeg_at_the_asked_size_and_quality(camera: Callable[..., Camera]) -> None:
    pi = camera()
    sizes = {}
    for quality in ("10", "90"):
        result = pi.run("rpicam-vid", "--codec", "mjpeg", "--width", "800", "--height", "600", "--quality", quality,
                        "--framerate", "25", "-t", "1s", "-o", "-")
        assert result.returncode == 0, result.stderr
        images = split_jpeg_images(result.stdout)
        assert abs(len(images) - 25) <= 2 and b"".join(images) == result.stdout
        assert all(image.startswith(b"\xff\xd8\xff\xe0") for image in images)  # JFIF, no encoder comment
        assert {(f.width, f.height) for f in decoded(result.stdout, "mjpeg")} == {(800, 600)}
        sizes[quality] = len(result.stdout) / len(images)
        assert logged_as_written(pi, result.stdout)["frames"] == len(images)
    assert sizes["10"] < sizes["90"]
    legacy = pi.run("raspivid", "-cd", "MJPEG", "-w", "320", "-h", "240", "-fps", "10", "-t", "500", "-o", "-")
    assert {(f.width, f.height) for f in decoded(legacy.stdout, "mjpeg")} == {(320, 240)}


# --------------------------------------------------------------------------------------------------- raw


@pytest.mark.parametrize(("board", "width", "stride"), [("pi4", 96, 128), ("pi5", 96, 128), ("pi4", 960, 960),
                                                        ("pi5", 960, 1024), ("pi5", 640, 640)])
def test_rpicam_yuv420_rows_carry_the_isp_stride(camera: Callable[..., Camera], board: str, width: int,
                                                 stride: int) -> None:
    pi = camera(board)
    result = pi.run("rpicam-vid", "--codec", "yuv420", "--width", str(width), "--height", "64", "--frames", "3",
                    "--framerate", "30", "-o", "-")
    assert result.returncode == 0, result.stderr
    layout = rpicam_video_layout(width, 64, Board(board))
    assert layout.stride == stride and len(result.stdout) == 3 * stride * 64 * 3 // 2
    frames = [result.stdout[i * layout.frame_bytes : (i + 1) * layout.frame_bytes] for i in range(3)]
    assert frames == [pack(build_scene(width, 64, index), layout) for index in range(3)]
    assert logged_as_written(pi, result.stdout)["frames"] == 3


def test_raw_video_is_flipped_as_asked(camera: Callable[..., Camera]) -> None:
    result = camera("pi5").run("rpicam-vid", "--codec", "yuv420", "--width", "96", "--height", "64", "--hflip",
                               "--vflip", "--frames", "2", "--framerate", "30", "-o", "-")
    layout = rpicam_video_layout(96, 64, Board.PI5)
    assert result.stdout == b"".join(pack(oriented(build_scene(96, 64, index), True, True), layout)
                                     for index in range(2))
    mjpeg = camera().run("rpicam-vid", "--codec", "mjpeg", "--width", "640", "--height", "360", "--vflip",
                         "--frames", "1", "--framerate", "30", "-o", "-")
    (frame,) = decoded(mjpeg.stdout, "mjpeg")  # a flipped request never gets the shipped images
    luma = frame.to_ndarray(format="gray").astype(int)
    scene = build_scene(640, 360, 0).y.astype(int)
    assert np.abs(luma - scene[::-1]).mean() < 3 < np.abs(luma - scene).mean()  # upside down, within JPEG's error


@pytest.mark.parametrize(("flag", "kind"), [(None, RawKind.I420), ("-rgb", RawKind.RGB24), ("-y", RawKind.LUMA)])
def test_raspividyuv_writes_the_padded_camera_buffers(camera: Callable[..., Camera], flag: str | None,
                                                      kind: RawKind) -> None:
    pi = camera()
    result = pi.run("raspividyuv", "-w", "100", "-h", "50", "-fps", "20", "-t", "500", *([flag] if flag else []),
                    "-o", "-")
    assert result.returncode == 0, result.stderr
    layout = legacy_layout(100, 50, kind)  # 128 x 64: width to 32, height to 16
    count = len(result.stdout) // layout.frame_bytes
    assert len(result.stdout) == count * layout.frame_bytes and abs(count - 10) <= 1
    assert result.stdout[: layout.frame_bytes] == pack(build_scene(100, 50, 0), layout)
    assert logged_as_written(pi, result.stdout)["frames"] == count


def test_raspividyuv_refuses_encoder_options_and_is_not_on_a_pi5(camera: Callable[..., Camera]) -> None:
    refused = camera().run("raspividyuv", "-b", "1000000", "-o", "-")
    assert (refused.returncode, refused.stderr) == (64, b"Invalid command line option (-b)\n")
    assert not (camera("pi5").bin_dir / "raspividyuv").exists()
