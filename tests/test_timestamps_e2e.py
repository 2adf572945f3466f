"""Issue 13 end to end: a real sshd, the camera simulator writing the tool's own timecode file (and dropping
frames on request), the real CLI. The sidecars are the camera's timestamps, the dropped frames are counted,
the containers carry the camera's times, on every tool and on the Pi 5's named-pipe path; a camera without
timestamps still records; the Pi keeps no named pipes afterwards, however the run ends."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from orchestrator.stream.timecodes import HEADER
from tests.e2e_helpers import FakePi, piorch_argv, piorch_env, run_piorch, start_fake_pi, wait_for_bytes
from tests.pi_models import PI4_RPICAM, PI5_RPICAM, PiModel, start_pi

pytestmark = pytest.mark.e2e

av = pytest.importorskip("av")

FPS = 25
# Frames dropped by the simulated camera: 2 before its 20th frame written, 1 before its 45th.
DROPS = "drop-frames=20:2/45"
DROPPED = 3


@pytest.fixture
def need_sshd() -> None:
    from tests.conftest import _require_sshd

    _require_sshd()


def fake_pi(tmp_path: Path, kind: str, extra: dict[str, str]) -> FakePi:
    """`kind`: a tool on a Pi whose board piorch cannot read, or a Pi model with its device tree."""
    models: dict[str, PiModel] = {"pi4-rpicam": PI4_RPICAM, "pi5-rpicam": PI5_RPICAM}
    # The Pi's own temporary folder, so that what the pipeline leaves there can be looked at.
    pi_tmp = tmp_path / "pi-tmp"
    pi_tmp.mkdir()
    env = {"TMPDIR": str(pi_tmp), **extra}
    if kind in models:
        return start_pi(tmp_path, models[kind], env)
    return start_fake_pi(tmp_path, (kind,), env)


def leftovers(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "pi-tmp").glob("piorch-*"))


def session(out: Path) -> dict[str, Any]:
    (path,) = out.glob("session-*.json")
    return dict(json.loads(path.read_text()))


def manifest_of(out: Path, file_id: str) -> dict[str, Any]:
    return dict(json.loads((out / f"{file_id}.json").read_text()))


def camera_file(pi: FakePi, run: dict[str, Any]) -> str:
    """What the simulated camera wrote into its timestamps file (its copy, line by line as written)."""
    return (pi.log_dir / f"pts-{run['pid']}.txt").read_text()


def times_of(text: str) -> list[float]:
    return [float(line) for line in text.splitlines() if line and not line.startswith("#")]


def container_times(path: Path) -> tuple[list[float], Fraction]:
    """Every packet's presentation time in seconds, in display order, and the stream's time base."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = sorted(float(packet.pts * stream.time_base) for packet in container.demux(stream) if packet.size)
        return times, Fraction(stream.time_base)


def assert_container_carries(path: Path, camera_ms: list[float]) -> None:
    """The container's times are the camera's, counted from the file's first frame, to within one tick of
    the container's own time base."""
    shown, time_base = container_times(path)
    first = min(camera_ms)
    expected = sorted((time - first) / 1000 for time in camera_ms)
    assert len(shown) == len(expected)
    worst = max(abs(a - b) for a, b in zip(shown, expected, strict=True))
    assert worst <= float(time_base), f"{path.name}: off by {worst * 1000:.3f} ms (time base {time_base})"


@pytest.mark.parametrize("kind", ["raspivid", "libcamera-vid", "rpicam-vid", "pi4-rpicam", "pi5-rpicam"])
def test_each_tool_sends_its_timestamps_beside_an_untouched_stream(tmp_path: Path, need_sshd: None,
                                                                   kind: str) -> None:
    pi = fake_pi(tmp_path, kind, {"PIORCH_SIM_FAULT": DROPS})
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "3", "--fps", str(FPS),
                            "--width", "640", "--height", "360", "--bitrate", "2000000", "--container", "mp4",
                            "--keep-raw", "--out", str(out), "--port", "0")
        assert result.returncode == 0, result.stderr
        (run,) = pi.runs()
        argv = run["argv"]
        assert ("-pts" if kind == "raspivid" else "--save-pts") in argv
        # The Pi 5's libav takes --save-pts only for an elementary stream named *.h264: the named pipe.
        assert argv[argv.index("-o") + 1] == ("stream.h264" if kind == "pi5-rpicam" else "-")
        info = session(out)
        (entry,) = info["files"]
        manifest = manifest_of(out, entry["id"])
        raw = out / manifest["raw_file"]
        # The video bytes are exactly what the camera wrote.
        import hashlib

        assert hashlib.sha256(raw.read_bytes()).hexdigest() == run["sha256"] == manifest["sha256"]
        # The sidecar is the camera's own timestamps file, line for line.
        sidecar = out / manifest["pts_file"]
        assert sidecar.name == f"{entry['id']}.pts"
        assert sidecar.read_text() == camera_file(pi, run)
        camera_ms = times_of(sidecar.read_text())
        assert len(camera_ms) == manifest["frames"] == run["frames"]
        assert manifest["timestamps"] == "camera" and manifest["timestamps_missing"] == 0
        assert manifest["frames_dropped"] == DROPPED == entry["frames_dropped"] == info["frames_dropped"]
        assert manifest["longest_gap_ms"] == pytest.approx(3000 / FPS)  # two frames missing: three intervals
        assert_container_carries(out / manifest["file"], camera_ms)
        # The session manifest has the Pi's clock offset (the same machine here: near zero) and each file's
        # first arrival on the laptop's clock.
        assert info["timestamps"] == "camera"
        assert abs(info["clock_offset_s"]) <= info["clock_uncertainty_s"] + 0.05
        assert entry["first_frame_utc"] == manifest["started_utc"]
        # The plain log said the drops as they came; the summary has a column for them.
        assert "the camera dropped" in result.stderr and "dropped" in result.stdout + result.stderr
        assert leftovers(tmp_path) == []
    finally:
        pi.server.stop()


