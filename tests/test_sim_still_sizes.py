"""The simulated still cameras write pictures at the asked size, in each tool's own encodings and layouts:
raspistill (jpg, png, bmp, gif), raspiyuv (padded I420 / RGB24 / BGR24 / Y), rpicam-still (jpg, png, bmp,
and unpadded yuv420 / rgb / rgb48), run through their shims like the real tools."""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.jobs.snap import check_image_bytes, read_image_ends
from orchestrator.settings import ImageFormat
from orchestrator.sim.raw import RawKind, legacy_layout
from orchestrator.sim.scene import build_scene, to_rgb
from tests.test_sim_sizes import Camera, camera, decoded, logged_as_written

__all__ = ["camera"]  # the fixture, shared with test_sim_sizes.py

av = pytest.importorskip("av")
np = pytest.importorskip("numpy")
MAGIC = {"jpg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n", "bmp": b"BM", "gif": b"GIF8"}
CODEC = {"jpg": "mjpeg", "png": "png", "bmp": "bmp", "gif": "gif"}


def picture_size(data: bytes, encoding: str) -> tuple[str, int, int]:
    with av.open(io.BytesIO(data)) as container:
        frame = next(container.decode(video=0))
        return container.streams.video[0].codec_context.name, frame.width, frame.height


@pytest.mark.parametrize("encoding", ["jpg", "png", "bmp", "gif"])
def test_raspistill_encodings_at_the_asked_size(camera: Callable[..., Camera], encoding: str, tmp_path: Path) -> None:
    pi = camera()
    result = pi.run("raspistill", "-e", encoding, "-w", "320", "-h", "240", "-t", "10", "-n", "-o", "-")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(MAGIC[encoding])
    assert picture_size(result.stdout, encoding) == (CODEC[encoding], 320, 240)
    path = tmp_path / f"x.{encoding}"
    path.write_bytes(result.stdout)
    assert check_image_bytes(ImageFormat(encoding), *read_image_ends(path)) is None  # whole, as piorch judges
    logged_as_written(pi, result.stdout)


@pytest.mark.parametrize("encoding", ["jpg", "png", "bmp"])
def test_rpicam_still_encodings_at_the_asked_size(camera: Callable[..., Camera], encoding: str) -> None:
    pi = camera("pi5")
    result = pi.run("rpicam-still", "-e", encoding, "--width", "640", "--height", "480", "-t", "10", "-n", "-o", "-")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(MAGIC[encoding])
    assert picture_size(result.stdout, encoding) == (CODEC[encoding], 640, 480)
    logged_as_written(pi, result.stdout)


def test_stills_default_to_the_sensor_size_and_differ(camera: Callable[..., Camera]) -> None:
    pi = camera()
    first = pi.run("rpicam-still", "-t", "10", "-n", "-o", "-")
    second = pi.run("rpicam-still", "-t", "10", "-n", "-o", "-")
    assert picture_size(first.stdout, "jpg") == ("mjpeg", 3280, 2464)  # the imx219's full size
    assert first.stdout != second.stdout  # two captures, two files ...
    pixels = [decoded(run.stdout, "mjpeg")[0].to_ndarray(format="rgb24") for run in (first, second)]
    assert np.array_equal(*pixels)  # ... of one still scene
    raw = [pi.run("raspiyuv", "-w", "64", "-h", "48", "-t", "10", "-o", "-").stdout for _ in range(2)]
    assert raw[0][:12] != raw[1][:12] and raw[0][12:] == raw[1][12:]  # raw: the run's mark in the first bytes


