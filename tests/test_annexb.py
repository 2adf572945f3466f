"""The streaming Annex B parser and segment cutter, fed real H.264 at every read size.

Streams: the simulator's shipped clip (looped), and streams made here with ffmpeg/libx264 (other GOPs, AUDs,
SEI, several slices per frame, only 3-byte or only 4-byte start codes, filler NAL units). The oracles are
independent of the code under test: the simulator's whole-buffer NAL splitter and PyAV's decoder.
"""

from __future__ import annotations

import io
import random
import subprocess
from collections.abc import Iterable, Iterator
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.resolve import parse_duration
from orchestrator.sim.camera import CLIP_PATH, build_filler_nal, nal_type, split_nal_units
from orchestrator.stream import h264 as annexb
from orchestrator.stream.h264 import (
    MAX_HOLD,
    AnnexBParser,
    NalStart,
    Piece,
    SegmentCutter,
    SegmentStats,
    frames_for,
    intra_period_for,
)
from tests.system_tools import require_tool

CLIP = CLIP_PATH.read_bytes()
CLIP_GOP = 25  # make_clip.sh: keyint=25, SPS+PPS before every IDR
CLIP_FRAMES = 50
READ_SIZES = range(1, 65)


# ------------------------------------------------------------------------------------------------- helpers


def chunks_of(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def random_chunks(data: bytes, seed: int, largest: int = 4096) -> Iterator[bytes]:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 2, 3, 4, 5, rng.randint(1, largest)))
        yield data[pos : pos + size]
        pos += size


def split_at(data: bytes, boundaries: Iterable[int]) -> list[bytes]:
    cuts = sorted({b for b in boundaries if 0 < b < len(data)})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def parse_all(chunks: Iterable[bytes | bytearray | memoryview]) -> tuple[list[NalStart], AnnexBParser]:
    parser = AnnexBParser()
    found: list[NalStart] = []
    for chunk in chunks:
        found += parser.feed(chunk)
    found += parser.finish()
    return found, parser


def cut_all(chunks: Iterable[bytes | bytearray | memoryview], frames: int) -> tuple[list[Piece], SegmentCutter]:
    cutter = SegmentCutter(frames)
    pieces: list[Piece] = []
    for chunk in chunks:
        # The writer may reuse its buffer after writing: copy what a piece points to right away.
        pieces += [Piece(bytes(p.data), p.new_segment) for p in cutter.feed(chunk)]
    pieces += [Piece(bytes(p.data), p.new_segment) for p in cutter.finish()]
    return pieces, cutter


def segments_of(pieces: list[Piece]) -> list[bytes]:
    segments: list[bytearray] = []
    for piece in pieces:
        if piece.new_segment:
            segments.append(bytearray())
        assert segments, "the first piece must open a segment"
        segments[-1] += piece.data
    return [bytes(s) for s in segments]


def reference_nals(data: bytes) -> list[tuple[int, int, bool]]:
    """(offset, type, first_slice) from the simulator's whole-buffer splitter."""
    result = []
    offset = 0
    for nal in split_nal_units(data):
        header = nal.index(b"\x00\x00\x01") + 3
        kind = nal_type(nal)
        first = kind in (1, 5) and len(nal) > header + 1 and bool(nal[header + 1] & 0x80)
        result.append((offset, kind, first))
        offset += len(nal)
    return result


def naive_nals(data: bytes) -> list[tuple[int, int, bool]]:
    """Whole-buffer reference for any bytes: a start code with no header byte after it is no NAL unit."""
    result = []
    code = data.find(b"\x00\x00\x01")
    while code != -1:
        header = code + 3
        if header < len(data):
            kind = data[header] & 0x1F
            first = kind in (1, 5) and header + 1 < len(data) and bool(data[header + 1] & 0x80)
            result.append((code - 1 if code > 0 and data[code - 1] == 0 else code, kind, first))
        code = data.find(b"\x00\x00\x01", code + 3)
    return result


def as_tuples(found: list[NalStart]) -> list[tuple[int, int, bool]]:
    return [(s.offset, s.nal_type, s.first_slice) for s in found]


def decoded_frames(data: bytes) -> int:
    import av

    with av.open(io.BytesIO(data), format="h264") as container:
        return sum(1 for _ in container.decode(video=0))


