"""Segment-cutting cost per recorded minute: CPU seconds the `SegmentCutter` spends on one minute of a
25 Mbit/s camera stream, against a plain loop that only copies the same reads.

Run: `.venv/bin/python benchmarks/cutting.py [--mbit 25] [--fps 25] [--segment 10] [--read-kib 1024 64]
[--repeat 5] [--json]`.

The stream is the simulator's: the shipped clip looped, each frame padded with a filler NAL unit (type 12) so
that the byte rate tracks the bitrate (orchestrator/sim/camera.py's frame plan and filler arithmetic), built
once in memory. It is fed as memoryview slices of the given read size, as a receiver using recv_into would.
Both loops run interleaved, `--repeat` times each, and the fastest run of each counts (the least disturbed by
the rest of the machine). CPU time is process time, so the numbers are "cost", not wall-clock speed.

The cutter's result is checked (bytes out == bytes in, the expected number of segments and frames); a wrong
result makes the benchmark fail with exit status 1. Remux cost is not measured here yet.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.sim.camera import CLIP_PATH, FILLER_MIN_SIZE, build_filler_nal, build_frame_plan, filler_size
from orchestrator.stream.h264 import SegmentCutter, frames_for

MINUTE_S = 60.0


class MeasurementFailed(Exception):
    """The cutter gave a wrong result: its speed means nothing."""


@dataclass(frozen=True)
class Row:
    padding: str
    read_kib: int
    copy_cpu_s_per_min: float
    cut_cpu_s_per_min: float
    extra_cpu_s_per_min: float  # what cutting adds on top of receiving the bytes
    ratio: float  # cut / copy
    cut_mb_s: float  # stream megabytes cut per CPU second


def build_noise(size: int, seed: int = 1) -> bytes:
    """Random bytes shaped like entropy-coded slice data: emulation prevention makes `00 00` always `00 00 03`,
    so no start code can appear in it (what matters to a start-code scanner is the byte mix, not the syntax)."""
    noise = random.Random(seed).randbytes(size).replace(b"\x00\x00", b"\x00\x00\x03")
    return noise[:size]


def build_stream(seconds: float, bitrate: int, fps: float, padding: str) -> tuple[bytes, int]:
    """`seconds` of the simulator's stream with inline headers; returns the bytes and the frame count.

    padding "filler": like the simulator, each frame is followed by a filler NAL unit of 0xFF bytes up to the
    bitrate; the scanner races through those. "noise": the padding NAL unit carries random bytes instead, so the
    stream looks like a camera's, where nearly every byte is entropy-coded slice data: the honest worst case."""
    plan = build_frame_plan(CLIP_PATH.read_bytes(), inline_headers=True)
    frames = frames_for(seconds, fps)
    noise = build_noise(2 * int(bitrate / 8 / fps) + 1024)
    parts: list[bytes] = []
    sent = 0
    for index in range(frames):
        frame = plan.frame(index)
        pad = filler_size(index, bitrate, fps, sent, len(frame))
        parts.append(frame)
        if pad and padding == "filler":
            parts.append(build_filler_nal(pad))
        elif pad:
            start = index * 7919 % (len(noise) - pad)  # a different stretch of noise for every frame
            parts.append(b"\x00\x00\x00\x01\x0c" + noise[start : start + pad - FILLER_MIN_SIZE] + b"\x80")
        sent += len(frame) + pad
    return b"".join(parts), frames


def copy_loop(reads: list[memoryview]) -> int:
    """The baseline: what any receiver does with a read, take its bytes."""
    total = 0
    for read in reads:
        total += len(bytes(read))
    return total


def cut_loop(reads: list[memoryview], frames_per_segment: int) -> tuple[SegmentCutter, int]:
    """The same, through the cutter: returns it and the bytes it handed out."""
    cutter = SegmentCutter(frames_per_segment)
    total = 0
    for read in reads:
        for piece in cutter.feed(read):
            total += len(bytes(piece.data))  # the same copy as the baseline, piece by piece
    for piece in cutter.finish():
        total += len(bytes(piece.data))
    return cutter, total


def check(result: tuple[SegmentCutter, int], stream_bytes: int, frames: int, frames_per_segment: int) -> None:
    cutter, handed_out = result
    if handed_out != stream_bytes:
        raise MeasurementFailed(f"cutter handed out {handed_out} bytes of {stream_bytes}")
    expected = -(-frames // frames_per_segment)
    got = [s.frames for s in cutter.closed]
    if len(got) != expected or sum(got) != frames:
        raise MeasurementFailed(f"expected {expected} segments, {frames} frames; got {got}")


def measure(stream: bytes, frames: int, padding: str, read_kib: int, frames_per_segment: int, repeat: int) -> Row:
    view = memoryview(stream)
    size = read_kib * 1024
    reads = [view[i : i + size] for i in range(0, len(stream), size)]
    copy_best = cut_best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        copy_loop(reads)
        copy_best = min(copy_best, time.process_time() - start)
        start = time.process_time()
        result = cut_loop(reads, frames_per_segment)
        cut_best = min(cut_best, time.process_time() - start)
        check(result, len(stream), frames, frames_per_segment)
    # The stream is one recorded minute: CPU seconds for it are CPU seconds per recorded minute.
    return Row(
        padding=padding,
        read_kib=read_kib,
        copy_cpu_s_per_min=copy_best,
        cut_cpu_s_per_min=cut_best,
        extra_cpu_s_per_min=cut_best - copy_best,
        ratio=cut_best / copy_best if copy_best > 0 else float("inf"),
        cut_mb_s=len(stream) / cut_best / 1e6 if cut_best > 0 else float("inf"),
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mbit", type=float, default=25.0, help="stream bitrate, Mbit/s (default 25)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25, the clip's)")
    parser.add_argument("--segment", type=float, default=10.0, help="segment length, seconds (default 10)")
    parser.add_argument("--read-kib", type=int, nargs="+", default=[1024, 64], help="read sizes, KiB")
    parser.add_argument(
        "--padding", nargs="+", choices=["noise", "filler"], default=["noise", "filler"],
        help="what fills each frame up to the bitrate: random slice-like bytes, or 0xFF filler as the simulator",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=5, help="runs of each loop; the fastest counts")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    frames_per_segment = frames_for(args.segment, args.fps)
    rows: list[Row] = []
    try:
        for padding in args.padding:
            stream, frames = build_stream(MINUTE_S, int(args.mbit * 1e6), args.fps, padding)
            rows += [measure(stream, frames, padding, kib, frames_per_segment, args.repeat) for kib in args.read_kib]
    except MeasurementFailed as error:
        print(f"measurement failed: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return 0
    print(
        f"1 recorded minute: {len(stream) / 1e6:.1f} MB at {args.mbit:g} Mbit/s, {frames} frames at "
        f"{args.fps:g} fps, {args.segment:g} s segments; CPU seconds per recorded minute, best of {args.repeat}"
    )
    print(f"{'padding':>7} {'read':>9} {'copy only':>10} {'cut':>10} {'cut extra':>10} {'ratio':>6} {'cut MB/s':>9}")
    for row in rows:
        print(
            f"{row.padding:>7} {row.read_kib:>6} KiB {row.copy_cpu_s_per_min:>10.4f} {row.cut_cpu_s_per_min:>10.4f} "
            f"{row.extra_cpu_s_per_min:>10.4f} {row.ratio:>6.2f} {row.cut_mb_s:>9.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
