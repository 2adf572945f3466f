"""The H.264 the simulated camera sends (pure).

A clip is cut into access units (one frame each, in decode order). Without inline headers (`-ih` /
`--inline`) the SPS/PPS repeats are stripped after the first frame, as a Pi's hardware encoder does, so a
stream cut anywhere but its start does not decode on its own. Filler NAL units pad each frame so that the
byte rate follows the requested bitrate.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.sim.frames import FramePlan

# The hardware encoder's picture (Pi 0-4), also what a Pi 5 sends with --low-latency: no B-frames.
CLIP_PATH = Path(__file__).with_name("clip.h264")
# A Pi 5's libx264 without --low-latency: B-frames, so decode order differs from display order.
BFRAMES_CLIP_PATH = Path(__file__).with_name("clip_bframes.h264")

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_FILLER = 12
START_CODE = b"\x00\x00\x00\x01"
FILLER_MIN_SIZE = len(START_CODE) + 2  # start code, NAL header 0x0C, rbsp trailing byte 0x80
SLICE_TYPES = "PBIpi"  # slice_type % 5: P, B, I, SP, SI


def split_nal_units(data: bytes) -> list[bytes]:
    """Annex B bytes -> NAL units, each with its own start code (00 00 01 or 00 00 00 01)."""
    starts: list[int] = []
    pos = data.find(b"\x00\x00\x01")
    while pos != -1:
        starts.append(pos - 1 if pos > 0 and data[pos - 1] == 0 else pos)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return [data[start:end] for start, end in zip(starts, [*starts[1:], len(data)], strict=True)]


def nal_type(nal: bytes) -> int:
    """Type of a NAL unit that still carries its start code."""
    header = nal.index(b"\x00\x00\x01") + 3
    return nal[header] & 0x1F


def _payload_bits(nal: bytes, limit: int = 16) -> str:
    """The first bytes after the NAL header as a bit string, emulation-prevention bytes (00 00 03) removed."""
    body = nal[nal.index(b"\x00\x00\x01") + 4 :][:limit].replace(b"\x00\x00\x03", b"\x00\x00")
    return "".join(f"{byte:08b}" for byte in body)


def _read_ue(bits: str, pos: int) -> tuple[int, int]:
    """One Exp-Golomb ue(v) at `pos`: (value, position after it)."""
    zeros = bits.index("1", pos) - pos
    end = pos + 2 * zeros + 1
    return int(bits[pos + zeros : end], 2) - 1, end


def slice_type(nal: bytes) -> str:
    """"P", "B" or "I" (or "p"/"i" for SP/SI) from a slice's header: first_mb_in_slice, then slice_type."""
    bits = _payload_bits(nal)
    _, pos = _read_ue(bits, 0)
    value, _ = _read_ue(bits, pos)
    return SLICE_TYPES[value % 5]


def _first_mb_is_zero(nal: bytes) -> bool:
    # first_mb_in_slice is the first ue(v) of the slice header; ue(v) == 0 is the single bit "1".
    header = nal.index(b"\x00\x00\x01") + 3
    return len(nal) > header + 1 and bool(nal[header + 1] & 0x80)


def split_access_units(data: bytes) -> list[tuple[bytes, ...]]:
    """Group NAL units into frames: non-VCL units belong to the next picture; a slice with
    first_mb_in_slice != 0 continues the current picture. Trailing non-VCL units join the last frame."""
    frames: list[tuple[bytes, ...]] = []
    pending: list[bytes] = []
    for nal in split_nal_units(data):
        kind = nal_type(nal)
        if kind not in (NAL_SLICE, NAL_IDR):
            pending.append(nal)
        elif frames and not pending and not _first_mb_is_zero(nal):
            frames[-1] = (*frames[-1], nal)
        else:
            frames.append((*pending, nal))
            pending = []
    if pending and frames:
        frames[-1] = (*frames[-1], *pending)
    return frames


def build_filler_nal(size: int) -> bytes:
    """A filler-data NAL unit (type 12) of exactly `size` bytes: decoders skip it, byte rates count it."""
    if size < FILLER_MIN_SIZE:
        raise ValueError(f"a filler NAL unit needs at least {FILLER_MIN_SIZE} bytes, not {size}")
    return START_CODE + b"\x0c" + b"\xff" * (size - FILLER_MIN_SIZE) + b"\x80"


def filler_size(frame_index: int, bitrate: int, framerate: float, sent: int, frame_len: int) -> int:
    """Filler bytes to append to frame `frame_index` so that everything sent so far tracks
    bitrate/8 bytes per second. Frames bigger than their share are paid back by later frames' filler;
    a gap too small for a filler NAL unit is carried to the next frame."""
    if bitrate <= 0:
        return 0
    target = int((frame_index + 1) * bitrate / 8 / framerate)
    gap = target - sent - frame_len
    return gap if gap >= FILLER_MIN_SIZE else 0


def build_frame_plan(clip: bytes, inline_headers: bool) -> FramePlan:
    """Cut the clip into frames; without inline headers keep SPS/PPS only in the very first frame. An
    encoder's SEI (x264 names itself in one) is sent once, at the start, as the encoder does."""
    units = split_access_units(clip)
    if not units or nal_type(units[0][0]) != NAL_SPS:
        raise ValueError("the clip must start with SPS, PPS, IDR")
    dropped = {NAL_SEI} if inline_headers else {NAL_SEI, NAL_SPS, NAL_PPS}
    loop = tuple(b"".join(nal for nal in unit if nal_type(nal) not in dropped) for unit in units)
    return FramePlan(first=b"".join(units[0]), loop=loop)