def with_start_codes(data: bytes, size: int) -> bytes:
    """The same NAL units, every one behind a start code of `size` (3 or 4) bytes."""
    code = b"\x00" * (size - 3) + b"\x00\x00\x01"
    return b"".join(code + nal[nal.index(b"\x00\x00\x01") + 3 :] for nal in split_nal_units(data))


@cache
def x264_stream(params: str, frames: int = 60, keep_sei: bool = False) -> bytes:
    """A small raw H.264 stream from ffmpeg/libx264, one slice per frame unless `params` says otherwise."""
    argv = [
        require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-f", "lavfi",
        "-i", f"testsrc2=size=64x64:rate=25,trim=end_frame={frames}",  # small: ~12 kB for 60 frames
        "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-crf", "35",
        "-threads", "1",
        "-x264-params", f"scenecut=0:bframes=0:{params}",
    ]  # fmt: skip
    if not keep_sei:
        argv += ["-bsf:v", "filter_units=remove_types=6"]
    result = subprocess.run([*argv, "-f", "h264", "-"], capture_output=True, check=True, timeout=60)
    return result.stdout


def gop_stream(gop: int, frames: int = 60, extra: str = "") -> bytes:
    return x264_stream(f"keyint={gop}:min-keyint={gop}:repeat-headers=1{extra}", frames)


def headers_once(data: bytes) -> bytes:
    """SPS and PPS only at the start, like a camera without inline headers."""
    nals = split_nal_units(data)
    return b"".join(n for i, n in enumerate(nals) if i < 2 or nal_type(n) not in (7, 8))


# ------------------------------------------------------------------------------------- pure-function tables


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5), ("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("1h30m15s", 5415),
        ("2m30s", 150), ("90", 90), ("2.5", 2.5), ("2.5s", 2.5), ("1.5h", 5400), (" 10M ", 600), ("0.5s", 0.5),
    ],
)  # fmt: skip
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", " ", "s", "10x", "ten", "-5", "-5s", "0", "0s", "0h0m", "m5", "5 s", "1h1h", "10m5h", "nan", "inf",
             "5s;rm -rf /", "1e999"],
)  # fmt: skip
def test_parse_duration_rejects_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "fps", "frames"), [(10, 25, 250), (1, 30, 30), (7, 29.97, 210), (0.01, 25, 1), (1 / 30, 25, 1)]
)
def test_frames_for(seconds: float, fps: float, frames: int) -> None:
    assert frames_for(seconds, fps) == frames


@pytest.mark.parametrize(("seconds", "fps"), [(0, 25), (-1, 25), (5, 0)])
def test_frames_for_rejects_nonpositive(seconds: float, fps: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        frames_for(seconds, fps)


@pytest.mark.parametrize(
    ("seconds", "fps", "gop"),
    [
        (10, 25, 25),  # 250 frames: one IDR per second
        (600, 30, 30),
        (5, 29.97, 30),  # 150 frames
        (7, 23, 23),
        (1, 25, 25),
        (0.4, 25, 10),  # shorter than a second: the segment is one GOP
        (3.52, 25, 22),  # 88 frames: 22 divides it, 25 does not
        (4.04, 25, 25),  # 101 frames, prime: no sensible divisor, segments run up to one GOP longer
    ],
)
def test_intra_period_for(seconds: float, fps: float, gop: int) -> None:
    assert intra_period_for(seconds, fps) == gop


def test_intra_period_makes_whole_gop_segments_when_it_can() -> None:
    for fps in (10, 15, 24, 25, 30, 50, 60):
        for seconds in (1, 2, 5, 10, 30, 60, 90, 600, 3600):
            segment, gop = frames_for(seconds, fps), intra_period_for(seconds, fps)
            assert segment % gop == 0
            assert fps / 2 <= gop <= fps


def test_cutter_needs_a_positive_frame_count() -> None:
    with pytest.raises(ValueError, match="at least 1 frame"):
        SegmentCutter(0)


# ------------------------------------------------------------------------------------------------- parser


def test_parser_finds_every_nal_of_the_clip_at_every_read_size() -> None:
    expected = reference_nals(CLIP)
    assert [kind for _, kind, _ in expected[:3]] == [7, 8, 5]
    for size in (*READ_SIZES, 1000, 4096, 1 << 20):
        found, parser = parse_all(chunks_of(CLIP, size))
        assert as_tuples(found) == expected, f"read size {size}"
        assert (parser.frames, parser.iframes, parser.nal_units) == (CLIP_FRAMES, 2, len(expected))
        assert parser.position == len(CLIP)


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param(lambda: gop_stream(10), id="gop10"),
        pytest.param(lambda: x264_stream("keyint=12:min-keyint=12:repeat-headers=1:aud=1"), id="aud"),
        pytest.param(lambda: x264_stream("keyint=8:min-keyint=8:repeat-headers=1:slices=4"), id="4-slices"),
        pytest.param(lambda: with_start_codes(gop_stream(10), 3), id="3-byte-codes"),
        pytest.param(lambda: with_start_codes(gop_stream(10), 4), id="4-byte-codes"),
        pytest.param(lambda: x264_stream("keyint=15", keep_sei=True), id="x264-sei"),
    ],
)
def test_parser_counts_what_pyav_decodes(stream: object) -> None:
    data = stream()  # type: ignore[operator]
    expected = reference_nals(data)
    for size in READ_SIZES:
        found, _ = parse_all(chunks_of(data, size))
        assert as_tuples(found) == expected, f"read size {size}"
    found, parser = parse_all(random_chunks(data, seed=len(data)))
    assert as_tuples(found) == expected
    assert parser.frames == decoded_frames(data) == 60
    assert parser.iframes == sum(1 for _, kind, first in expected if kind == 5 and first)


