"""The simulator's pictures, pure: the scene, each Pi's raw buffer layout, how long a loop to encode, which
request gets a shipped clip, and the raw tools' option languages (raspividyuv, raspiyuv).

The layouts are checked against the real sources: linux drivers/staging/vc04_services/bcm2835-isp
(get_bytesperline: YUV420 rows aligned to 64), drivers/media/platform/raspberrypi/pisp_be (YUV420 align 128),
libcamera pipeline/rpi/pisp/pisp.cpp (computeOptimalStride), userland RaspiVidYUV.c / RaspiStillYUV.c
(VCOS_ALIGN_UP(width, 32), VCOS_ALIGN_UP(height, 16)) and rpicam-apps image/yuv.cpp, image/bmp.cpp.
The subprocess runs are in test_sim_sizes.py.
"""

from __future__ import annotations

import itertools
import struct
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.sim.encoders import Encoder, Encoding, Refusal
from orchestrator.sim.options import SimUsageError, parse_args, parse_rpicam_args
from orchestrator.sim.profile import Board, PiProfile
from orchestrator.sim.raw import RawFrames, RawKind, legacy_layout, pack, rpicam_video_layout, unpadded_layout
from orchestrator.sim.scene import Canvas, EncoderMissing, blank_planes, block_box, build_scene, to_rgb
from orchestrator.sim.still_options import parse_still_args
from orchestrator.sim.still_pictures import PictureRefused, build_bmp, build_png, build_still, still_size
from orchestrator.sim.synth import H264Spec, encode_h264, jpeg_qscale
from orchestrator.sim.video_plan import check_size, h264_gop, loop_frames, uses_shipped_clip

np = pytest.importorskip("numpy")

HARDWARE = Encoding(Encoder.HARDWARE_H264, inline_headers=True)
LIBX264 = Encoding(Encoder.LIBX264, inline_headers=True, b_frames=True)


# ------------------------------------------------------------------------------------------------- scene


