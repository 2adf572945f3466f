"""Every supported Pi records (issue 11): Pi 4 legacy, Pi 4 rpicam-apps, Pi 5 rpicam-apps, Pi 5 rpicam-apps-lite,
through the real CLI, a real sshd and real netcat. Record (raw and MP4), snap and doctor on each; every refusal
is one line, a non-zero exit, and nothing started on the Pi; a camera that ignores TERM is gone after Ctrl+C
and after piorch is killed outright.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from itertools import pairwise
from pathlib import Path

import pytest

from orchestrator.sim.options import effective_legacy_bitrate, parse_args
from tests.e2e_helpers import FakePi, manifests, piorch_argv, piorch_env, run_piorch, wait_for_bytes
from tests.pi_models import MODELS, PI4_LEGACY, PI4_RPICAM, PI5_LITE, PI5_RPICAM, PiModel, start_pi
from tests.test_doctor import doctor_env

pytestmark = pytest.mark.e2e

# Small and short: every case records for real.
SIZE = ("--width", "640", "--height", "480", "--fps", "15", "--bitrate", "2000000")


@pytest.fixture
def need_sshd() -> None:
    from tests.conftest import _require_sshd

    _require_sshd()


def record(pi: FakePi, tmp_path: Path, *args: str, timeout: float = 60
           ) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "recv"
    env = piorch_env(tmp_path, pi.info.ssh_config)
    result = run_piorch(env, "record", "--pi", pi.info.alias, "--out", str(out), "--port", "0", *args,
                        timeout=timeout)
    return result, out


def assert_refused(result: subprocess.CompletedProcess[str], pi: FakePi, out: Path, code: int, *words: str) -> None:
    """One error line (after the progress log's "probing the Pi", when the refusal needed the probe), the exit
    code, and nothing started on the Pi (no camera run, no file received)."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if "error" in line]
    assert errors == lines[-1:] and errors[0].startswith("piorch: error: "), result.stderr
    assert all(" probing the Pi: " in line for line in lines[:-1]), result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert pi.runs() == [] and pi.camera_free()
    assert not out.exists() or not any(out.iterdir())


def pts_in_display_order(path: Path) -> list[int]:
    """Decode the whole file; the frames' presentation timestamps in the order the decoder hands them out."""
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        return [frame.pts for frame in container.decode(video=0)]


EXTRA_H264 = {  # what each Pi's H.264 command line carries beyond the common options
    PI4_LEGACY.name: [], PI4_RPICAM.name: [], PI5_RPICAM.name: ["--libav-format", "h264", "--low-latency"],
}


@pytest.mark.parametrize("model", [m for m in MODELS if m is not PI5_LITE], ids=lambda m: m.name)
@pytest.mark.parametrize("container", ["h264", "mp4"])
def test_record_on_each_pi(tmp_path: Path, need_sshd: None, model: PiModel, container: str) -> None:
    pi = start_pi(tmp_path, model)
    try:
        result, out = record(pi, tmp_path, "--seconds", "2", "--container", container, *SIZE)
        assert result.returncode == 0, result.stderr
        (run,) = pi.runs()
        assert run["reason"] == "timeout" and run["exit_code"] == 0
        argv = run["argv"]
        assert isinstance(argv, list) and argv[0] == model.video_tool
        extra = EXTRA_H264[model.name]
        assert all(option in argv for option in extra)
        assert ("--libav-format" in argv) is bool(extra) and ("--low-latency" in argv) is bool(extra)
        (manifest,) = manifests(out)
        assert manifest["status"] == "complete" and manifest["remote_argv"] == argv
        settings = manifest["settings"]
        assert isinstance(settings, dict)
        assert settings["board"] == model.board
        assert settings["h264_encoder"] == ("software" if model is PI5_RPICAM else "hardware")
        assert (settings["tool_version"] is None) is model.legacy  # raspivid has no version to tell
        video = out / str(manifest["file"])
        assert video.suffix == f".{container}"
        pts = pts_in_display_order(video)
        assert len(pts) >= 15  # about two seconds at 15 fps arrived and decode
        if container == "mp4":
            assert manifest["frames"] == len(pts)
            assert all(later > earlier for earlier, later in pairwise(pts)), pts
        assert pi.camera_free()
    finally:
        pi.server.stop()


def test_pi5_lite_refuses_h264_before_the_camera_starts(tmp_path: Path, need_sshd: None) -> None:
    pi = start_pi(tmp_path, PI5_LITE)
    try:
        result, out = record(pi, tmp_path, "--seconds", "2", *SIZE)
        assert_refused(result, pi, out, 4, "cannot record H.264", "rpicam-apps-lite",
                       "sudo apt install rpicam-apps", "--codec mjpeg")
        # The probe asked the tool itself (that is how piorch knew), and nothing else ran.
        assert {tuple(q["argv"][1:]) for q in pi.questions()} == {("--help",), ("--version",)}
        # The fix it names works on that very Pi.
        mjpeg, out = record(pi, tmp_path, "--seconds", "1", "--codec", "mjpeg", *SIZE)
        assert mjpeg.returncode == 0, mjpeg.stderr
        (run,) = pi.runs()
        assert "mjpeg" in run["argv"] and "-b" not in run["argv"]  # rpicam-vid's MJPEG ignores -b
        (manifest,) = manifests(out)
        assert manifest["status"] == "complete" and manifest["settings"]["board"] == PI5_LITE.board
        assert manifest["container"] == "mjpeg" and manifest["file"].endswith(".mjpeg")
    finally:
        pi.server.stop()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_snap_on_each_pi(tmp_path: Path, need_sshd: None, model: PiModel) -> None:
    pi = start_pi(tmp_path, model)
    try:
        out = tmp_path / "pics"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = run_piorch(env, "snap", "--pi", pi.info.alias, "--out", str(out), "--port", "0",
                            "--width", "640", "--height", "480")
        assert result.returncode == 0, result.stderr
        (picture,) = out.glob("*.jpg")
        assert picture.read_bytes()[:3] == b"\xff\xd8\xff"
        (run,) = pi.runs()
        assert run["argv"][0] == model.still_tool
        (manifest,) = manifests(out)
        assert manifest["settings"]["board"] == model.board
    finally:
        pi.server.stop()


DOCTOR_STACK = {
    PI4_LEGACY.name: ("pass", f"{PI4_LEGACY.board}; legacy stack, raspivid; H.264 in hardware (VideoCore)"),
    PI4_RPICAM.name: ("pass", f"{PI4_RPICAM.board}; libcamera stack, rpicam-vid 1.13.0; H.264 in hardware"),
    PI5_RPICAM.name: ("pass", f"{PI5_RPICAM.board}; libcamera stack, rpicam-vid 1.13.0; H.264 in software "
                              "(libx264 through libav), no B-frames (--low-latency)"),
    PI5_LITE.name: ("fail", f"{PI5_LITE.board}; libcamera stack, rpicam-vid 1.13.0; no H.264 encoder"),
}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_doctor_on_each_pi(tmp_path: Path, need_sshd: None, model: PiModel) -> None:
    pi = start_pi(tmp_path, model)
    try:
        result = run_piorch(doctor_env(tmp_path, pi.info), "doctor", "--pi", pi.info.alias, "--json")
        report = json.loads(result.stdout)
        checks = {check["name"]: check for check in report["checks"]}
        status, words = DOCTOR_STACK[model.name]
        stack = checks["camera-stack"]
        assert stack["status"] == status and stack["detail"].startswith(words), stack
        if model is PI5_LITE:
            assert result.returncode != 0 and report["ok"] is False
            assert "sudo apt install rpicam-apps" in stack["fix"] and "--codec mjpeg" in stack["fix"]
        else:
            assert result.returncode == 0, result.stdout + result.stderr
        assert checks["camera-detected"]["status"] == "pass"
        assert pi.runs() == []  # doctor only looks
    finally:
        pi.server.stop()


# -- the real tools' limits, said before anything starts -----------------------------------------------------

@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--width", "1920", "--height", "1080", "--fps", "120"), ("979,200 macroblocks/s", "522,240", "--fps 64")),
        (("--codec", "mjpeg", "--bitrate", "30000000"), ("MJPEG ceiling of 25 Mbit/s", "--bitrate 25000000")),
    ],
)
def test_raspivid_limits_refused_before_the_camera_starts(tmp_path: Path, need_sshd: None, args: tuple[str, ...],
                                                          words: tuple[str, ...]) -> None:
    pi = start_pi(tmp_path, PI4_LEGACY)
    try:
        result, out = record(pi, tmp_path, "--seconds", "2", *args)
        assert_refused(result, pi, out, 2, *words)
    finally:
        pi.server.stop()


