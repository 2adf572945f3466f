"""The remux of a stream with B-frames (rpicam-vid on a Pi 5 encodes with libx264, which makes them without
--low-latency): the container must show the pictures in display order with increasing timestamps, the same
pictures an independent decoder (the ffmpeg program) makes of the raw stream."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.events import Event
from orchestrator.settings import Backend, ReceiveSettings
from orchestrator.stream.receiver import make_receiver
from orchestrator.stream.remux import remux_h264
from orchestrator.stream.session import SessionFiles

av = pytest.importorskip("av")

FPS = 30


def require_ffmpeg_with_x264() -> str:
    path = shutil.which("ffmpeg")
    encoders = subprocess.run([path, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout if path \
        else ""
    if " libx264 " in encoders:
        assert path is not None
        return path
    # CI sets the variable so a missing tool fails loudly instead of skipping the B-frame tests.
    if os.environ.get("PIORCH_E2E_REQUIRED") == "1":
        pytest.fail("ffmpeg with libx264 not found: install ffmpeg (PIORCH_E2E_REQUIRED=1)")
    pytest.skip("ffmpeg with libx264 not found: install ffmpeg to make a B-frame stream")


def make_stream(path: Path, b_frames: int, frames: int = 90) -> bytes:
    """A raw H.264 stream like libx264 makes it on a Pi 5: moving test picture, `b_frames` B-frames in a row."""
    ffmpeg = require_ffmpeg_with_x264()
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"testsrc2=size=320x240:rate={FPS}", "-frames:v", str(frames), "-c:v", "libx264",
                    "-bf", str(b_frames), "-g", "30", "-pix_fmt", "yuv420p", "-f", "h264", str(path)], check=True)
    return path.read_bytes()


def pictures_of_raw(raw: Path) -> list[str]:
    """The pictures in display order, as the ffmpeg program decodes the raw stream (MD5 of each)."""
    ffmpeg = require_ffmpeg_with_x264()
    lines = subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "h264", "-i", str(raw),
                            "-f", "framemd5", "-"], capture_output=True, text=True, check=True).stdout
    return [line.split(",")[-1].strip() for line in lines.splitlines() if line and not line.startswith("#")]


def picture_md5(frame: Any) -> str:
    """The same MD5 as ffmpeg's framemd5: the planes' rows without their padding."""
    digest = hashlib.md5()
    for plane in frame.planes:
        data = bytes(plane)
        for row in range(plane.height):
            digest.update(data[row * plane.line_size : row * plane.line_size + plane.width])
    return digest.hexdigest()


def played(container_file: Path) -> tuple[list[float], list[str], float]:
    """What a player gets: each picture's time in seconds in decoding output order, its MD5, the duration."""
    with av.open(str(container_file)) as container:
        stream = container.streams.video[0]
        times, pictures = [], []
        for frame in container.decode(stream):
            times.append(float(frame.pts * stream.time_base))
            pictures.append(picture_md5(frame))
        duration = float(container.duration / av.time_base)
    return times, pictures, duration


def assert_display_order(container_file: Path, raw: Path, frames: int) -> None:
    times, pictures, duration = played(container_file)
    assert all(later > earlier for earlier, later in itertools.pairwise(times)), "timestamps go backwards"
    assert pictures == pictures_of_raw(raw)
    assert len(pictures) == frames
    assert times[0] == 0 and abs(times[-1] - (frames - 1) / FPS) < 1e-3
    assert abs(duration - frames / FPS) <= 1 / FPS + 1e-6


@pytest.mark.parametrize("b_frames", [1, 2])
@pytest.mark.parametrize("kind", ["mp4", "mkv"])
def test_b_frames_are_shown_in_display_order(tmp_path: Path, b_frames: int, kind: str) -> None:
    raw = tmp_path / "pi5.h264"
    data = make_stream(raw, b_frames)
    with av.open(str(raw), format="h264") as probe:
        assert probe.streams.video[0].codec_context.has_b_frames  # the stream does reorder its pictures
    result = remux_h264(raw, tmp_path / f"pi5.{kind}", FPS)
    assert result.frames == 90 and abs(result.duration_s - 3.0) < 1e-9
    assert_display_order(result.path, raw, 90)
    assert raw.read_bytes() == data  # the raw stream is read, never changed


def test_a_stream_without_b_frames_keeps_one_frame_per_tick(tmp_path: Path) -> None:
    raw = tmp_path / "pi4.h264"
    make_stream(raw, 0, frames=60)
    result = remux_h264(raw, tmp_path / "pi4.mp4", FPS)
    assert result.frames == 60
    assert_display_order(result.path, raw, 60)


def test_a_b_frame_recording_through_the_receiver_plays_in_order(tmp_path: Path) -> None:
    raw = tmp_path / "camera.h264"
    data = make_stream(raw, 1, frames=150)
    out = tmp_path / "recv"
    events: list[Event] = []
    session = SessionFiles(out, "mp4", FPS, True, False, events.append)
    settings = ReceiveSettings(port=0, out_dir=out, backend=Backend.BUILTIN, bind="127.0.0.1", parse_h264=True,
                               segment_frames=60)
    receiver = make_receiver(settings, session.on_file, events.append)
    receiver.start()
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(data)
    deadline = time.monotonic() + 20
    while receiver.files_done < 3:
        assert time.monotonic() < deadline, "the segments did not arrive"
        time.sleep(0.02)
    assert receiver.stop() == []
    files = session.finish(False, None)
    # 150 frames with an I-frame every 30, cut after 60: segments of 60, 60 and 30 frames.
    assert [f.path.suffix for f in files] == [".mp4"] * 3 and all(f.remux_error is None for f in files)
    raws = sorted(out.glob("*.h264"), key=lambda p: [f.path.stem for f in files].index(p.stem))
    assert b"".join(p.read_bytes() for p in raws) == data
    for finished, segment_raw, frames in zip(files, raws, (60, 60, 30), strict=True):
        assert_display_order(finished.path, segment_raw, frames)
