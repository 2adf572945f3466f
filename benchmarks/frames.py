"""Frames into numpy: CPU per frame of the Python API's H.264 decoder against FFmpeg's own command line on the
same bytes, and whether the API keeps up with the camera on one core.

Run: `.venv/bin/python benchmarks/frames.py [--width 1920] [--height 1080] [--fps 30] [--seconds 10]
[--rounds 3] [--json]`.

The stream: `--seconds` of synthetic 1080p pictures (a gradient with a moving block, so every frame differs)
encoded once with libx264 through PyAV into raw Annex B, like a Pi's camera sends (no B-frames, an I-frame a
second). Then, interleaved `--rounds` times (A B A B ...; the fastest of each counts, the least disturbed):

- A, the baseline: `ffmpeg -f h264 -i STREAM -f rawvideo -pix_fmt bgr24 -` into a pipe this process drains,
  FFmpeg limited to one thread (`-threads 1`); its CPU is the child's user+system time;
- B, piorch: `orchestrator.stream.frames.make_decoder("h264", "bgr24", ...)` fed the stream in 64 KiB reads
  (the receiver's tap sees such pieces), every frame a numpy array; its CPU is this process's time.

Printed: CPU ms per frame for A and B, the ratio B/A (target: at most 1.3) and B's frames per second of
CPU (target: at least --fps, i.e. one core keeps up with the camera). Raw I420 frames cost one copy after the
socket by construction (`RawI420Decoder`: each chunk is copied once into the frame's own buffer, which is
the array handed out); the last line measures that path too, against one plain `bytes` copy of each
frame. Every run checks its frame count; a wrong count fails the benchmark (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import numpy as np

from orchestrator.stream.frames import RawI420Decoder, i420_frame_bytes, make_decoder

READ = 64 * 1024


class MeasurementFailed(Exception):
    """A run gave a wrong result: its speed means nothing."""


def build_stream(width: int, height: int, fps: int, seconds: float) -> tuple[bytes, int]:
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.time_base = width, height, Fraction(1, fps)
    context.pix_fmt = "yuv420p"
    context.options = {"bf": "0", "g": str(fps), "preset": "veryfast", "b": "16000000"}
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    # Sensor-like noise keeps the bitrate near a camera's (a clean synthetic picture compresses to nothing).
    noise = np.random.default_rng(1).integers(0, 24, (8, height, width, 3), dtype=np.uint8)
    data = bytearray()
    count = round(fps * seconds)
    for index in range(count):
        picture = np.empty((height, width, 3), np.uint8)
        picture[:, :, 0] = ramp
        picture[:, :, 1] = ramp[::-1]
        picture[:, :, 2] = (index * 7) % 256
        picture += noise[index % len(noise)]
        x = (index * 16) % (width - 128)
        picture[100:228, x:x + 128] = 255
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
        frame.pts = index
        for packet in context.encode(frame):
            data += bytes(packet)
    for packet in context.encode(None):
        data += bytes(packet)
    return bytes(data), count


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_ffmpeg(stream: Path, frame_bytes: int, expected: int) -> float:
    before = children_cpu()
    process = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-threads", "1", "-f", "h264", "-i", str(stream), "-f", "rawvideo",
         "-pix_fmt", "bgr24", "-"], stdout=subprocess.PIPE)
    assert process.stdout is not None
    got = 0
    while chunk := process.stdout.read(1 << 20):
        got += len(chunk)
    if process.wait() != 0 or got != frame_bytes * expected:
        raise MeasurementFailed(f"ffmpeg gave {got / frame_bytes:.1f} frames, expected {expected}")
    return children_cpu() - before


def run_api(data: bytes, width: int, height: int, expected: int) -> float:
    decoder = make_decoder("h264", "bgr24", width, height)
    started = time.process_time()
    frames = 0
    view = memoryview(data)
    for start in range(0, len(data), READ):
        frames += len(decoder.feed(view[start:start + READ]))
    frames += len(decoder.finish())
    spent = time.process_time() - started
    if frames != expected:
        raise MeasurementFailed(f"the API decoded {frames} frames, expected {expected}")
    return spent


def run_raw(data: bytes, width: int, height: int, expected: int) -> tuple[float, float]:
    started = time.process_time()
    decoder = RawI420Decoder(width, height, "yuv420p")
    frames = 0
    view = memoryview(data)
    for start in range(0, len(data), READ):
        frames += len(decoder.feed(view[start:start + READ]))
    raw_s = time.process_time() - started
    started = time.process_time()
    size = i420_frame_bytes(width, height)
    # The baseline: one plain copy of each frame's bytes, which is all the raw path should cost.
    copied = sum(len(bytes(view[start:start + size])) for start in range(0, len(data), size))
    copy_s = time.process_time() - started
    if frames != expected or copied != len(data):
        raise MeasurementFailed(f"raw I420 gave {frames} frames, expected {expected}")
    return raw_s, copy_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        print("ffmpeg is not installed (sudo apt install ffmpeg): no baseline to measure against", file=sys.stderr)
        return 1
    width, height, fps = args.width, args.height, args.fps
    print(f"encoding {args.seconds:g} s of {width}x{height} at {fps} fps ...", file=sys.stderr)
    data, count = build_stream(width, height, fps, args.seconds)
    frame_bytes = width * height * 3
    ffmpeg_s: list[float] = []
    api_s: list[float] = []
    raw: list[tuple[float, float]] = []
    i420 = os.urandom(16) * (i420_frame_bytes(width, height) * count // 16)
    with tempfile.TemporaryDirectory(prefix="piorch-bench-frames-") as scratch:
        stream = Path(scratch) / "stream.h264"
        stream.write_bytes(data)
        try:
            for _ in range(args.rounds):
                ffmpeg_s.append(run_ffmpeg(stream, frame_bytes, count))
                api_s.append(run_api(data, width, height, count))
                raw.append(run_raw(i420, width, height, count))
        except MeasurementFailed as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    a, b = min(ffmpeg_s) / count, min(api_s) / count
    raw_s, copy_s = min(raw, key=lambda pair: pair[0])
    result = {
        "frames": count, "size": f"{width}x{height}", "stream_mbit_s": round(len(data) * 8 / args.seconds / 1e6, 2),
        "ffmpeg_cpu_ms_per_frame": round(a * 1000, 3), "api_cpu_ms_per_frame": round(b * 1000, 3),
        "ratio_api_over_ffmpeg": round(b / a, 2), "api_frames_per_cpu_second": round(1 / b, 1),
        "keeps_up_with_camera": 1 / b >= fps,
        "raw_i420_cpu_ms_per_frame": round(raw_s / count * 1000, 3),
        "plain_copy_cpu_ms_per_frame": round(copy_s / count * 1000, 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"H.264 {result['size']} ({result['stream_mbit_s']} Mbit/s), {count} frames, fastest of {args.rounds}:")
    print(f"  ffmpeg -> bgr24 (1 thread)   {result['ffmpeg_cpu_ms_per_frame']:8.3f} ms CPU per frame")
    print(f"  piorch API -> bgr numpy      {result['api_cpu_ms_per_frame']:8.3f} ms CPU per frame")
    print(f"  ratio API / ffmpeg           {result['ratio_api_over_ffmpeg']:8.2f}   (target <= 1.3)")
    print(f"  API frames per CPU second    {result['api_frames_per_cpu_second']:8.1f}   (camera: {fps})")
    print(f"raw I420 {result['size']}: {result['raw_i420_cpu_ms_per_frame']:.3f} ms CPU per frame "
          f"(one plain copy of each frame: {result['plain_copy_cpu_ms_per_frame']:.3f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
