"""The streaming MJPEG splitter, fed real ffmpeg MJPEG (with restart markers) at every read size, and
streams crafted to fool a naive SOI/EOI search: FF D9 and FF D8 inside a COM segment, a whole JPEG inside an
APP segment, fill bytes, garbage between images, an image cut short."""

from __future__ import annotations

import io
import random
import subprocess
from collections.abc import Iterable, Iterator
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.stream.mjpeg import JpegSplitter, Piece
from tests.system_tools import require_tool

READ_SIZES = range(1, 65)
FRAMES = 10


# ------------------------------------------------------------------------------------------------- helpers


def chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def split_at(data: bytes, boundaries: Iterable[int]) -> list[bytes]:
    cuts = sorted({b for b in boundaries if 0 < b < len(data)})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def split_all(chunks: Iterable[bytes | bytearray | memoryview]) -> tuple[list[bytes], JpegSplitter]:
    """The frames as the writer would store them, one file per `new_frame`."""
    splitter = JpegSplitter()
    frames: list[bytearray] = []

    def take(pieces: list[Piece]) -> None:
        for piece in pieces:
            if piece.new_frame:
                frames.append(bytearray())
            assert frames, "the first piece must open a frame"
            frames[-1] += piece.data  # copied right away: the writer may reuse its buffer

    for chunk in chunks:
        take(splitter.feed(chunk))
    take(splitter.finish())
    return [bytes(f) for f in frames], splitter


def decodes_alone(jpeg: bytes) -> bool:
    import av

    with av.open(io.BytesIO(jpeg), format="mjpeg") as container:
        return sum(1 for _ in container.decode(video=0)) == 1


