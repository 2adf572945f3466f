"""The laptop's half of raw pixels (stream/raw.py): padding dropped, byte orders, swscale resizing, the
YUV4MPEG2 twin of a raw recording and the manifests' `raw` object, checked against numpy and PyAV."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from orchestrator.events import FileFinished, FileStatus, RawLayout
from orchestrator.stream.raw import (
    amend_manifest,
    build_y4m_header,
    convert_picture,
    convert_received,
    count_frames,
    finish_raw_video,
    reorder,
    unpad,
    write_y4m,
)

np = pytest.importorskip("numpy")
av = pytest.importorskip("av")

RNG = np.random.default_rng(12)


def i420_planes(width: int, height: int) -> list[np.ndarray]:
    return [RNG.integers(0, 256, (h, w), dtype=np.uint8)
            for w, h in ((width, height), (width // 2, height // 2), (width // 2, height // 2))]


def pad_i420(planes: list[np.ndarray], layout: RawLayout) -> bytes:
    """The planes inside a camera buffer of `layout`, the padding full of garbage (as a real ISP leaves it)."""
    parts = []
    for index, plane in enumerate(planes):
        stride, rows = (layout.stride, layout.rows) if index == 0 else (layout.stride // 2, layout.rows // 2)
        buffer = RNG.integers(0, 256, (rows, stride), dtype=np.uint8)
        buffer[:plane.shape[0], :plane.shape[1]] = plane
        parts.append(buffer.tobytes())
    return b"".join(parts)


@pytest.mark.parametrize(("width", "height", "stride", "rows"),
                         [(640, 480, 640, 480), (1000, 750, 1024, 752), (800, 600, 896, 600), (18, 10, 32, 16)])
def test_i420_padding_is_dropped(width: int, height: int, stride: int, rows: int) -> None:
    layout = RawLayout("yuv420p", width, height, stride, rows)
    planes = i420_planes(width, height)
    data = pad_i420(planes, layout)
    assert len(data) == layout.frame_bytes
    assert unpad(data, layout) == b"".join(plane.tobytes() for plane in planes)


def test_rgb_padding_is_dropped() -> None:
    picture = RNG.integers(0, 256, (10, 18, 3), dtype=np.uint8)
    buffer = RNG.integers(0, 256, (16, 32 * 3), dtype=np.uint8)
    buffer[:10, :54] = picture.reshape(10, 54)
    assert unpad(buffer.tobytes(), RawLayout("rgb24", 18, 10, 96, 16)) == picture.tobytes()


def test_too_few_bytes_are_not_a_frame() -> None:
    with pytest.raises(ValueError, match="less than one 4x2 frame"):
        unpad(b"\x00" * 11, RawLayout.packed("yuv420p", 4, 2))


@pytest.mark.parametrize(("source", "target", "order", "alpha"),
                         [("rgb24", "bgr24", [2, 1, 0], False), ("rgb24", "rgba", [0, 1, 2], True),
                          ("rgb24", "bgra", [2, 1, 0], True), ("bgr24", "rgb24", [2, 1, 0], False)])
def test_byte_orders_are_exact(source: str, target: str, order: list[int], alpha: bool) -> None:
    picture = RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    expected = picture[:, :, order]
    if alpha:
        expected = np.concatenate([expected, np.full((7, 5, 1), 255, np.uint8)], axis=2)
    assert reorder(picture.tobytes(), source, target) == expected.tobytes()
    # The same through the whole conversion, from a padded camera buffer.
    buffer = np.zeros((16, 32 * 3), np.uint8)
    buffer[:7, :15] = picture.reshape(7, 15)
    camera = RawLayout(source, 5, 7, 96, 16)
    assert convert_picture(buffer.tobytes(), camera, RawLayout.packed(target, 5, 7)) == expected.tobytes()


@pytest.mark.parametrize(("source", "target"), [("rgb24", "bgra"), ("yuv420p", "yuv420p"), ("rgb24", "rgb24")])
def test_resize_is_swscale(source: str, target: str) -> None:
    camera = RawLayout.packed(source, 64, 48)
    data = RNG.integers(0, 256, camera.frame_bytes, dtype=np.uint8).tobytes()
    shape = (72, 64) if source == "yuv420p" else (48, 64, 3)
    frame = av.VideoFrame.from_ndarray(np.frombuffer(data, np.uint8).reshape(shape), format=source)
    reference = frame.reformat(width=32, height=24, format=target).to_ndarray().tobytes()
    out = convert_picture(data, camera, RawLayout.packed(target, 32, 24))
    assert out == reference and len(out) == RawLayout.packed(target, 32, 24).frame_bytes


def test_y4m_header() -> None:
    assert build_y4m_header(RawLayout("yuv420p", 640, 480, 640, 480, 30)) == \
        b"YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg\n"
    assert build_y4m_header(RawLayout("yuv420p", 1000, 750, 1024, 750, 25, full_range=True)) == \
        b"YUV4MPEG2 W1000 H750 F25:1 Ip A1:1 C420jpeg XCOLORRANGE=FULL\n"
    with pytest.raises(ValueError, match="frame rate"):
        build_y4m_header(RawLayout("yuv420p", 4, 2, 4, 2))


def test_y4m_opens_in_pyav_with_the_camera_frames(tmp_path: Path) -> None:
    layout = RawLayout("yuv420p", 100, 60, 128, 64, 30)  # padded on both sides
    frames = [i420_planes(100, 60) for _ in range(4)]
    raw = tmp_path / "a.yuv"
    raw.write_bytes(b"".join(pad_i420(planes, layout) for planes in frames) + b"\x01" * 1000)  # a cut last frame
    assert count_frames(raw.stat().st_size, layout) == (4, 1000)
    assert write_y4m(raw, tmp_path / "a.y4m", layout) == 4
    assert not list(tmp_path.glob("*.partial"))
    with av.open(str(tmp_path / "a.y4m")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (100, 60)
        assert stream.average_rate == 30
        decoded = [frame.to_ndarray(format="yuv420p") for frame in container.decode(stream)]
    assert len(decoded) == 4
    for planes, array in zip(frames, decoded, strict=True):
        assert array.tobytes() == b"".join(plane.tobytes() for plane in planes)


def test_finish_raw_video_adds_the_twin_and_the_layout(tmp_path: Path) -> None:
    layout = RawLayout("yuv420p", 64, 48, 64, 48, 10)
    raw = tmp_path / "id.yuv"
    raw.write_bytes(bytes(layout.frame_bytes * 3 + 5))
    manifest = tmp_path / "id.json"
    manifest.write_text(json.dumps({"id": "id", "file": "id.yuv", "frames": 3}))
    events: list[object] = []
    done = FileFinished(raw, manifest, layout.frame_bytes * 3 + 5, "x", FileStatus.INTERRUPTED, 1.0)
    finish_raw_video([done], layout, True, events.append)
    data = json.loads(manifest.read_text())
    assert data["frames"] == 3 and data["file"] == "id.yuv" and data["container"] == "yuv"
    assert data["raw"] == {**layout.describe(), "frames": 3, "trailing_bytes": 5, "y4m": "id.y4m"}
    assert (tmp_path / "id.y4m").stat().st_size == len(build_y4m_header(layout)) + 3 * (6 + layout.frame_bytes)
    assert events == []
    # --container h264: the raw stream only.
    (tmp_path / "id.y4m").unlink()
    finish_raw_video([done], layout, False, events.append)
    assert json.loads(manifest.read_text())["raw"]["y4m"] is None and not (tmp_path / "id.y4m").exists()


def test_amend_keeps_what_was_there(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"id": "a", "sha256": "b"}))
    amend_manifest(manifest, {"raw": {"stride": 640}})
    assert json.loads(manifest.read_text()) == {"id": "a", "sha256": "b", "raw": {"stride": 640}}


def test_a_received_picture_is_converted_in_place(tmp_path: Path) -> None:
    picture = RNG.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    path = tmp_path / "p.bgr"
    path.write_bytes(picture.tobytes())
    size, digest, received = convert_received(path, RawLayout.packed("rgb24", 4, 6), RawLayout.packed("bgr24", 4, 6),
                                              path)
    assert path.read_bytes() == picture[:, :, ::-1].tobytes()
    assert (size, digest, received) == (72, hashlib.sha256(path.read_bytes()).hexdigest(),
                                        hashlib.sha256(picture.tobytes()).hexdigest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.bgr"]