def test_start_code_length_is_reported_in_the_offset() -> None:
    data = (
        b"\x00\x00\x01\x67\xaa"
        + b"\x00\x00\x00\x01\x68\xbb"
        + b"\x00\x00\x01\x65\x88"
        + b"\xcc\x00\x00\x00\x01\x41\x9a"
    )
    expected = [(0, 7, False), (5, 8, False), (11, 5, True), (17, 1, True)]
    for boundaries in ([], *[[i] for i in range(len(data))], *[[i, i + 1, i + 2] for i in range(len(data))]):
        found, parser = parse_all(split_at(data, boundaries))
        assert as_tuples(found) == expected, boundaries
        assert (parser.frames, parser.iframes) == (2, 1)


def test_only_one_zero_in_front_counts_as_start_code() -> None:
    # trailing_zero_8bits of the previous NAL unit stay with it; only one zero belongs to the start code.
    data = b"\x00\x00\x01\x09\xf0\x00\x00\x00\x00\x00\x01\x67\x42"
    for boundaries in ([], *[[i] for i in range(len(data))]):
        found, _ = parse_all(split_at(data, boundaries))
        assert as_tuples(found) == [(0, 9, False), (7, 7, False)], boundaries


def test_slice_is_reported_once_its_second_byte_arrives() -> None:
    parser = AnnexBParser()
    assert parser.feed(b"\x00\x00\x00\x01") == []
    assert parser.settled == 0
    assert parser.feed(b"\x41") == []  # a slice: whether it starts a frame is in the next byte
    assert parser.settled == 0
    assert as_tuples(parser.feed(b"\x9a\x00")) == [(0, 1, True)]
    assert parser.settled == 6  # the final zero may begin a start code
    assert as_tuples(parser.feed(b"\x00\x01\x41")) == []
    assert as_tuples(parser.feed(b"\x1a")) == [(6, 1, False)]  # first_mb_in_slice != 0: same frame
    assert parser.frames == 1


def test_parser_end_of_stream() -> None:
    parser = AnnexBParser()
    assert parser.feed(b"\x00\x00\x01\x65") == []
    assert as_tuples(parser.finish()) == [(0, 5, False)]  # truncated slice: no frame
    parser = AnnexBParser()
    assert parser.feed(b"\xaa\x00\x00\x01") == []
    assert parser.finish() == []  # a start code with no header byte is not a NAL unit
    assert parser.feed(b"") == []


def test_parser_accepts_bytearray_and_memoryview() -> None:
    expected = reference_nals(CLIP)
    chunks = [bytearray(c) if i % 2 else memoryview(c) for i, c in enumerate(chunks_of(CLIP, 777))]
    found, _ = parse_all(chunks)
    assert as_tuples(found) == expected


NAL_BYTES = st.sampled_from([0x00, 0x00, 0x00, 0x01, 0x03, 0x09, 0x41, 0x65, 0x67, 0x68, 0x80, 0x9A, 0x1A, 0xFF])


