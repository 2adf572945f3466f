"""The laptop's frame decoders: H.264 (B-frames too) and MJPEG through PyAV, raw I420 cut byte-exact, at every
read size, each frame compared with an independent decode or with the bytes the camera sent."""

from __future__ import annotations

from fractions import Fraction

import pytest

av = pytest.importorskip("av")
np = pytest.importorskip("numpy")

from orchestrator.stream.frames import (  # noqa: E402
    RawI420Decoder,
    check_pixel_format,
    i420_frame_bytes,
    make_decoder,
)

W, H = 64, 48


def _pictures(count: int = 12) -> list[np.ndarray]:
    pictures = []
    for index in range(count):
        picture = np.zeros((H, W, 3), np.uint8)
        picture[:, :, 2] = 10 + index * 15
        picture[:, index * 4:index * 4 + 8, 1] = 255  # a bar that moves: every frame differs
        pictures.append(picture)
    return pictures


def _encode(codec: str, pictures: list[np.ndarray], b_frames: int = 0) -> bytes:
    context = av.CodecContext.create("libx264" if codec == "h264" else "mjpeg", "w")
    context.width, context.height, context.time_base = W, H, Fraction(1, 25)
    context.pix_fmt = "yuv420p" if codec == "h264" else "yuvj420p"
    if codec == "h264":
        context.options = {"bf": str(b_frames), "g": "5"}
    data = bytearray()
    for index, picture in enumerate(pictures):
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format=context.pix_fmt)
        frame.pts = index
        for packet in context.encode(frame):
            data += bytes(packet)
    for packet in context.encode(None):
        data += bytes(packet)
    return bytes(data)


def _reference(codec: str, data: bytes) -> list[np.ndarray]:
    """An independent decode: the whole stream at once through PyAV's demuxer."""
    import io

    with av.open(io.BytesIO(data), format="h264" if codec == "h264" else "mjpeg") as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def _feed_all(decoder, data: bytes, size: int) -> list[np.ndarray]:
    arrays = []
    for start in range(0, len(data), size):
        arrays += decoder.feed(memoryview(data)[start:start + size])
    return arrays + decoder.finish()


@pytest.mark.parametrize("codec,b_frames", [("h264", 0), ("h264", 2), ("mjpeg", 0)])
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_codec_frames_equal_an_independent_decode_at_every_read_size(codec: str, b_frames: int, size: int) -> None:
    pictures = _pictures()
    data = _encode(codec, pictures, b_frames)
    arrays = _feed_all(make_decoder(codec, "bgr24", W, H), data, size)
    reference = _reference(codec, data)
    assert len(arrays) == len(reference) == len(pictures)
    for ours, theirs in zip(arrays, reference, strict=True):
        assert ours.shape == (H, W, 3) and ours.dtype == np.uint8
        assert np.array_equal(ours, theirs)
    # Display order: the moving bar's red level rises frame by frame, B-frames or not.
    reds = [int(array[:, :, 2].mean()) for array in arrays]
    assert reds == sorted(reds)


@pytest.mark.parametrize("name,shape", [("bgr", (H, W, 3)), ("rgb", (H, W, 3)), ("bgra", (H, W, 4)),
                                        ("rgba", (H, W, 4)), ("yuv", (H * 3 // 2, W))])
def test_each_array_format_has_picameras_shape(name: str, shape: tuple[int, ...]) -> None:
    data = _encode("h264", _pictures(3))
    arrays = _feed_all(make_decoder("h264", check_pixel_format(name), W, H), data, 512)
    assert [array.shape for array in arrays] == [shape] * 3
    if name in ("rgb", "rgba"):
        bgr = _feed_all(make_decoder("h264", "bgr24", W, H), data, 512)
        assert np.array_equal(arrays[0][:, :, :3], bgr[0][:, :, ::-1])


def test_raw_i420_frames_are_the_camera_bytes_exactly() -> None:
    frames = [bytes([index]) * i420_frame_bytes(W, H) for index in range(5)]
    stream = b"".join(frames)
    for size in (1, 1000, len(stream)):
        decoder = RawI420Decoder(W, H, "yuv420p")
        arrays = _feed_all(decoder, stream, size)
        assert [array.tobytes() for array in arrays] == frames
        assert all(array.shape == (H * 3 // 2, W) for array in arrays)
        assert decoder.partial_bytes == 0


def test_raw_i420_with_stride_padding_is_cropped_to_the_picture() -> None:
    stride = 96  # the camera's buffer rows are wider than the picture
    luma = np.arange(stride * H, dtype=np.uint32).astype(np.uint8).reshape(H, stride)
    u = np.full((H // 2, stride // 2), 100, np.uint8)
    v = np.full((H // 2, stride // 2), 200, np.uint8)
    u[:, W // 2:] = v[:, W // 2:] = 7  # padding bytes, never part of the picture
    frame = luma.tobytes() + u.tobytes() + v.tobytes()
    assert len(frame) == i420_frame_bytes(W, H, stride)
    (array,) = _feed_all(RawI420Decoder(W, H, "yuv420p", stride=stride), frame + frame[:10], 333)
    expected = np.concatenate([luma[:, :W].reshape(-1), u[:, :W // 2].reshape(-1), v[:, :W // 2].reshape(-1)])
    assert np.array_equal(array.reshape(-1), expected)


def test_full_range_i420_is_read_as_full_range() -> None:
    # The camera's raw video is full range (sYCC): luma 16 is a dark grey, not black; 235 not yet white.
    i420 = np.full((H * 3 // 2, W), 128, np.uint8)
    i420[:H // 2] = 16
    i420[H // 2:H] = 235
    (full,) = _feed_all(RawI420Decoder(W, H, "bgr24", full_range=True), i420.tobytes(), 100)
    (limited,) = _feed_all(RawI420Decoder(W, H, "bgr24"), i420.tobytes(), 100)
    assert abs(int(full[0, 0, 0]) - 16) <= 1 and abs(int(full[-1, 0, 0]) - 235) <= 1
    assert int(limited[0, 0, 0]) == 0 and int(limited[-1, 0, 0]) == 255


def test_raw_i420_converts_to_bgr_like_ffmpeg() -> None:
    picture = _pictures(1)[0]
    i420 = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p").to_ndarray()
    (bgr,) = _feed_all(RawI420Decoder(W, H, "bgr24"), i420.tobytes(), 100)
    reference = av.VideoFrame.from_ndarray(i420, format="yuv420p").to_ndarray(format="bgr24")
    assert np.array_equal(bgr, reference)


def test_a_truncated_last_jpeg_is_not_a_frame() -> None:
    data = _encode("mjpeg", _pictures(3))
    arrays = _feed_all(make_decoder("mjpeg", "bgr24", W, H), data[:-100], 50)
    assert len(arrays) == 2


def test_unknown_formats_and_codecs_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="use one of bgr, rgb, bgra, rgba, yuv"):
        check_pixel_format("hsv")
    with pytest.raises(ValueError, match="use h264, mjpeg or yuv420"):
        make_decoder("vp9", "bgr24", W, H)
    with pytest.raises(ValueError, match="even"):
        RawI420Decoder(63, 48)