def test_segments_sidecars_concatenate_to_the_cameras_file(tmp_path: Path, need_sshd: None) -> None:
    # A drop right at a segment's first frame (25) is that segment's; 60 is inside the third.
    pi = fake_pi(tmp_path, "rpicam-vid", {"PIORCH_SIM_FAULT": "drop-frames=25:1/60:2"})
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "4", "--segment", "1s", "--fps",
                            str(FPS), "--width", "640", "--height", "360", "--bitrate", "2000000", "--container",
                            "mkv", "--out", str(out), "--port", "0")
        assert result.returncode == 0, result.stderr
        (run,) = pi.runs()
        info = session(out)
        files = info["files"]
        assert len(files) >= 3
        texts = [(out / entry["pts_file"]).read_text() for entry in files]
        assert all(text.startswith(HEADER + "\n") for text in texts)
        whole = camera_file(pi, run)
        assert HEADER + "\n" + "".join(text.split("\n", 1)[1] for text in texts) == whole
        for entry, text in zip(files, texts, strict=True):
            manifest = manifest_of(out, entry["id"])
            camera_ms = times_of(text)
            assert len(camera_ms) == manifest["frames"] == entry["frames"]
            assert manifest["first_pts_ms"] == camera_ms[0]
            assert_container_carries(out / manifest["file"], camera_ms)
        assert [entry["frames_dropped"] for entry in files][:3] == [0, 1, 2]
        assert info["frames_dropped"] == 3
        assert leftovers(tmp_path) == []
    finally:
        pi.server.stop()


@pytest.mark.parametrize("version", ["1.5.3", "1.7.0"])
def test_a_camera_that_writes_no_timestamps_still_records(tmp_path: Path, need_sshd: None, version: str) -> None:
    # A Pi 5 before rpicam-apps 1.8.0: libav ignores (1.5) or refuses (1.7) --save-pts; piorch does not ask.
    pi = fake_pi(tmp_path, "pi5-rpicam", {"PIORCH_SIM_VERSION": version})
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "2", "--fps", str(FPS),
                            "--width", "640", "--height", "360", "--container", "mp4", "--keep-raw",
                            "--out", str(out), "--port", "0")
        assert result.returncode == 0, result.stderr
        assert "frame times from the frame rate" in result.stderr and "1.8.0" in result.stderr
        (run,) = pi.runs()
        assert "--save-pts" not in run["argv"] and run["argv"][run["argv"].index("-o") + 1] == "-"
        (entry,) = session(out)["files"]
        manifest = manifest_of(out, entry["id"])
        assert manifest["timestamps"] == "frame-rate" and manifest["pts_file"] is None
        assert manifest["frames_dropped"] is None and not list(out.glob("*.pts"))
        assert session(out)["timestamps"] == "frame-rate"
        # The container has the present behaviour: frame i at i / fps.
        shown, time_base = container_times(out / manifest["file"])
        assert all(abs(t - i / FPS) <= float(time_base) for i, t in enumerate(shown))
    finally:
        pi.server.stop()


def test_a_pi_whose_temporary_folder_fails_says_how_to_record_without_timestamps(tmp_path: Path,
                                                                                need_sshd: None) -> None:
    # The named pipes cannot be made (a full or read-only /tmp; here a TMPDIR that does not exist): the run
    # fails before the camera starts, in one line that names the way out, and --no-timestamps records.
    pi = start_fake_pi(tmp_path, ("rpicam-vid",), {"TMPDIR": str(tmp_path / "no-such-folder")})
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        args = ["record", "--pi", pi.info.alias, "--seconds", "2", "--fps", str(FPS), "--width", "640",
                "--height", "360", "--container", "h264", "--out", str(out), "--port", "0"]
        failed = run_piorch(env, *args)
        assert failed.returncode != 0 and "Traceback" not in failed.stderr
        (error,) = [line for line in failed.stderr.splitlines() if line.startswith("piorch: error:")]
        assert "could not make the named pipes" in error and str(tmp_path / "no-such-folder") in error
        assert error.endswith("or record with --no-timestamps")
        assert pi.runs() == [] and pi.camera_free()
        result = run_piorch(env, *args, "--no-timestamps")
        assert result.returncode == 0, result.stderr
        assert "frame times from the frame rate, not the camera's clock: turned off" in result.stderr
        (run,) = pi.runs()
        assert "--save-pts" not in run["argv"] and "--flush" not in run["argv"]
        (entry,) = session(out)["files"]
        manifest = manifest_of(out, entry["id"])
        assert manifest["timestamps"] == "frame-rate" and manifest["pts_file"] is None
        assert manifest["sha256"] == run["sha256"]
    finally:
        pi.server.stop()


