"""Camera busy at start: an orphan of an earlier piorch run is stopped, anything else is named (or
stopped with --kill-stale). Real sshd, the simulator's lock file standing for the camera device."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_helpers import FakePi, piorch_env, run_piorch, start_fake_pi

pytestmark = pytest.mark.e2e


@pytest.fixture
def pi(tmp_path: Path) -> Iterator[FakePi]:
    from tests.conftest import _require_sshd

    _require_sshd()
    fake = start_fake_pi(tmp_path, ("raspivid",))
    yield fake
    fake.server.stop()


def hold_camera(pi: FakePi, from_piorch: bool) -> subprocess.Popen[bytes]:
    """A camera process left running, as after a crash: it holds the lock until killed."""
    env = dict(os.environ, PIORCH_SIM_LOCK=str(pi.lock), PIORCH_SIM_LOG=str(pi.log_dir))
    if from_piorch:
        env["PIORCH_RUN"] = "1"
    proc = subprocess.Popen([str(pi.info.bin_dir / "raspivid"), "-o", "/dev/null", "-t", "0"], env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while pi.camera_free():
        assert time.monotonic() < deadline, "the stand-in did not take the camera"
        time.sleep(0.05)
    return proc


def record(tmp_path: Path, pi: FakePi, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_piorch(piorch_env(tmp_path, pi.info.ssh_config), "record", "--pi", pi.info.alias, "--seconds", "1",
                      "--bitrate", "2000000", "--out", str(tmp_path / "recv"), "--port", "0", *extra)


def test_orphan_of_an_earlier_run_is_stopped(tmp_path: Path, pi: FakePi) -> None:
    orphan = hold_camera(pi, from_piorch=True)
    try:
        result = record(tmp_path, pi)
        assert result.returncode == 0, result.stderr
        assert "left by an earlier piorch run; piorch stopped it" in result.stderr
        assert orphan.wait(10) is not None
        (video,) = (tmp_path / "recv").glob("*.mp4")
        assert json.loads(video.with_suffix(".json").read_text())["status"] == "complete"
    finally:
        if orphan.poll() is None:
            orphan.kill()


def test_other_holder_is_named_and_left_alone(tmp_path: Path, pi: FakePi) -> None:
    other = hold_camera(pi, from_piorch=False)
    try:
        result = record(tmp_path, pi)
        assert result.returncode == 1
        assert f"held by pid {other.pid}" in result.stderr and "--kill-stale" in result.stderr
        assert other.poll() is None  # not ours to stop without being asked
    finally:
        other.kill()


def test_kill_stale_stops_any_holder(tmp_path: Path, pi: FakePi) -> None:
    other = hold_camera(pi, from_piorch=False)
    try:
        result = record(tmp_path, pi, "--kill-stale")
        assert result.returncode == 0, result.stderr
        assert "stopped on --kill-stale" in result.stderr
        assert other.wait(10) is not None
    finally:
        if other.poll() is None:
            other.kill()