def test_scene_planes_have_the_asked_size_and_every_frame_differs() -> None:
    for width, height in ((640, 480), (101, 51), (2, 2)):
        planes = build_scene(width, height, 0)
        assert planes.y.shape == (height, width)
        assert planes.u.shape == planes.v.shape == ((height + 1) // 2, (width + 1) // 2)
    frames = [build_scene(320, 240, index) for index in range(70)]
    assert all(not np.array_equal(a.y, b.y) for a, b in itertools.pairwise(frames))
    # the bottom quarter is the bare gradient, the same in every frame
    assert all(np.array_equal(frame.y[180:], frames[0].y[180:]) for frame in frames)
    with pytest.raises(ValueError, match="at least one pixel"):
        build_scene(0, 10, 0)


def test_canvas_redraws_the_same_pictures_as_fresh_scenes() -> None:
    canvas = Canvas(blank_planes(200, 150))
    for index in (0, 1, 2, 40, 63, 64, 65, 999_999, 1_000_000):
        canvas.draw(index)
        fresh = build_scene(200, 150, index)
        for drawn, expected in zip((canvas.planes.y, canvas.planes.u, canvas.planes.v),
                                   (fresh.y, fresh.u, fresh.v), strict=True):
            assert np.array_equal(drawn, expected), index


def test_block_moves_and_stays_inside() -> None:
    boxes = [block_box(640, 480, index) for index in range(200)]
    assert len({box[0] for box in boxes}) > 20
    assert all(left % 2 == 0 and top % 2 == 0 and left + w <= 640 and top + h <= 480 for left, top, w, h in boxes)


def test_rgb_is_full_range_bt601() -> None:
    planes = blank_planes(2, 2)
    planes.y[...] = 128
    planes.u[...] = 128
    planes.v[...] = 128
    assert to_rgb(planes).tolist() == [[[128, 128, 128]] * 2] * 2
    planes.v[...] = 255  # Cr up: red
    red, green, blue = to_rgb(planes)[0, 0]
    assert red == 255 and green < 128 and blue == 128


# --------------------------------------------------------------------------------------------- raw layouts


@pytest.mark.parametrize(
    ("width", "pi4", "pi5"),
    [(640, 640, 640), (1920, 1920, 1920), (1280, 1280, 1280), (100, 128, 128), (960, 960, 1024),
     (832, 832, 896), (1366, 1408, 1408), (720, 768, 768), (64, 64, 128)],
)
def test_rpicam_yuv420_stride_per_board(width: int, pi4: int, pi5: int) -> None:
    assert rpicam_video_layout(width, 480, Board.PI4).stride == pi4
    assert rpicam_video_layout(width, 480, Board.PI5).stride == pi5
    layout = rpicam_video_layout(width, 480, Board.PI5)
    assert layout.frame_bytes == pi5 * 480 * 3 // 2  # sizeimage = bytesperline * height * 3 / 2


@pytest.mark.parametrize(
    ("kind", "width", "height", "frame_bytes"),
    [
        (RawKind.I420, 1920, 1080, 1920 * 1088 * 3 // 2),  # RaspiVidYUV.c dump_status: Y height padded to 16
        (RawKind.I420, 100, 50, 128 * 64 * 3 // 2),
        (RawKind.RGB24, 100, 50, 128 * 3 * 64),
        (RawKind.BGR24, 640, 480, 640 * 3 * 480),
        (RawKind.LUMA, 100, 50, 128 * 64),
    ],
)
def test_legacy_raw_buffers(kind: RawKind, width: int, height: int, frame_bytes: int) -> None:
    layout = legacy_layout(width, height, kind)
    assert layout.frame_bytes == frame_bytes
    assert len(pack(build_scene(width, height, 3), layout)) == frame_bytes


def test_pack_puts_the_picture_top_left_and_zeros_in_the_padding() -> None:
    planes = build_scene(100, 50, 7)
    data = np.frombuffer(pack(planes, rpicam_video_layout(100, 50, Board.PI4)), np.uint8)
    luma = data[: 128 * 50].reshape(50, 128)
    assert np.array_equal(luma[:, :100], planes.y) and not luma[:, 100:].any()
    u = data[128 * 50 : 128 * 50 + 64 * 25].reshape(25, 64)
    assert np.array_equal(u[:, :50], planes.u) and not u[:, 50:].any()
    v = data[128 * 50 + 64 * 25 :].reshape(25, 64)
    assert np.array_equal(v[:, :50], planes.v)
    legacy = np.frombuffer(pack(planes, legacy_layout(100, 50, RawKind.I420)), np.uint8)
    assert np.array_equal(legacy[: 128 * 64].reshape(64, 128)[:50, :100], planes.y)
    assert not legacy[: 128 * 64].reshape(64, 128)[50:].any()  # 14 padding rows


@pytest.mark.parametrize("kind", [RawKind.I420, RawKind.LUMA, RawKind.RGB24, RawKind.BGR24])
@pytest.mark.parametrize("size", [(1920, 1080), (101, 51), (33, 7), (1, 1)])
def test_raw_video_redraws_only_what_moves_yet_equals_whole_pictures(kind: RawKind, size: tuple[int, int]) -> None:
    layout = legacy_layout(*size, kind)
    frames = RawFrames(layout)
    for index in (0, 1, 2, 64, 7, 1_000_001):
        assert frames.frame(index) == pack(build_scene(*size, index), layout), index
    if kind is RawKind.I420:
        padded = RawFrames(rpicam_video_layout(*size, Board.PI5))
        assert padded.frame(3) == pack(build_scene(*size, 3), rpicam_video_layout(*size, Board.PI5))


def test_raw_colour_orders() -> None:
    planes = build_scene(64, 64, 0)
    rgb = to_rgb(planes)
    assert pack(planes, unpadded_layout(64, 64, RawKind.RGB24)) == rgb.tobytes()
    assert pack(planes, legacy_layout(64, 64, RawKind.BGR24)) == rgb[..., ::-1].tobytes()
    wide = np.frombuffer(pack(planes, unpadded_layout(64, 64, RawKind.RGB48)), "<u2").reshape(64, 64, 3)
    assert np.array_equal(wide >> 8, rgb) and not (wide & 0xFF).any()


# ------------------------------------------------------------------------------------------------ stills


def test_bmp_is_rpicam_stills_layout() -> None:
    planes = build_scene(33, 10, 0)
    data = build_bmp(planes)
    assert data[:2] == b"BM" and struct.unpack("<I", data[2:6])[0] == len(data) == 54 + 10 * 100  # 99 -> 100 bytes
    assert struct.unpack("<IIiiHH", data[10:30]) == (54, 40, 33, -10, 1, 24)  # top-down rows, 24 bits
    first_pixel = data[54:57]
    assert first_pixel == bytes(to_rgb(planes)[0, 0][::-1])  # B, G, R


def test_png_decodes_to_the_scene(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    planes = build_scene(90, 60, 5)
    path = tmp_path / "x.png"
    path.write_bytes(build_png(planes))
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    assert np.array_equal(frame.to_ndarray(format="rgb24"), to_rgb(planes))


def test_still_sizes_and_refusals() -> None:
    assert still_size(0, 0) == (3280, 2464) and still_size(640, 0) == (640, 2464)
    assert len(build_still("rpicam-still", "yuv420", 64, 48, 0, 93)) == 64 * 48 * 3 // 2  # no padding
    assert len(build_still("rpicam-still", "rgb24", 100, 50, 0, 93)) == 100 * 50 * 3
    assert len(build_still("raspiyuv", "i420", 100, 50, 0, 0)) == 128 * 64 * 3 // 2  # padded like its video
    assert len(build_still("raspiyuv", "rgb24", 100, 50, 0, 0)) == 128 * 3 * 64
    with pytest.raises(PictureRefused, match="both width and height must be even"):
        build_still("rpicam-still", "yuv420", 65, 48, 0, 93)
    with pytest.raises(ValueError):
        build_still("raspistill", "tga", 10, 10, 0, 0)


def test_jpeg_quality_to_qscale() -> None:
    qscales = [jpeg_qscale(quality) for quality in (1, 10, 25, 50, 75, 85, 93, 100, 150)]
    assert qscales == sorted(qscales, reverse=True) and qscales[0] == 31 and qscales[-1] == 1
    assert jpeg_qscale(50) == 4


# ----------------------------------------------------------------------------------------- loops and GOPs


def test_gop_follows_the_encoder() -> None:
    def options(*args: str, tool: str = "rpicam-vid") -> object:
        return parse_args(tool, list(args))

    assert h264_gop(LIBX264, options("--framerate", "30")) == 30  # libav_encoder.cpp: the frame rate
    assert h264_gop(LIBX264, options("--intra", "12")) == 12
    assert h264_gop(HARDWARE, options()) == 60  # the bcm2835 encoder's default I-period
    assert h264_gop(HARDWARE, options("--intra", "0")) == 60  # rpicam: 0 is "not set"
    assert h264_gop(HARDWARE, options("-g", "10", tool="raspivid")) == 10
    assert h264_gop(HARDWARE, options("-g", "0", tool="raspivid")) == 0  # one IDR, then P-frames only


@pytest.mark.parametrize(
    ("size", "fps", "gop", "frames"),
    [
        ((1920, 1080), 30, 60, 60),  # one GOP, 2 s
        ((1920, 1080), 30, 30, 60),  # two GOPs
        ((1920, 1080), 30, 120, 60),  # a GOP over the pixel budget: cut, IDR every 60
        ((640, 480), 25, 25, 50),
        ((640, 480), 300, 25, 100),  # at most 120 frames, whole GOPs
        ((640, 480), 30, 200, 200),  # one GOP longer than 120 frames is kept whole
        ((640, 480), 30, 0, 60),  # no second IDR: about 2 s
        ((4056, 3040), 10, 10, 10),
    ],
)
def test_loop_length(size: tuple[int, int], fps: float, gop: int, frames: int) -> None:
    assert loop_frames(*size, fps, gop) == frames


def test_shipped_clip_only_for_its_own_geometry() -> None:
    clip = parse_rpicam_args(["--width", "640", "--height", "360", "--framerate", "25"])
    assert uses_shipped_clip(HARDWARE, clip) and uses_shipped_clip(LIBX264, clip)
    assert uses_shipped_clip(HARDWARE, parse_rpicam_args(["--width", "640", "--height", "360", "--framerate", "25",
                                                          "--intra", "25"]))
    assert uses_shipped_clip(HARDWARE, parse_args("raspivid", ["-w", "640", "-h", "360", "-fps", "25"]))
    for changed in (["--framerate", "30"], ["--height", "480"], ["--intra", "10"], ["--profile", "high"]):
        args = {"--width": "640", "--height": "360", "--framerate": "25", changed[0]: changed[1]}
        assert not uses_shipped_clip(HARDWARE, parse_rpicam_args([word for pair in args.items() for word in pair]))
    assert not uses_shipped_clip(replace(LIBX264, b_frames=False), clip)  # --low-latency: never the clip
    assert not uses_shipped_clip(HARDWARE, parse_args("raspivid", ["-w", "640", "-h", "360", "-fps", "25", "-g", "0"]))


def test_sizes_the_simulator_refuses() -> None:
    yuv = Encoding(Encoder.YUV420)
    assert check_size(HARDWARE, parse_rpicam_args(["--width", "1280", "--height", "720"])) is None
    assert isinstance(check_size(HARDWARE, parse_rpicam_args(["--width", "641"])), Refusal)
    assert check_size(yuv, parse_rpicam_args(["--width", "100", "--height", "64"])) is None
    refused = check_size(yuv, parse_rpicam_args(["--width", "32", "--height", "32"]))
    assert isinstance(refused, Refusal) and refused.lines[0].startswith("simulator: yuv420 at 32x32")
    assert check_size(Encoding(Encoder.MJPEG), parse_rpicam_args(["--width", "641"])) is None


def test_without_pyav_only_the_clips_play(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails
    with pytest.raises(EncoderMissing, match="pip install av numpy"):
        encode_h264(H264Spec(64, 64, 25.0, 25, 25), {"PIORCH_SIM_CACHE": str(tmp_path)})


# --------------------------------------------------------------------------------------- raw tools' options


def test_raspividyuv_options() -> None:
    options = parse_args("raspividyuv", ["-w", "100", "-h", "50", "-fps", "20", "-t", "0", "-o", "-"])
    assert (options.width, options.height, options.framerate, options.codec) == (100, 50, 20.0, "i420")
    assert (options.bitrate, options.inline_headers, options.timeout_ms) == (0, False, 0)
    defaults = parse_args("raspividyuv", [])
    assert (defaults.width, defaults.height, defaults.framerate, defaults.timeout_ms) == (1920, 1080, 30.0, 5000)
    assert parse_args("raspividyuv", ["--rgb"]).codec == "rgb24"
    assert parse_args("raspividyuv", ["-y"]).codec == "luma"
    for args, message in (
        (["-b", "1000000"], "Invalid command line option (-b)"),  # no encoder options at all
        (["-ih"], "Invalid command line option (-ih)"),
        (["-y", "-rgb"], "--luma and --rgb are mutually exclusive\nInvalid command line option (-rgb)"),
        (["-rgb", "--luma"], "--luma and --rgb are mutually exclusive\nInvalid command line option (--luma)"),
    ):
        with pytest.raises(SimUsageError) as error:
            parse_args("raspividyuv", args)
        assert error.value.message == message


def test_raspiyuv_and_still_encodings() -> None:
    options = parse_still_args("raspiyuv", ["-w", "100", "-h", "50", "-o", "-"])
    assert (options.encoding, options.width, options.height, options.timeout_ms) == ("i420", 100, 50, 5000)
    assert parse_still_args("raspiyuv", ["-rgb", "-bgr"]).encoding == "bgr24"  # the last one wins
    assert parse_still_args("raspiyuv", ["-y"]).encoding == "luma"
    with pytest.raises(SimUsageError) as error:
        parse_still_args("raspiyuv", ["-y", "-bgr"])
    assert error.value.message == "--luma and --rgb/--bgr are mutually exclusive\nInvalid command line option (-bgr)"
    with pytest.raises(SimUsageError):
        parse_still_args("raspiyuv", ["-e", "png"])  # raspiyuv has no encodings
    assert parse_still_args("rpicam-still", ["-e", "RGB"]).encoding == "rgb24"  # ParseStill's spelling
    assert parse_still_args("rpicam-still", ["--quality", "40"]).quality == 40
    assert parse_still_args("rpicam-still", []).quality == 93
    assert parse_still_args("raspistill", []).quality == 85
    capped = parse_still_args("raspistill", ["-q", "150"])
    assert capped.quality == 100 and capped.notices == ("Setting max quality = 100",)


def test_raw_tools_exist_only_on_a_legacy_pi() -> None:
    assert PiProfile().has_tool("raspividyuv") and PiProfile().has_tool("raspiyuv")
    assert not PiProfile(Board.PI5).has_tool("raspividyuv") and not PiProfile(Board.PI5).has_tool("raspiyuv")