@cache
def ffmpeg_mjpeg() -> bytes:
    """10 JPEGs, 160x120; 4 slices make ffmpeg write DRI and restart markers (FF D0-D7) in the image data."""
    argv = [
        require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
        "-i", f"testsrc2=size=160x120:rate=25,trim=end_frame={FRAMES}",
        "-c:v", "mjpeg", "-q:v", "5", "-threads", "4", "-slices", "4", "-f", "mjpeg", "-",
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout


@cache
def plain_frames() -> tuple[bytes, ...]:
    """The ffmpeg images one by one (ffmpeg's own COM segment holds no FF, so a naive split is right here)."""
    data = ffmpeg_mjpeg()
    frames = tuple(b"\xff\xd8" + part for part in data.split(b"\xff\xd8")[1:])
    assert b"".join(frames) == data and len(frames) == FRAMES
    return frames


def segment(code: int, payload: bytes) -> bytes:
    return bytes((0xFF, code)) + (len(payload) + 2).to_bytes(2, "big") + payload


# Payloads a naive SOI/EOI search takes for image boundaries.
TRAP_COMMENT = b"piorch \xff\xd9 not an end \xff\xd8 not a start \xff\xff\xd9"


@cache
def crafted_frames() -> tuple[bytes, ...]:
    """Each image gets a COM segment full of fake markers, an APP1 segment holding another whole JPEG (as an
    EXIF thumbnail does), and fill bytes before its DQT marker. Each still decodes."""
    frames = plain_frames()
    result = []
    for i, frame in enumerate(frames):
        thumbnail = frames[(i + 1) % len(frames)]
        extra = segment(0xFE, TRAP_COMMENT) + segment(0xE1, b"piorch-thumbnail\x00" + thumbnail)
        result.append(frame[:2] + extra + frame[2:].replace(b"\xff\xdb", b"\xff\xff\xff\xdb", 1))
    return tuple(result)


# ------------------------------------------------------------------------------------------------- streams


def test_ffmpeg_mjpeg_at_every_read_size() -> None:
    data = ffmpeg_mjpeg()
    assert data.count(b"\xff\xd0") > 0  # restart markers in the image data are part of the test
    expected = list(plain_frames())
    for size in (*READ_SIZES, 1000, 1 << 20):
        frames, splitter = split_all(chunks_of(data, size))
        assert frames == expected, f"read size {size}"
        assert splitter.frames == data.count(b"\xff\xd8") == FRAMES
        assert (splitter.truncated, splitter.skipped_bytes) == (0, 0)
    assert all(decodes_alone(frame) for frame in expected)


def test_markers_inside_segments_do_not_split_at_every_read_size() -> None:
    expected = list(crafted_frames())
    data = b"".join(expected)
    assert data.count(b"\xff\xd8") == 2 * FRAMES + FRAMES  # own SOI, thumbnail SOI, fake SOI in the comment
    for size in READ_SIZES:
        frames, splitter = split_all(chunks_of(data, size))
        assert frames == expected, f"read size {size}"
        assert splitter.frames == FRAMES
    for frame in frames:
        assert frame.startswith(b"\xff\xd8") and frame.endswith(b"\xff\xd9")
        assert decodes_alone(frame)


def test_garbage_outside_images_is_dropped_and_counted() -> None:
    frames = plain_frames()[:4]
    garbage = [b"junk\xff", b"\x00" * 7, b"\xff\xff\xd9\xff", b"", b"tail\xff"]
    data = b"".join(g + f for g, f in zip(garbage, [*frames, b""], strict=True))
    for size in (*range(1, 17), 4096):
        got, splitter = split_all(chunks_of(data, size))
        assert got == list(frames), f"read size {size}"
        assert splitter.skipped_bytes == sum(map(len, garbage))
        assert (splitter.frames, splitter.truncated) == (4, 0)


def test_an_image_cut_short_ends_where_the_next_begins() -> None:
    first, second, third = plain_frames()[:3]
    broken = first[: len(first) // 2]  # cut inside the image data
    data = broken + second + third[:-100]  # the stream also ends inside an image
    for size in (1, 2, 3, 64, len(data)):
        got, splitter = split_all(chunks_of(data, size))
        assert got == [broken, second, third[:-100]], f"read size {size}"
        assert (splitter.frames, splitter.truncated, splitter.skipped_bytes) == (3, 2, 0)


def test_corrupt_marker_segments_recover_at_the_next_image() -> None:
    first, second = plain_frames()[:2]
    bad_length = first[:2] + b"\xff\xfe\x00\x01" + first[2:]  # a length below 2 is impossible
    not_a_marker = first[:2] + b"\x12\x34" + first[2:]  # no FF where a marker must be
    for bad in (bad_length, not_a_marker):
        got, splitter = split_all(chunks_of(bad + second, 5))
        assert got == [bad, second]
        assert splitter.frames == 2


def test_memory_stays_flat_on_one_byte_reads() -> None:
    data = b"".join(crafted_frames())
    splitter = JpegSplitter()
    handed = 0
    for fed, byte in enumerate(chunks_of(data, 1), start=1):
        handed += sum(len(p.data) for p in splitter.feed(byte))
        assert fed - handed - splitter.skipped_bytes <= 3


def test_a_whole_bytes_chunk_is_handed_out_without_a_copy() -> None:
    frame = plain_frames()[0]
    pieces = JpegSplitter().feed(frame)
    assert len(pieces) == 1 and pieces[0].data is frame and pieces[0].new_frame


def test_empty_input() -> None:
    splitter = JpegSplitter()
    assert splitter.feed(b"") == []
    assert splitter.finish() == []
    assert (splitter.frames, splitter.truncated, splitter.skipped_bytes) == (0, 0, 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    boundaries=st.lists(st.integers(0, 200_000), max_size=300),
    kinds=st.lists(st.sampled_from([bytes, bytearray, memoryview]), min_size=1, max_size=4),
)
def test_any_read_boundaries_give_the_same_images(boundaries: list[int], kinds: list[type]) -> None:
    expected = list(crafted_frames())
    data = b"".join(expected)
    chunks = [kinds[i % len(kinds)](c) for i, c in enumerate(split_at(data, boundaries))]
    got, splitter = split_all(chunks)
    assert got == expected
    assert splitter.frames == FRAMES


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.sampled_from([0x00, 0xFF, 0xFF, 0xD8, 0xD9, 0xDA, 0xD0, 0xFE, 0x00, 0x02, 0x41]), max_size=400),
    boundaries=st.lists(st.integers(0, 400), max_size=50),
)
def test_hostile_bytes_split_the_same_whatever_the_reads(data: list[int], boundaries: list[int]) -> None:
    stream = bytes(data)
    whole, whole_splitter = split_all([stream])
    got, splitter = split_all(split_at(stream, boundaries))
    assert got == whole
    assert sum(map(len, got)) + splitter.skipped_bytes == len(stream)
    assert all(frame.startswith(b"\xff\xd8") for frame in got)
    assert (splitter.frames, splitter.truncated) == (whole_splitter.frames, whole_splitter.truncated)
    assert splitter.frames == len(got)


def test_random_read_sizes_on_a_long_stream() -> None:
    expected = list(crafted_frames()) * 3
    data = b"".join(expected)
    rng = random.Random(4)
    pos, chunks = 0, []
    while pos < len(data):
        size = rng.choice((1, 2, 3, rng.randint(1, 70_000)))
        chunks.append(data[pos : pos + size])
        pos += size
    got, _ = split_all(chunks)
    assert got == expected
