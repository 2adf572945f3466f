"""The camera simulator: the H.264 and MJPEG it writes, how it fails and dies (its option languages are in
test_sim_options.py, the Pi profiles in test_sim_pi.py and test_sim_pi_runs.py).

Subprocess tests run the simulator through the same stand-in shims `piorch demo` and the sshd tests use,
each with its own lock file and log directory, so they can run next to other tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.sim import camera
from orchestrator.sim.camera import (
    FILLER_MIN_SIZE,
    build_filler_nal,
    build_frame_plan,
    build_mjpeg_plan,
    camera_is_free,
    filler_size,
    nal_type,
    parse_fault,
    split_access_units,
    split_nal_units,
)
from orchestrator.sim.mjpeg_clip import MJPEG_CLIP_PATH, split_jpeg_images
from orchestrator.sim.stand_in import SIM_TOOLS, build_stand_in_script, install_stand_ins
from orchestrator.stream.mjpeg import JpegSplitter

CLIP = camera.CLIP_PATH.read_bytes()
MJPEG_CLIP = MJPEG_CLIP_PATH.read_bytes()
# Generous: a loaded CI machine may start Python slowly; a healthy run ends within ~0.2 s of its timeout.
PROCESS_DEADLINE_S = 10.0


# ------------------------------------------------------------------------------------------ stream, pure


def test_clip_layout() -> None:
    frames = split_access_units(CLIP)
    assert len(frames) == 50  # 2 s at 25 fps
    assert [nal_type(nal) for nal in frames[0]] == [7, 8, 5]
    assert [nal_type(nal) for nal in frames[25]] == [7, 8, 5]  # an IDR every second, headers repeated
    assert all([nal_type(nal) for nal in frame] == [1] for i, frame in enumerate(frames) if i % 25)
    assert b"".join(b"".join(frame) for frame in frames) == CLIP
    assert len(CLIP) < 300_000


def test_frame_plan_strips_repeated_headers_unless_inline() -> None:
    bare = build_frame_plan(CLIP, inline_headers=False)
    inline = build_frame_plan(CLIP, inline_headers=True)
    assert [nal_type(nal) for nal in split_nal_units(bare.frame(0))] == [7, 8, 5]
    assert [nal_type(nal) for nal in split_nal_units(bare.frame(25))] == [5]
    assert [nal_type(nal) for nal in split_nal_units(bare.frame(50))] == [5]  # next loop
    assert [nal_type(nal) for nal in split_nal_units(inline.frame(50))] == [7, 8, 5]


def _split_jpegs(data: bytes, cut_short: int = 0) -> list[bytes]:
    """The receiver's marker-walking splitter, as a second opinion on the simulator's plain search.
    `cut_short`: how many images may end without EOI (1 when a signal stopped a write half-way)."""
    splitter = JpegSplitter()
    images: list[bytearray] = []
    for piece in [*splitter.feed(data), *splitter.finish()]:
        if piece.new_frame:
            images.append(bytearray())
        images[-1] += piece.data
    assert splitter.skipped_bytes == 0 and splitter.truncated <= cut_short
    return [bytes(image) for image in images]


def _decode_jpeg(image: bytes) -> tuple[int, int]:
    import av  # a runtime dependency: missing means a broken install
    with av.open(io.BytesIO(image), format="mjpeg") as container:
        (frame,) = list(container.decode(video=0))
        return frame.width, frame.height


def test_mjpeg_clip_layout() -> None:
    images = split_jpeg_images(MJPEG_CLIP)
    assert len(images) == 25  # 1 s at 25 fps
    assert list(images) == _split_jpegs(MJPEG_CLIP)  # the plain SOI/EOI search is right for this file
    assert b"".join(images) == MJPEG_CLIP
    assert all(image[:2] == b"\xff\xd8" and image[-2:] == b"\xff\xd9" for image in images)
    assert all(8_000 <= len(image) <= 20_000 for image in images)
    assert len(MJPEG_CLIP) < 400_000
    assert {_decode_jpeg(image) for image in images} == {(640, 360)}
    plan = build_mjpeg_plan(MJPEG_CLIP)
    assert [plan.frame(i) for i in (0, 1, 24, 25, 26)] == [images[0], images[1], images[24], images[0], images[1]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no JPEG images"),
        (b"\x00\xff\xd8\xff\xd9", "expected a JPEG start (FF D8) at byte 0"),
        (b"\xff\xd8\x01\xff\xd9\xff\xd8\x02", "the JPEG image at byte 5 has no end (FF D9)"),
    ],
)
def test_split_jpeg_images_refuses_unclean_data(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_jpeg_images(data)


def test_filler() -> None:
    assert build_filler_nal(FILLER_MIN_SIZE) == b"\x00\x00\x00\x01\x0c\x80"
    assert build_filler_nal(10) == b"\x00\x00\x00\x01\x0c\xff\xff\xff\xff\x80"
    with pytest.raises(ValueError):
        build_filler_nal(5)
    # 8000 bit/s at 10 fps = 100 bytes a frame
    assert filler_size(0, 8000, 10.0, sent=0, frame_len=40) == 60
    assert filler_size(0, 8000, 10.0, sent=0, frame_len=96) == 0  # a 4-byte gap cannot hold a filler NAL
    assert filler_size(1, 8000, 10.0, sent=96, frame_len=40) == 64  # ... so the next frame pays it
    assert filler_size(1, 8000, 10.0, sent=250, frame_len=40) == 0  # a big frame is paid back later
    assert filler_size(5, 0, 10.0, sent=0, frame_len=40) == 0  # bitrate 0: the clip's own rate


def test_parse_fault() -> None:
    assert parse_fault(None) == parse_fault("") == camera.Fault()
    assert parse_fault("no-camera") == camera.Fault(no_camera=True)
    assert parse_fault("crash-after=1000") == camera.Fault(crash_after=1000)
    for bad in ("crash-after", "crash-after=-1", "explode"):
        with pytest.raises(ValueError):
            parse_fault(bad)


# ----------------------------------------------------------------------------------------- stand-in shims


def test_stand_in_script_quotes_everything(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin dir's"
    log_dir = tmp_path / "log $HOME `x`"
    paths = install_stand_ins(bin_dir, SIM_TOOLS, extra_env={"PIORCH_SIM_LOG": str(log_dir)})
    assert [path.name for path in paths] == list(SIM_TOOLS)
    assert all(os.access(path, os.X_OK) for path in paths)
    result = subprocess.run(
        [str(bin_dir / "rpicam-vid"), "--version"], capture_output=True, text=True, timeout=PROCESS_DEADLINE_S
    )
    assert result.returncode == 0
    assert result.stdout.startswith("rpicam-apps build:")
    (record,) = _runs(log_dir)
    assert record["argv"] == ["rpicam-vid", "--version"]
    with pytest.raises(ValueError):
        build_stand_in_script("raspivid", sys.executable, "/x", {"BAD NAME": "1"})
    with pytest.raises(ValueError):
        build_stand_in_script("not-a-camera-tool", sys.executable, "/x", {})


def test_importing_the_simulator_stays_light() -> None:
    code = (
        "import sys, orchestrator.sim.camera, orchestrator.sim.still, orchestrator.sim.stand_in\n"
        "print(sorted({'av', 'numpy', 'rich', 'typer', 'paramiko'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=PROCESS_DEADLINE_S)
    assert result.stdout.strip() == "[]", result.stderr


# ---------------------------------------------------------------------------------- simulated camera runs


@dataclass(frozen=True)
class Sim:
    bin_dir: Path
    log_dir: Path
    lock: Path
    env: dict[str, str]

    def start(self, tool: str, *args: str, stdout: int = subprocess.PIPE, **env: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(self.bin_dir / tool), *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            env={**self.env, **env},
        )

    def run(self, tool: str, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(self.bin_dir / tool), *args],
            capture_output=True,
            env={**self.env, **env},
            timeout=PROCESS_DEADLINE_S,
        )


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    bin_dir, log_dir, lock = tmp_path / "bin", tmp_path / "log", tmp_path / "camera.lock"
    install_stand_ins(bin_dir, SIM_TOOLS)
    # Our own lock file: other tests' simulated cameras must not make this one "busy".
    env = {**os.environ, "PIORCH_SIM_LOG": str(log_dir), "PIORCH_SIM_LOCK": str(lock)}
    for name in ("PIORCH_SIM_FAULT", "PIORCH_SIM_IGNORE_HUP_PIPE"):
        env.pop(name, None)
    yield Sim(bin_dir, log_dir, lock, env)


@pytest.fixture
def reap() -> Iterator[Callable[[subprocess.Popen[bytes]], subprocess.Popen[bytes]]]:
    """Kill every started simulator that a failing test left running."""
    started: list[subprocess.Popen[bytes]] = []

    def track(process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        started.append(process)
        return process

    yield track
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=PROCESS_DEADLINE_S)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _runs(log_dir: Path) -> list[dict[str, object]]:
    path = log_dir / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = PROCESS_DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _nal_types(data: bytes) -> list[int]:
    return [nal_type(nal) for nal in split_nal_units(data)]


def _decoded_frames(data: bytes) -> int:
    import av  # a runtime dependency: missing means a broken install
    with av.open(io.BytesIO(data), format="h264") as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize(
    ("tool", "args", "fps", "bytes_per_s"),
    [
        ("raspivid", ["-t", "1000", "-fps", "25", "-b", "4000000", "-ih", "-n", "-o", "-"], 25, 500_000),
        ("rpicam-vid", ["-t", "1s", "--framerate", "30", "-b", "3mbps", "--inline", "-n", "-o", "-"], 30, 375_000),
    ],
)
def test_stream_is_paced_padded_and_decodable(sim: Sim, tool: str, args: list[str], fps: int, bytes_per_s: int) -> None:
    started = time.monotonic()
    result = sim.run(tool, *args)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    data = result.stdout
    assert _nal_types(data)[:3] == [7, 8, 5]
    assert abs(len(data) - bytes_per_s) <= 0.15 * bytes_per_s
    assert 0.95 <= elapsed < 2.5  # runs for its timeout, not as fast as it can
    (record,) = _runs(sim.log_dir)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["bytes"] == len(data)
    assert record["reason"] == "timeout" and record["exit_code"] == 0
    assert record["argv"] == [tool, *args]
    assert abs(_decoded_frames(data) - fps) <= 2
    assert not list(sim.log_dir.glob("running-*"))


@pytest.mark.parametrize(
    ("tool", "args", "fps"),
    [
        # -b is asked for and not met: JPEG cannot be padded, so the images go out at their own size. At the
        # shipped images' size (640x360, no --quality) the simulator sends those (test_sim_sizes.py: others).
        ("raspivid", ["-cd", "MJPEG", "-t", "1000", "-fps", "25", "-b", "4000000", "-w", "640", "-h", "360", "-n",
                      "-o", "-"], 25),
        ("rpicam-vid", ["--codec", "MJPEG", "-t", "1s", "--framerate", "30", "--width", "640", "--height", "360",
                        "-n", "-o", "-"], 30),
    ],
)
def test_mjpeg_stream_is_paced_jpegs(sim: Sim, tool: str, args: list[str], fps: int) -> None:
    started = time.monotonic()
    result = sim.run(tool, *args)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    data = result.stdout
    images = _split_jpegs(data)
    assert abs(len(images) - fps) <= 2
    assert 0.95 <= elapsed < 2.5  # runs for its timeout, not as fast as it can
    shipped = split_jpeg_images(MJPEG_CLIP)
    # The shipped images in order, looped, nothing between them: no padding, no partial image.
    assert data == b"".join(shipped[i % len(shipped)] for i in range(len(images)))
    assert {_decode_jpeg(image) for image in images} == {(640, 360)}
    (record,) = _runs(sim.log_dir)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["bytes"] == len(data)
    assert record["frames"] == len(images)
    assert record["reason"] == "timeout" and record["exit_code"] == 0
    assert not list(sim.log_dir.glob("running-*"))


def test_mjpeg_sigterm_logs_exactly_what_was_written(
    sim: Sim, reap: Callable[[subprocess.Popen[bytes]], subprocess.Popen[bytes]]
) -> None:
    process = reap(sim.start("raspivid", "-cd", "MJPEG", "-t", "0", "-fps", "50", "-w", "640", "-h", "360", "-o", "-"))
    assert process.stdout is not None
    received = process.stdout.read(2)
    assert received == b"\xff\xd8"  # streaming, so it holds the camera
    assert not camera_is_free(sim.lock)
    # Not reading for a while fills the pipe (~11.5 KB an image at 50 fps): the signal may well land in
    # the middle of an image, as it can on a Pi. The log must still hash exactly the bytes that went out.
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    received += process.stdout.read()
    assert process.wait(timeout=PROCESS_DEADLINE_S) == 128 + signal.SIGTERM
    (record,) = _runs(sim.log_dir)
    assert record["reason"] == "signal" and record["signal"] == signal.SIGTERM
    assert record["sha256"] == hashlib.sha256(received).hexdigest() and record["bytes"] == len(received)
    images = _split_jpegs(received, cut_short=1)
    assert record["frames"] == len(images) >= 5  # an image cut short by the signal counts as sent
    shipped = split_jpeg_images(MJPEG_CLIP)
    assert all(shipped[i % len(shipped)].startswith(image) for i, image in enumerate(images))
    assert camera_is_free(sim.lock)


def test_without_inline_headers_only_the_start_has_sps(sim: Sim, tmp_path: Path) -> None:
    target = tmp_path / "out.h264"
    # --frames overrides the timeout: 60 frames, although 60 ms would end the run after 18
    result = sim.run("rpicam-vid", "--frames", "60", "--framerate", "300", "--intra", "25", "-t", "60ms",
                     "-o", str(target))
    assert result.returncode == 0, result.stderr
    data = target.read_bytes()
    types = _nal_types(data)
    assert types[:3] == [7, 8, 5]
    assert types.count(7) == 1 and types.count(5) == 3  # IDRs at frames 0, 25, 50
    assert _decoded_frames(data) == 60
    (record,) = _runs(sim.log_dir)
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["frames"] == 60


def test_busy_camera_and_sigterm(sim: Sim, reap: Callable[[subprocess.Popen[bytes]], subprocess.Popen[bytes]]) -> None:
    first = reap(sim.start("raspivid", "-t", "0", "-o", "-"))
    assert first.stdout is not None
    assert first.stdout.read(4) == b"\x00\x00\x00\x01"  # streaming, so it holds the camera
    assert (sim.log_dir / f"running-{first.pid}").exists()
    assert not camera_is_free(sim.lock)

    legacy = sim.run("raspivid", "-t", "100", "-o", "-")
    assert legacy.returncode == 70
    assert b"mmal: mmal_vc_component_enable: failed to enable component: ENOSPC" in legacy.stderr
    rpicam = sim.run("rpicam-vid", "-t", "100", "-o", "-")
    assert rpicam.returncode == 255
    assert f"ERROR: *** failed to acquire camera {camera.SENSOR_ID} ***".encode() in rpicam.stderr
    assert legacy.stdout == rpicam.stdout == b""

    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=PROCESS_DEADLINE_S) == 128 + signal.SIGTERM
    records = {record["pid"]: record for record in _runs(sim.log_dir)}
    assert records[first.pid]["reason"] == "signal" and records[first.pid]["signal"] == signal.SIGTERM
    assert records[first.pid]["pgid"] == os.getpgid(0)  # Popen without a new session: ours
    refused = sorted((record["tool"], record["exit_code"], record["reason"]) for record in records.values())
    assert refused == [("raspivid", 70, "error"), ("raspivid", 143, "signal"), ("rpicam-vid", 255, "error")]
    assert not (sim.log_dir / f"running-{first.pid}").exists()
    assert camera_is_free(sim.lock)


def test_sigint_exits_130(sim: Sim, reap: Callable[[subprocess.Popen[bytes]], subprocess.Popen[bytes]]) -> None:
    process = reap(sim.start("rpicam-vid", "-t", "0", "-n", "-o", "-"))
    assert process.stdout is not None and process.stdout.read(4) == b"\x00\x00\x00\x01"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=PROCESS_DEADLINE_S) == 130
    (record,) = _runs(sim.log_dir)
    assert record["reason"] == "signal" and record["exit_code"] == 130


@pytest.mark.parametrize(
    ("tool", "code", "line"),
    [
        ("raspivid", 70, b"mmal: Camera is not detected. Please check carefully the camera module is installed"),
        ("rpicam-vid", 255, b"ERROR: *** no cameras available ***"),
        ("libcamera-vid", 255, b"ERROR: *** no cameras available ***"),
    ],
)
def test_no_camera_fault(sim: Sim, tool: str, code: int, line: bytes) -> None:
    result = sim.run(tool, "-t", "100", "-o", "-", PIORCH_SIM_FAULT="no-camera")
    assert result.returncode == code
    assert line in result.stderr
    assert result.stdout == b""
    (record,) = _runs(sim.log_dir)
    assert record["reason"] == "error"


def test_crash_after_fault(sim: Sim) -> None:
    result = sim.run("rpicam-vid", "-t", "0", "-o", "-", PIORCH_SIM_FAULT="crash-after=1000")
    assert result.returncode == 1
    assert len(result.stdout) == 1000
    (record,) = _runs(sim.log_dir)
    assert record["bytes"] == 1000 and record["sha256"] == hashlib.sha256(result.stdout).hexdigest()


def test_broken_pipe_exits_quietly(
    sim: Sim, reap: Callable[[subprocess.Popen[bytes]], subprocess.Popen[bytes]]
) -> None:
    process = reap(sim.start("raspivid", "-t", "0", "-b", "8000000", "-o", "-"))
    assert process.stdout is not None and process.stderr is not None
    received = process.stdout.read(100_000)
    process.stdout.close()
    assert process.wait(timeout=PROCESS_DEADLINE_S) == 1
    assert b"Traceback" not in process.stderr.read()
    (record,) = _runs(sim.log_dir)
    assert record["reason"] == "epipe" and record["pipe_broken"] is True
    assert isinstance(record["bytes"], int) and record["bytes"] >= len(received)
    assert not (sim.log_dir / f"running-{process.pid}").exists()


def test_ignore_hup_pipe_mode_keeps_the_camera_busy(
    sim: Sim, reap: Callable[[subprocess.Popen[bytes]], subprocess.Popen[bytes]]
) -> None:
    process = reap(sim.start("raspivid", "-t", "0", "-o", "-", PIORCH_SIM_IGNORE_HUP_PIPE="1"))
    assert process.stdout is not None
    process.stdout.read(10_000)
    process.stdout.close()
    time.sleep(0.4)  # several frame intervals: it has hit the broken pipe by now
    process.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    assert process.poll() is None
    assert (sim.log_dir / f"running-{process.pid}").exists()
    assert not camera_is_free(sim.lock)
    assert _runs(sim.log_dir) == []

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=PROCESS_DEADLINE_S) == 128 + signal.SIGTERM
    (record,) = _runs(sim.log_dir)
    assert record["reason"] == "signal" and record["pipe_broken"] is True
    assert camera_is_free(sim.lock)


@pytest.mark.parametrize(
    ("tool", "args", "code", "stream", "text"),
    [
        ("raspivid", ["-cd", "mjpeg", "-o", "-"], 64, "stderr", b"Invalid command line option (mjpeg)\n"),
        # yuv420 is simulated with each Pi's row padding (test_sim_sizes.py), but not at odd sizes
        ("rpicam-vid", ["--codec", "yuv420", "--width", "101", "-o", "-"], 1, "stderr",
         b"simulator: yuv420 at 101x480 is not simulated"),
        ("raspivid", ["-bitrate", "8000000"], 64, "stderr", b"Invalid command line option (-bitrate)\n"),
        ("rpicam-vid", ["--foo"], 255, "stderr", b"ERROR: *** unrecognised option '--foo' ***\n"),
        ("raspivid", [], 64, "stdout", b"usage: raspivid [options]"),
        ("raspivid", ["-?"], 0, "stdout", b"usage: raspivid [options]"),
        ("rpicam-vid", ["-h"], 0, "stdout", b"Valid options are:"),
        ("libcamera-vid", ["--version"], 0, "stdout", b"rpicam-apps build:"),
    ],
)
def test_refusals_and_help(sim: Sim, tool: str, args: list[str], code: int, stream: str, text: bytes) -> None:
    result = sim.run(tool, *args)
    assert result.returncode == code
    assert text in getattr(result, stream)
    (record,) = _runs(sim.log_dir)
    assert record["exit_code"] == code and record["bytes"] == 0


def test_demo_netcat_stand_in_sends_and_closes(tmp_path: Path) -> None:
    """The demo's fallback nc: recognised as OpenBSD by the probe, delivers stdin, closes at its end."""
    import socket as socket_module
    import subprocess as sp

    from orchestrator.netcat import NetcatFlavour, parse_nc_flavour
    from orchestrator.sim.stand_in import install_stand_ins

    (nc,) = install_stand_ins(tmp_path, ("nc",))
    help_text = sp.run([str(nc), "-h"], capture_output=True, text=True, timeout=10).stderr
    assert parse_nc_flavour(help_text) is NetcatFlavour.OPENBSD
    with socket_module.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        payload = bytes(range(256)) * 1000
        sender = sp.Popen([str(nc), "-N", "127.0.0.1", str(port)], stdin=sp.PIPE)
        conn, _ = server.accept()
        assert sender.stdin is not None
        sender.stdin.write(payload)
        sender.stdin.close()
        received = b""
        conn.settimeout(10)
        while chunk := conn.recv(65536):
            received += chunk
        conn.close()
        assert sender.wait(10) == 0
    assert received == payload