@settings(max_examples=300, deadline=None)
@given(data=st.lists(NAL_BYTES, max_size=300).map(bytes), boundaries=st.lists(st.integers(0, 300), max_size=40))
def test_parser_on_hostile_bytes_matches_whole_buffer_split(data: bytes, boundaries: list[int]) -> None:
    found, _ = parse_all(split_at(data, boundaries))
    assert as_tuples(found) == naive_nals(data)


# ------------------------------------------------------------------------------------------------- cutter


def check_segments(data: bytes, pieces: list[Piece], cutter: SegmentCutter, expect_frames: list[int]) -> None:
    """What a user checks: the files concatenate to the stream, each starts SPS, PPS, IDR, decodes on its own,
    and the stats match what PyAV decodes."""
    assert b"".join(p.data for p in pieces) == data
    segments = segments_of(pieces)
    assert [s.frames for s in cutter.closed] == expect_frames
    assert [s.bytes for s in cutter.closed] == [len(s) for s in segments]
    for segment, stats in zip(segments, cutter.closed, strict=True):
        kinds = [nal_type(n) for n in split_nal_units(segment)]
        headers = kinds[kinds[0] == 9 :]  # an AUD may come first
        first_slice = next(k for k in kinds if k in (1, 5))
        assert headers[:2] == [7, 8] and first_slice == 5, kinds[:5]  # SEI may sit between PPS and IDR
        assert stats.iframes == sum(1 for _, kind, first in reference_nals(segment) if kind == 5 and first)
        assert decoded_frames(segment) == stats.frames


def test_clip_looped_is_cut_at_every_idr_whatever_the_read_size() -> None:
    data = CLIP * 2
    reference, cutter = cut_all([data], CLIP_GOP)
    check_segments(data, reference, cutter, [CLIP_GOP] * 4)
    assert all(s.iframes == 1 for s in cutter.closed)
    for size in READ_SIZES:
        pieces, cutter = cut_all(chunks_of(data, size), CLIP_GOP)
        assert segments_of(pieces) == segments_of(reference), f"read size {size}"
        assert [(s.frames, s.iframes) for s in cutter.closed] == [(CLIP_GOP, 1)] * 4


@pytest.mark.parametrize(("target", "expected"), [(1, [25] * 6), (25, [25] * 6), (26, [50] * 3), (50, [50] * 3),
                                                  (51, [75, 75]), (149, [150]), (1000, [150])])  # fmt: skip
def test_a_segment_ends_at_the_first_idr_at_or_after_the_target(target: int, expected: list[int]) -> None:
    data = CLIP * 3
    pieces, cutter = cut_all(random_chunks(data, seed=target), target)
    check_segments(data, pieces, cutter, expected)


def test_new_segment_marks_only_the_first_piece_of_each_segment() -> None:
    data = CLIP * 2
    pieces, cutter = cut_all(chunks_of(data, 1000), CLIP_GOP)
    assert pieces[0].new_segment
    assert sum(p.new_segment for p in pieces) == len(cutter.closed) == 4
    offsets = [sum(len(p.data) for p in pieces[:i]) for i, p in enumerate(pieces) if p.new_segment]
    sps = [o for o, kind, _ in reference_nals(data) if kind == 7]
    assert offsets == sps


@pytest.mark.parametrize(
    ("stream", "target", "expected"),
    [
        pytest.param(lambda: gop_stream(10), 10, [10] * 6, id="gop10"),
        pytest.param(lambda: gop_stream(7), 10, [14, 14, 14, 14, 4], id="gop7-target10"),
        pytest.param(lambda: with_start_codes(gop_stream(10), 3), 20, [20, 20, 20], id="3-byte-codes"),
        pytest.param(lambda: with_start_codes(gop_stream(10), 4), 20, [20, 20, 20], id="4-byte-codes"),
        pytest.param(lambda: gop_stream(8, extra=":slices=4"), 16, [16, 16, 16, 12], id="4-slices"),
        pytest.param(lambda: gop_stream(12, extra=":aud=1"), 24, [24, 24, 12], id="aud"),
        pytest.param(lambda: x264_stream("keyint=15", keep_sei=True), 15, [15] * 4, id="x264-sei"),
        # SPS only at the start: no later point decodes on its own, so there is no cut.
        pytest.param(lambda: headers_once(gop_stream(10)), 10, [60], id="headers-once"),
    ],
)
def test_generated_streams_cut_at_every_read_size(stream: object, target: int, expected: list[int]) -> None:
    data = stream()  # type: ignore[operator]
    reference, cutter = cut_all([data], target)
    check_segments(data, reference, cutter, expected)
    for size in READ_SIZES:
        pieces, cutter = cut_all(chunks_of(data, size), target)
        assert segments_of(pieces) == segments_of(reference), f"read size {size}"
        assert [s.frames for s in cutter.closed] == expected


