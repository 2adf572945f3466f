"""Several Pis at once through the real CLI: two real sshd "Pis", one of them failing mid-run."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e_helpers import FakePi, manifests, piorch_argv, piorch_env, run_piorch, start_fake_pi

pytestmark = pytest.mark.e2e


def two_pis(tmp_path: Path, second_env: dict[str, str] | None = None) -> tuple[FakePi, FakePi, Path]:
    from tests.conftest import _require_sshd

    _require_sshd()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = start_fake_pi(tmp_path / "a", ("raspivid",))
    second = start_fake_pi(tmp_path / "b", ("rpicam-vid",), second_env)
    config = tmp_path / "ssh_config"
    config.write_text(first.info.ssh_config.read_text().replace("Host testpi", "Host cam1")
                      + second.info.ssh_config.read_text().replace("Host testpi", "Host cam2"))
    return first, second, config


def test_two_pis_each_in_its_own_folder_with_one_session(tmp_path: Path) -> None:
    first, second, config = two_pis(tmp_path)
    try:
        out = tmp_path / "recv"
        result = run_piorch(piorch_env(tmp_path, config), "record", "--pi", "cam1", "--pi", "cam2", "--seconds", "2",
                            "--bitrate", "2000000", "--container", "h264", "--out", str(out), "--port", "0")
        assert result.returncode == 0, result.stderr
        for name, pi in (("cam1", first), ("cam2", second)):
            (run,) = pi.runs()
            (video,) = (out / name).glob("*.h264")
            assert hashlib.sha256(video.read_bytes()).hexdigest() == run["sha256"]
            assert pi.camera_free()
        (session_file,) = out.glob("session-*.json")
        session = json.loads(session_file.read_text())
        assert [p["pi"] for p in session["pis"]] == ["cam1", "cam2"]
        assert all(p["state"] == "done" and len(p["files"]) == 1 for p in session["pis"])
        assert session["started_utc"] < session["ended_utc"]
        assert "[cam1]" in result.stderr and "[cam2]" in result.stderr  # the plain log, one prefix a Pi
    finally:
        first.server.stop()
        second.server.stop()


def test_one_pi_failing_does_not_stop_the_other(tmp_path: Path) -> None:
    # cam2's camera dies after 200 kB: its recording fails, cam1's goes on to the end.
    first, second, config = two_pis(tmp_path, {"PIORCH_SIM_FAULT": "crash-after=200000"})
    try:
        out = tmp_path / "recv"
        result = run_piorch(piorch_env(tmp_path, config), "record", "--pi", "cam1", "--pi", "cam2", "--seconds", "3",
                            "--bitrate", "2000000", "--container", "h264", "--out", str(out), "--port", "0")
        assert result.returncode == 1
        assert "1 of 2 Pis failed" in result.stderr and "cam2:" in result.stderr
        (run,) = first.runs()
        (video,) = (out / "cam1").glob("*.h264")
        assert hashlib.sha256(video.read_bytes()).hexdigest() == run["sha256"]
        assert manifests(out / "cam1")[0]["status"] == "complete"
        assert [m["status"] for m in manifests(out / "cam2")] == ["failed"]
        assert first.camera_free() and second.camera_free()
    finally:
        first.server.stop()
        second.server.stop()


@pytest.mark.parametrize("how", ["sshd-gone", "bad-port"])
def test_a_pi_that_cannot_be_reached_fails_alone(tmp_path: Path, how: str) -> None:
    # Every Pi's connection begins at once, before the recorder is imported: cam2's sshd is gone (its
    # connection is refused from the start), or its Host block's Port is no number; cam1 records to the end
    # all the same, and cam2's failure is one line of its own.
    first, second, config = two_pis(tmp_path)
    second.server.stop()
    if how == "bad-port":
        head, _, cam2 = config.read_text().partition("Host cam2")
        config.write_text(head + "Host cam2" + re.sub(r"(?m)^(\s*)Port \d+$", r"\1Port abc", cam2))
    try:
        out = tmp_path / "recv"
        result = run_piorch(piorch_env(tmp_path, config), "record", "--pi", "cam1", "--pi", "cam2", "--seconds", "2",
                            "--bitrate", "2000000", "--container", "h264", "--out", str(out), "--port", "0")
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert any(line.startswith("piorch: cam2: ") for line in result.stderr.splitlines()), result.stderr
        if how == "bad-port":
            assert "(Port 'abc' for cam2 is no port number): fix that file" in result.stderr
        assert not any(line.startswith("piorch: cam1: ") for line in result.stderr.splitlines())
        (run,) = first.runs()
        (video,) = (out / "cam1").glob("*.h264")
        assert hashlib.sha256(video.read_bytes()).hexdigest() == run["sha256"]
        (session_file,) = out.glob("session-*.json")
        states = {p["pi"]: p["state"] for p in json.loads(session_file.read_text())["pis"]}
        assert states == {"cam1": "done", "cam2": "failed"}
    finally:
        first.server.stop()


def test_ctrl_c_stops_every_pi(tmp_path: Path) -> None:
    first, second, config = two_pis(tmp_path)
    try:
        out = tmp_path / "recv"
        proc = subprocess.Popen(piorch_argv("record", "--pi", "cam1", "--pi", "cam2", "--out", str(out),
                                            "--port", "0", "--container", "h264"),
                                env=piorch_env(tmp_path, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            deadline = time.monotonic() + 20
            while len(list(out.glob("*/*.h264.tmp"))) < 2:
                assert time.monotonic() < deadline, "both Pis did not start"
                time.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130
        for name, pi in (("cam1", first), ("cam2", second)):
            assert [m["status"] for m in manifests(out / name)] == ["interrupted"]
            assert pi.camera_free() and not pi.cameras_running()
    finally:
        first.server.stop()
        second.server.stop()


def test_same_pi_twice_is_refused(tmp_path: Path) -> None:
    result = run_piorch(piorch_env(tmp_path, tmp_path / "none"), "record", "--pi", "cam1", "--pi", "cam1",
                        "--out", str(tmp_path / "recv"))
    assert result.returncode == 1 and "the same Pi is given twice" in result.stderr
    assert not (tmp_path / "recv").exists()


def test_ports_per_pi_from_the_config(tmp_path: Path) -> None:
    from orchestrator.resolve import plan_fleet
    from orchestrator.settings import CameraSettings, ReceiveSettings, RecordSettings

    base = RecordSettings(camera=CameraSettings(), receive=ReceiveSettings(port=10401, out_dir=tmp_path))
    plan = plan_fleet(["cam1", "cam2", "cam3"], base, {"cam2": 10450})
    assert [(t, s.receive.port, s.receive.out_dir.name) for t, s in plan] == [
        ("cam1", 10401, "cam1"), ("cam2", 10450, "cam2"), ("cam3", 10403, "cam3")]
    with pytest.raises(Exception, match="same port"):
        plan_fleet(["cam1", "cam2"], base, {"cam2": 10401})