def test_rpicam_still_raw_is_unpadded(camera: Callable[..., Camera]) -> None:
    pi = camera()
    yuv = pi.run("rpicam-still", "-e", "yuv420", "--width", "100", "--height", "50", "-t", "10", "-o", "-")
    rgb = pi.run("rpicam-still", "-e", "rgb", "--width", "100", "--height", "50", "-t", "10", "-o", "-")
    wide = pi.run("rpicam-still", "-e", "rgb48", "--width", "100", "--height", "50", "-t", "10", "-o", "-")
    assert yuv.returncode == rgb.returncode == wide.returncode == 0
    assert (len(yuv.stdout), len(rgb.stdout), len(wide.stdout)) == (100 * 50 * 3 // 2, 100 * 50 * 3, 100 * 50 * 6)
    # the bottom rows are the bare gradient, whatever the moment of capture: rows of exactly `width` pixels
    scene = build_scene(100, 50, 0)
    assert yuv.stdout[49 * 100 : 50 * 100] == scene.y[-1].tobytes()
    assert rgb.stdout[-300:] == to_rgb(scene)[-1].tobytes()
    assert wide.stdout[-600:] == (to_rgb(scene)[-1].astype("<u2") << 8).tobytes()
    logged_as_written(pi, wide.stdout)


@pytest.mark.parametrize(("tool", "flags"), [("rpicam-still", ("--hflip", "--vflip")), ("raspiyuv", ("-hf", "-vf"))])
def test_stills_are_flipped_as_asked(camera: Callable[..., Camera], tool: str, flags: tuple[str, str]) -> None:
    pi = camera()
    size = ("--width", "64", "--height", "48") if tool == "rpicam-still" else ("-w", "64", "-h", "48", "-y")
    encoding = ("-e", "yuv420") if tool == "rpicam-still" else ()
    plain, mirrored, upside_down = (pi.run(tool, *encoding, *size, *extra, "-t", "10", "-o", "-").stdout
                                    for extra in ((), flags[:1], flags[1:]))
    stride = 64  # both unpadded here: 64 is a multiple of 32 and 48 of 16
    last_row = plain[47 * stride : 48 * stride]  # the bare gradient
    assert mirrored[47 * stride : 48 * stride] == last_row[::-1]
    assert upside_down[12:stride] == last_row[12:]  # (the first 12 bytes of a raw still carry the run's mark)


def test_rpicam_still_odd_yuv420_fails_like_the_tool(camera: Callable[..., Camera]) -> None:
    result = camera().run("rpicam-still", "-e", "yuv420", "--width", "101", "--height", "50", "-t", "10", "-o", "-")
    assert (result.returncode, result.stdout) == (255, b"")
    lines = result.stderr.decode().splitlines()
    assert lines[-2:] == ["Still capture image received", "ERROR: *** both width and height must be even ***"]


@pytest.mark.parametrize(("flag", "kind"), [(None, RawKind.I420), ("-rgb", RawKind.RGB24),
                                            ("-bgr", RawKind.BGR24), ("-y", RawKind.LUMA)])
def test_raspiyuv_writes_the_padded_buffer(camera: Callable[..., Camera], flag: str | None, kind: RawKind) -> None:
    pi = camera()
    result = pi.run("raspiyuv", "-w", "100", "-h", "50", "-t", "10", *([flag] if flag else []), "-o", "-")
    assert result.returncode == 0, result.stderr
    layout = legacy_layout(100, 50, kind)
    assert len(result.stdout) == layout.frame_bytes == {RawKind.I420: 128 * 64 * 3 // 2, RawKind.LUMA: 128 * 64}.get(
        kind, 128 * 3 * 64)
    rows = np.frombuffer(result.stdout[: layout.stride * layout.rows], np.uint8).reshape(layout.rows, layout.stride)
    per_pixel = layout.stride // 128
    assert rows[:50, : 100 * per_pixel].any() and not rows[:, 100 * per_pixel :].any() and not rows[50:].any()
    logged_as_written(pi, result.stdout)


def test_raspiyuv_refusals_and_quality_notice(camera: Callable[..., Camera]) -> None:
    pi = camera()
    both = pi.run("raspiyuv", "-y", "-rgb", "-o", "-")
    assert (both.returncode, both.stderr) == (
        64, b"--luma and --rgb/--bgr are mutually exclusive\nInvalid command line option (-rgb)\n")
    capped = pi.run("raspistill", "-q", "150", "-w", "64", "-h", "48", "-t", "10", "-o", "-")
    assert capped.returncode == 0 and capped.stderr.startswith(b"Setting max quality = 100\n")
    small = pi.run("raspistill", "-q", "5", "-w", "640", "-h", "480", "-t", "10", "-o", "-")
    assert len(small.stdout) < len(pi.run("raspistill", "-q", "95", "-w", "640", "-h", "480", "-t", "10",
                                          "-o", "-").stdout)
    assert not (camera("pi5").bin_dir / "raspiyuv").exists()


def test_bmp_header_is_rpicam_stills(camera: Callable[..., Camera]) -> None:
    result = camera().run("rpicam-still", "-e", "bmp", "--width", "33", "--height", "10", "-t", "10", "-o", "-")
    data = result.stdout
    assert len(data) == 54 + 10 * 100 and struct.unpack("<IiiHH", data[14:30]) == (40, 33, -10, 1, 24)
    (frame,) = decoded(data, "bmp_pipe")
    assert (frame.width, frame.height) == (33, 10)
    assert re.fullmatch(rb"BM.{4}\x00{4}6\x00{3}", data[:14], re.DOTALL)  # size, reserved, offset 54