def test_aud_before_the_sps_opens_the_new_segment() -> None:
    data = gop_stream(12, extra=":aud=1")
    pieces, _ = cut_all(chunks_of(data, 5), 12)
    for segment in segments_of(pieces):
        assert [nal_type(n) for n in split_nal_units(segment)][:4] == [9, 7, 8, 5]


def test_filler_at_25_mbit_does_not_change_frames_or_cuts() -> None:
    # Like the simulator: every frame padded with a filler NAL unit (type 12) to 125 kB, 25 Mbit/s at 25 fps.
    frame_bytes = 25_000_000 // 8 // 25
    padded = b""
    for nal_group in _frames_of(CLIP * 2):
        padded += nal_group + build_filler_nal(max(frame_bytes - len(nal_group), 6))
    pieces, cutter = cut_all(chunks_of(padded, 1 << 16), CLIP_GOP)
    check_segments(padded, pieces, cutter, [CLIP_GOP] * 4)


def _frames_of(data: bytes) -> list[bytes]:
    """Whole frames, headers with the frame they precede (one slice per frame in the clip)."""
    frames: list[bytes] = []
    pending = b""
    for nal in split_nal_units(data):
        pending += nal
        if nal_type(nal) in (1, 5):
            frames.append(pending)
            pending = b""
    return frames


def test_sps_not_followed_by_an_idr_is_no_cut() -> None:
    sps, pps, sei = b"\x00\x00\x00\x01\x67\x42\x80", b"\x00\x00\x00\x01\x68\xce", b"\x00\x00\x01\x06\x05\x80"
    idr, p_slice = b"\x00\x00\x01\x65\x88\x80", b"\x00\x00\x01\x41\x9a\x80"
    gop = sps + pps + idr + p_slice * 3
    odd = sps + pps + p_slice * 4  # headers repeated before a non-IDR frame: not a clean start
    data = gop + odd + sps + pps + sei + idr + p_slice
    for size in (1, 2, 3, 7, len(data)):
        pieces, cutter = cut_all(chunks_of(data, size), 4)
        assert segments_of(pieces) == [gop + odd, sps + pps + sei + idr + p_slice]
        assert cutter.closed == [
            SegmentStats(8, 1, len(gop + odd)),
            SegmentStats(2, 1, len(sps + pps + sei + idr + p_slice)),
        ]


def test_bytes_held_back_stay_few() -> None:
    # Memory stays flat: between reads the cutter keeps at most SPS + PPS + a slice header (clip: ~45 bytes).
    cutter = SegmentCutter(CLIP_GOP)
    fed = handed = 0
    for chunk in random_chunks(CLIP * 3, seed=7, largest=1 << 16):
        fed += len(chunk)
        handed += sum(len(p.data) for p in cutter.feed(chunk))
        assert fed - handed <= 64
        assert cutter.current.bytes <= handed


def test_an_undecided_cut_is_given_up_before_memory_grows() -> None:
    sps, pps = b"\x00\x00\x00\x01\x67\x42\x80", b"\x00\x00\x00\x01\x68\xce"
    idr, p_slice = b"\x00\x00\x01\x65\x88\x80", b"\x00\x00\x01\x41\x9a\x80"
    huge_sei = b"\x00\x00\x01\x06" + b"\x55" * (2 * MAX_HOLD)
    data = sps + pps + idr + p_slice + sps + pps + huge_sei + idr + p_slice
    cutter = SegmentCutter(2)
    fed = handed = 0
    for chunk in chunks_of(data, 1 << 16):
        fed += len(chunk)
        handed += sum(len(p.data) for p in cutter.feed(chunk))
        assert fed - handed <= MAX_HOLD + (1 << 16)
    handed += sum(len(p.data) for p in cutter.finish())
    assert handed == len(data)
    assert [s.frames for s in cutter.closed] == [4]  # the SPS waited too long for its IDR: no cut


