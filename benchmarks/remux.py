"""Remux cost per recorded minute: CPU seconds `remux_h264` spends turning one minute of a 25 Mbit/s camera
stream into MP4 and MKV, against a plain copy of the same file; and the whole receive path after the socket
(cut into segments + write them + remux each) per recorded minute.

Run: `.venv/bin/python benchmarks/remux.py [--mbit 25] [--fps 25] [--segment 10] [--seconds 60]
[--padding noise filler] [--repeat 3] [--dir /tmp] [--json]`.

The stream is `benchmarks/cutting.py`'s (the simulator's clip looped, each frame padded up to the bitrate
with a filler NAL unit of random bytes, "noise", or of 0xFF, "filler"), written once to a raw `.h264` file
in a temp folder under `--dir`, removed at the end. Rows, measured interleaved `--repeat` times each and the
fastest run counting (the least disturbed by the rest of the machine):

- copy: `shutil.copyfile` of the raw file, the baseline: what keeping the bytes costs at all;
- remux mp4 / remux mkv: `orchestrator.stream.remux.remux_h264(raw, target, fps)` of the whole minute;
- cut+write+remux <container>: the minute fed to a `SegmentCutter` in 1 MiB reads (a receiver's `recv_into`
  buffer), every piece written to the open segment file (a new file where a piece says `new_segment`), then
  every closed segment remuxed, as the recorder's `Remuxer` does. Its `cut+write` share is reported too.

CPU time is process time (every thread of this process: PyAV's muxer runs in-process), so the numbers are
"cost", not wall-clock speed; wall time is printed beside it. Neither includes writeback of the page cache to
disk, which the kernel does later on its own threads, nor fsync (remux_h264 does not fsync either).
`av` is imported before any timing, as the recorder has imported it by the time its first segment closes.

Every result is checked (copy size, frame counts of each remuxed file, segment count and bytes); a wrong result
makes the benchmark fail with exit status 1. Exit 0 means the numbers were measured, not that they are good.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cutting import build_stream
from orchestrator.stream.h264 import SegmentCutter, frames_for
from orchestrator.stream.remux import RemuxError, remux_h264

MINUTE_S = 60.0
READ_SIZE = 1024 * 1024  # the receiver's read size


class MeasurementFailed(Exception):
    """A step gave a wrong result: its speed means nothing."""


@dataclass(frozen=True)
class Timing:
    cpu_s: float
    wall_s: float


@dataclass(frozen=True)
class Row:
    padding: str
    task: str
    cpu_s_per_min: float
    wall_s_per_min: float
    cpu_ratio_to_copy: float  # this row's CPU / the copy's CPU, same padding, same run
    wall_ratio_to_copy: float
    note: str = ""


def timed(work: Callable[[], object]) -> Timing:
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return Timing(time.process_time() - cpu, time.perf_counter() - wall)


def run_copy(raw: Path, out: Path, size: int) -> None:
    shutil.copyfile(raw, out)
    if out.stat().st_size != size:
        raise MeasurementFailed(f"copy has {out.stat().st_size} bytes, not {size}")


def run_remux(raw: Path, target: Path, fps: float, frames: int) -> None:
    try:
        result = remux_h264(raw, target, fps)
    except RemuxError as error:
        raise MeasurementFailed(str(error)) from None
    if result.frames != frames:
        raise MeasurementFailed(f"{target.name}: {result.frames} frames remuxed, not {frames}")


def cut_and_write(stream: memoryview, folder: Path, frames_per_segment: int) -> tuple[list[Path], SegmentCutter]:
    """The receiver's part after the socket: cut each 1 MiB read, write the pieces to segment files."""
    cutter = SegmentCutter(frames_per_segment)
    paths: list[Path] = []
    out: BinaryIO | None = None
    try:
        for start in range(0, len(stream), READ_SIZE):
            for piece in cutter.feed(stream[start : start + READ_SIZE]):
                if piece.new_segment or out is None:
                    if out is not None:
                        out.close()
                    paths.append(folder / f"segment-{len(paths) + 1:04d}.h264")
                    out = paths[-1].open("wb")
                out.write(piece.data)
        for piece in cutter.finish():
            if out is None:
                raise MeasurementFailed("the cutter held back the whole stream")
            out.write(piece.data)  # held-back bytes: never a new segment here, the stream has begun
    finally:
        if out is not None:
            out.close()
    return paths, cutter