def test_raspivid_above_25_mbits_gets_level_4_2(tmp_path: Path, need_sshd: None) -> None:
    pi = start_pi(tmp_path, PI4_LEGACY)
    try:
        result, _ = record(pi, tmp_path, "--seconds", "1", "--container", "h264", "--width", "640",
                             "--height", "480", "--bitrate", "40000000", "--force")
        assert result.returncode == 0, result.stderr
        (run,) = pi.runs()
        argv = run["argv"]
        assert argv[argv.index("-lev") + 1] == "4.2"
        # What raspivid makes of that command line: the bitrate asked for, not lowered to 25 Mbit/s.
        assert effective_legacy_bitrate(parse_args("raspivid", argv[1:])) == (40_000_000, None)
    finally:
        pi.server.stop()


def test_a_duration_under_a_millisecond_is_refused(tmp_path: Path, need_sshd: None) -> None:
    pi = start_pi(tmp_path, PI4_RPICAM)
    try:
        result, out = record(pi, tmp_path, "--seconds", "0.0004")
        assert_refused(result, pi, out, 2, "--seconds 0.0004 is under a millisecond", "0 to record until Ctrl+C")
        assert pi.questions() == []  # refused before SSH
    finally:
        pi.server.stop()


def test_mjpeg_bitrate_is_said_to_be_ignored(tmp_path: Path, need_sshd: None) -> None:
    pi = start_pi(tmp_path, PI4_RPICAM)
    try:
        result, _ = record(pi, tmp_path, "--seconds", "1", "--codec", "mjpeg", *SIZE)
        assert result.returncode == 0, result.stderr
        assert "rpicam-vid ignores the bitrate with --codec mjpeg" in result.stderr
        assert "expect about 7 Mbit/s at 640x480, 15 fps" in result.stderr  # 640 x 480 x 15 x 1.5 bits
    finally:
        pi.server.stop()