def test_timestamps_false_in_the_config_file_and_the_flag_over_it(tmp_path: Path, need_sshd: None) -> None:
    pi = fake_pi(tmp_path, "raspivid", {})
    try:
        env = piorch_env(tmp_path, pi.info.ssh_config)
        Path(env["PIORCH_CONFIG"]).write_text("timestamps = false\n")
        args = ["record", "--pi", pi.info.alias, "--seconds", "1", "--fps", str(FPS), "--width", "640",
                "--height", "360", "--container", "h264", "--port", "0"]
        assert run_piorch(env, *args, "--out", str(tmp_path / "off")).returncode == 0
        assert run_piorch(env, *args, "--out", str(tmp_path / "on"), "--timestamps").returncode == 0
        first, second = pi.runs()
        assert "-pts" not in first["argv"] and "-pts" in second["argv"]
        assert session(tmp_path / "off")["timestamps"] == "frame-rate"
        assert session(tmp_path / "on")["timestamps"] == "camera"
        assert leftovers(tmp_path) == []
    finally:
        pi.server.stop()


def test_split_mjpeg_frames_each_carry_their_camera_time(tmp_path: Path, need_sshd: None) -> None:
    pi = fake_pi(tmp_path, "rpicam-vid", {"PIORCH_SIM_FAULT": "drop-frames=10:2"})
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "2", "--fps", "10", "--codec",
                            "mjpeg", "--frames", "--out", str(out), "--port", "0")
        assert result.returncode == 0, result.stderr
        (run,) = pi.runs()
        (entry,) = session(out)["files"]
        manifest = manifest_of(out, entry["id"])
        sidecar = (out / manifest["pts_file"]).read_text()
        assert sidecar == camera_file(pi, run)
        camera_ms = times_of(sidecar)
        assert [frame["pts_ms"] for frame in manifest["frame_list"]] == camera_ms
        assert len(list((out / entry["id"]).glob("frame_*.jpg"))) == len(camera_ms)
        assert manifest["frames_dropped"] == 2
        assert manifest["container"] == "frames"  # a folder of JPEG frames
    finally:
        pi.server.stop()


@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_every_ending_frees_the_camera_and_removes_the_named_pipes(tmp_path: Path, need_sshd: None,
                                                                   how: str) -> None:
    # SIGKILL: the Pi's watchdog ends the group and removes the folder; SIGINT: piorch's kill script does.
    pi = fake_pi(tmp_path, "pi5-rpicam", {})
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        proc = subprocess.Popen(piorch_argv("record", "--pi", pi.info.alias, "--out", str(out), "--port", "0",
                                            "--width", "640", "--height", "360", "--bitrate", "4000000"),
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_bytes(out, 200_000, timeout=30)
            assert len(leftovers(tmp_path)) == 1  # the pipes exist while it records
            proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGINT)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        if how == "sigint":
            assert proc.returncode == 130
        deadline = time.monotonic() + 15
        while not (pi.camera_free() and not pi.cameras_running() and not leftovers(tmp_path)):
            assert time.monotonic() < deadline, f"still there 15 s after {how}: {leftovers(tmp_path)}"
            time.sleep(0.1)
    finally:
        pi.server.stop()


def test_doctor_shows_the_clock_offset(tmp_path: Path, need_sshd: None) -> None:
    pi = fake_pi(tmp_path, "raspivid", {})
    try:
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = run_piorch(env, "doctor", "--pi", pi.info.alias)
        line = next(line for line in (result.stdout + result.stderr).splitlines() if "clock-offset" in line)
        assert "Pi clock minus laptop clock" in line and "round trips" in line
    finally:
        pi.server.stop()


def test_api_frames_carry_the_cameras_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator import Camera

    log = tmp_path / "sim-log"
    log.mkdir()
    monkeypatch.setenv("PIORCH_SIM_LOG", str(log))
    monkeypatch.setenv("PIORCH_SIM_FAULT", "drop-frames=5:1")
    with Camera("demo") as cam:
        stamps = [frame.pts_ms for frame in cam.frames(format="yuv", width=640, height=360, fps=FPS, seconds=1)]
    (copy,) = log.glob("pts-*.txt")
    assert stamps == times_of(copy.read_text())[: len(stamps)] and len(stamps) >= FPS - 3
    assert stamps[5] - stamps[4] == pytest.approx(2000 / FPS)