def test_finish_and_empty_input() -> None:
    cutter = SegmentCutter(5)
    assert cutter.feed(b"") == []
    assert cutter.finish() == []
    assert cutter.closed == []
    cutter = SegmentCutter(5)
    pieces = cutter.feed(b"\x00\x00\x01\x09\xf0\x00\x00")  # stream ends on what could be a start code
    pieces += cutter.finish()
    assert b"".join(p.data for p in pieces) == b"\x00\x00\x01\x09\xf0\x00\x00"
    assert cutter.closed == [SegmentStats(0, 0, 7)]
    with pytest.raises(ValueError, match="after finish"):
        cutter.feed(b"\x00")


def test_a_whole_bytes_chunk_is_handed_out_without_a_copy() -> None:
    cutter = SegmentCutter(CLIP_GOP)
    chunk = CLIP[:1000]
    pieces = cutter.feed(chunk)
    assert len(pieces) == 1 and pieces[0].data is chunk and pieces[0].new_segment


# Hypothesis: arbitrary read boundaries and buffer types give the same segments as one big read.
LOOPED = CLIP * 2
REFERENCE_SEGMENTS = segments_of(cut_all([LOOPED], CLIP_GOP)[0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    boundaries=st.lists(st.integers(0, len(LOOPED)), max_size=200),
    kinds=st.lists(st.sampled_from([bytes, bytearray, memoryview]), min_size=1, max_size=5),
)
def test_any_read_boundaries_give_the_same_segments(boundaries: list[int], kinds: list[type]) -> None:
    chunks = [kinds[i % len(kinds)](c) for i, c in enumerate(split_at(LOOPED, boundaries))]
    pieces, cutter = cut_all(chunks, CLIP_GOP)
    assert b"".join(p.data for p in pieces) == LOOPED
    assert segments_of(pieces) == REFERENCE_SEGMENTS
    assert [s.frames for s in cutter.closed] == [CLIP_GOP] * 4


# Synthetic NAL sequences: every kind of unit in any order, checked against a whole-list model of the rule.
SYNTHETIC = {
    "aud": b"\x09\xf0",
    "sps": b"\x67\x42\xc0\x1e",
    "pps": b"\x68\xce\x38\x80",
    "sei": b"\x06\x05\x01\x80",
    "idr": b"\x65\x88\x84\x00\x00\x03\x01",
    "idr+": b"\x65\x1a\x84",  # a second slice of the same IDR frame
    "p": b"\x41\x9a\x02",
    "p+": b"\x41\x1a\x02",
    "filler": b"\x0c\xff\xff\x80",
}


def model_cuts(kinds: list[str], offsets: list[int], target: int) -> list[int]:
    cuts, frames, candidate, aud = [], 0, None, None
    for kind, offset in zip(kinds, offsets, strict=True):
        if kind == "aud":
            aud = offset
            continue
        if kind == "sps" and candidate is None and frames >= target:
            candidate = aud if aud is not None else offset
        if kind in ("idr", "idr+", "p", "p+"):
            if candidate is not None and kind == "idr":
                cuts.append(candidate)
                frames = 0
            candidate = None
            frames += kind in ("idr", "p")
        aud = None
    return cuts


@settings(max_examples=200, deadline=None)
@given(
    units=st.lists(st.tuples(st.sampled_from(sorted(SYNTHETIC)), st.booleans()), max_size=60),
    boundaries=st.lists(st.integers(0, 800), max_size=60),
    target=st.integers(1, 4),
)
def test_cut_rule_on_any_nal_sequence(units: list[tuple[str, bool]], boundaries: list[int], target: int) -> None:
    data, offsets = b"", []
    for kind, long_code in units:
        offsets.append(len(data))
        data += (b"\x00\x00\x00\x01" if long_code else b"\x00\x00\x01") + SYNTHETIC[kind]
    pieces, cutter = cut_all(split_at(data, boundaries), target)
    assert b"".join(p.data for p in pieces) == data
    starts = [sum(len(p.data) for p in pieces[:i]) for i, p in enumerate(pieces) if p.new_segment]
    assert starts == ([0] if data else []) + model_cuts([k for k, _ in units], offsets, target)
    assert sum(s.frames for s in cutter.closed) == sum(k in ("idr", "p") for k, _ in units)
    assert sum(s.bytes for s in cutter.closed) == len(data)


def test_the_receiver_side_does_not_depend_on_the_simulator() -> None:
    with open(annexb.__file__, encoding="utf-8") as handle:
        assert "orchestrator.sim" not in handle.read()