def test_pi5_without_low_latency_warns_of_b_frames(tmp_path: Path, need_sshd: None) -> None:
    """rpicam-apps 1.4.2 (Bookworm's first rpicam-apps) has --libav-format but no --low-latency: only what it
    has is sent, and the B-frames it will make are said."""
    model = PiModel("pi5-1.4.2", PI5_RPICAM.board, {**PI5_RPICAM.sim_env, "PIORCH_SIM_VERSION": "1.4.2"},
                    "rpicam-vid", "rpicam-still")
    pi = start_pi(tmp_path, model)
    try:
        result, out = record(pi, tmp_path, "--seconds", "2", "--container", "h264", *SIZE)
        assert result.returncode == 0, result.stderr
        assert "has no --low-latency" in result.stderr and "B-frames" in result.stderr
        (run,) = pi.runs()
        assert "--libav-format" in run["argv"] and "--low-latency" not in run["argv"]
        (manifest,) = manifests(out)
        assert manifest["settings"]["tool_version"] == "9ae39f85ae6b 30-01-2024 (10:23:29)"  # no number before 1.5.2
    finally:
        pi.server.stop()


def test_a_libcamera_still_older_than_november_2021_is_refused(tmp_path: Path, need_sshd: None) -> None:
    """Such a libcamera-still writes `-o -` to a file named '-'. The stand-in prints what one of that age
    prints (a commit and a build date, a --help without --list-cameras) and logs any other call."""
    from tests.stand_in_pi import write_tool

    pi = start_pi(tmp_path, PI4_RPICAM)
    try:
        calls = tmp_path / "libcamera-still-calls"
        write_tool(pi.info.bin_dir, "libcamera-still", f"""case "$1" in
    --version) echo 'libcamera-apps build: 7e4d3d71867f 01-10-2021 (10:42:39)';;
    --help) printf 'Valid options are:\\n  -h [ --help ] [=arg(=1)] (=0)\\n'
            printf '  -o [ --output ] arg\\n  --encoding arg\\n';;
    *) echo "$@" >> {calls}; : > -;;
esac
""")
        out = tmp_path / "pics"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = run_piorch(env, "snap", "--pi", pi.info.alias, "--out", str(out), "--port", "0",
                            "--camera-tool", "libcamera-still")
        assert_refused(result, pi, out, 4, "libcamera-still on the Pi is older than November 2021",
                       "a file named '-'", "sudo apt update && sudo apt full-upgrade")
        assert not calls.exists()
    finally:
        pi.server.stop()


# -- a camera that ignores TERM ------------------------------------------------------------------------------

def wait_camera_gone(pi: FakePi, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not pi.camera_free():
        assert time.monotonic() < deadline, f"the camera was still held {seconds:.0f} s later"
        time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie holds nothing: it only waits to be reaped


@pytest.mark.parametrize("how", ["ctrl-c", "sigkill"])
def test_a_camera_that_ignores_term_is_gone(tmp_path: Path, need_sshd: None, how: str) -> None:
    """Ctrl+C: piorch's own stop escalates to KILL. piorch killed outright: the Pi's watchdog does.

    The camera ignores TERM and keeps running when its output pipe breaks (old raspivid, userland#268): only
    SIGKILL ends it, and a camera ended by SIGKILL leaves its running-<pid> marker and no run record."""
    faults = {"PIORCH_SIM_FAULT": "ignore-term", "PIORCH_SIM_IGNORE_HUP_PIPE": "1"}
    pi = start_pi(tmp_path, PI4_RPICAM, faults)
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        proc = subprocess.Popen(piorch_argv("record", "--pi", pi.info.alias, "--out", str(out), "--port", "0",
                                            "--container", "h264", *SIZE),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_bytes(out, 50_000, timeout=30)
            proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        try:
            wait_camera_gone(pi, 15)
        finally:  # never leave a camera behind, even when the test fails
            for left in pi.cameras_running():
                pid = int(left.name.removeprefix("running-"))
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
        (marker,) = pi.cameras_running()
        assert not pid_alive(int(marker.name.removeprefix("running-")))
        assert pi.runs() == []  # TERM and the broken pipe did not end it: KILL did
        if how == "ctrl-c":
            assert proc.returncode == 130, stderr
            assert "would not stop" not in stderr
            (manifest,) = manifests(out)
            assert manifest["status"] == "interrupted"
    finally:
        pi.server.stop()