def run_pipeline(stream: memoryview, folder: Path, frames_per_segment: int, container: str, fps: float) -> float:
    """Cut + write + remux every segment; returns the CPU seconds of cut + write alone."""
    cpu = time.process_time()
    paths, cutter = cut_and_write(stream, folder, frames_per_segment)
    cut_cpu = time.process_time() - cpu
    segments = cutter.closed
    if len(paths) != len(segments) or sum(s.bytes for s in segments) != len(stream):
        raise MeasurementFailed(f"{len(paths)} files for {len(segments)} segments, {sum(s.bytes for s in segments)} B")
    for path, stats in zip(paths, segments, strict=True):
        if path.stat().st_size != stats.bytes:
            raise MeasurementFailed(f"{path.name}: {path.stat().st_size} bytes written, the cutter said {stats.bytes}")
        run_remux(path, path.with_suffix("." + container), fps, stats.frames)
    return cut_cpu


def clear(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


def measure(args: argparse.Namespace, padding: str, work: Path) -> list[Row]:
    stream, frames = build_stream(args.seconds, int(args.mbit * 1e6), args.fps, padding)
    raw = work / "minute.h264"
    raw.write_bytes(stream)
    view = memoryview(stream)
    frames_per_segment = frames_for(args.segment, args.fps)
    expected_segments = -(-frames // frames_per_segment)
    out = work / "out"
    out.mkdir()
    tasks: dict[str, Callable[[], object]] = {
        "copy": lambda: run_copy(raw, out / "copy.h264", len(stream)),
        "remux mp4": lambda: run_remux(raw, out / "minute.mp4", args.fps, frames),
        "remux mkv": lambda: run_remux(raw, out / "minute.mkv", args.fps, frames),
    }
    cut_cpu: dict[str, list[float]] = {"mp4": [], "mkv": []}

    def pipeline(container: str) -> Callable[[], object]:
        return lambda: cut_cpu[container].append(run_pipeline(view, out, frames_per_segment, container, args.fps))

    for container in cut_cpu:
        tasks[f"cut+write+remux {container}"] = pipeline(container)
    best = {name: Timing(float("inf"), float("inf")) for name in tasks}
    for _ in range(args.repeat):
        for name, work_once in tasks.items():  # interleaved: every task sees the same machine in each round
            timing = timed(work_once)
            best[name] = Timing(min(best[name].cpu_s, timing.cpu_s), min(best[name].wall_s, timing.wall_s))
            clear(out)
    raw.unlink()
    out.rmdir()
    per_min = MINUTE_S / args.seconds  # the stream is `seconds` long: scale to one recorded minute
    copy = best["copy"]
    rows = []
    for name, timing in best.items():
        note = ""
        if name.startswith("cut+"):
            share = min(cut_cpu[name[-3:]]) * per_min
            plural = "s" * (expected_segments != 1)
            note = f"{expected_segments} segment{plural}; cut+write share {share:.3f} CPU s/min"
        rows.append(
            Row(
                padding=padding,
                task=name,
                cpu_s_per_min=timing.cpu_s * per_min,
                wall_s_per_min=timing.wall_s * per_min,
                cpu_ratio_to_copy=timing.cpu_s / copy.cpu_s if copy.cpu_s > 0 else float("inf"),
                wall_ratio_to_copy=timing.wall_s / copy.wall_s if copy.wall_s > 0 else float("inf"),
                note=note,
            )
        )
    return rows


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mbit", type=float, default=25.0, help="stream bitrate, Mbit/s (default 25)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25, the clip's)")
    parser.add_argument("--segment", type=float, default=10.0, help="segment length, seconds (default 10)")
    parser.add_argument("--seconds", type=float, default=MINUTE_S, help="stream length; results are per minute")
    parser.add_argument(
        "--padding", nargs="+", choices=["noise", "filler"], default=["noise", "filler"],
        help="what fills each frame up to the bitrate: random slice-like bytes, or 0xFF filler as the simulator",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="runs of each task; the fastest counts")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp folder goes (default: $TMPDIR)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeat < 1 or args.mbit <= 0 or args.fps <= 0:
        parser.error("--seconds, --mbit and --fps must be > 0, --repeat >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import av  # noqa: F401  (imported before timing: see the module docstring)

    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="piorch-bench-remux-", dir=args.dir) as temp:
            for padding in args.padding:
                rows += measure(args, padding, Path(temp))
    except MeasurementFailed as error:
        print(f"measurement failed: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return 0
    size_mb = args.mbit * 1e6 / 8 * MINUTE_S / 1e6
    print(
        f"1 recorded minute: {size_mb:.0f} MB at {args.mbit:g} Mbit/s, {args.fps:g} fps, {args.segment:g} s "
        f"segments, measured on {args.seconds:g} s; seconds per recorded minute, best of {args.repeat}"
    )
    print(f"{'padding':>7} {'task':<22} {'CPU s':>7} {'wall s':>7} {'CPU/copy':>8} {'wall/copy':>9}  note")
    for row in rows:
        print(
            f"{row.padding:>7} {row.task:<22} {row.cpu_s_per_min:>7.3f} {row.wall_s_per_min:>7.3f} "
            f"{row.cpu_ratio_to_copy:>8.1f} {row.wall_ratio_to_copy:>9.1f}  {row.note}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
