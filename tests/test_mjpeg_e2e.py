"""`record --codec mjpeg [--frames]` through the real CLI and a real sshd."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest

from tests.e2e_helpers import manifests, piorch_env, run_piorch, start_fake_pi

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("tool", ["raspivid", "rpicam-vid"])
def test_frames_are_split_on_the_laptop(tmp_path: Path, tool: str) -> None:
    import av  # a runtime dependency: missing means a broken install

    from tests.conftest import _require_sshd
    _require_sshd()
    pi = start_fake_pi(tmp_path, (tool,))
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "2", "--codec", "mjpeg", "--frames",
                            "--fps", "10", "--out", str(out), "--port", "0")
        assert result.returncode == 0, result.stderr
        (run,) = pi.runs()
        assert ("-cd" in run["argv"] and "MJPEG" in run["argv"]) or ("--codec" in run["argv"]
                                                                       and "mjpeg" in run["argv"])
        (manifest,) = manifests(out)
        folder = out / manifest["file"]
        assert folder.is_dir() and manifest["status"] == "complete"
        frames = sorted(folder.glob("frame_*.jpg"))
        stream = b"".join(frame.read_bytes() for frame in frames)
        # The frames together are exactly the stream the camera sent, and as many as its JPEG starts.
        assert hashlib.sha256(stream).hexdigest() == run["sha256"] == manifest["sha256"]
        assert len(frames) == stream.count(b"\xff\xd8\xff") == manifest["frames"] == len(manifest["frame_list"])
        assert [entry["file"] for entry in manifest["frame_list"]] == [frame.name for frame in frames]
        assert all(entry["arrival_utc"].endswith("Z") and entry["complete"] for entry in manifest["frame_list"])
        for frame in frames:
            with av.open(io.BytesIO(frame.read_bytes()), format="mjpeg") as container:
                assert sum(1 for _ in container.decode(video=0)) == 1
        assert not list(out.glob("*.tmp"))
    finally:
        pi.server.stop()


def test_mjpeg_without_frames_is_one_file(tmp_path: Path) -> None:
    from tests.conftest import _require_sshd

    _require_sshd()
    pi = start_fake_pi(tmp_path, ("rpicam-vid",))
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "1", "--codec", "mjpeg",
                            "--out", str(out), "--port", "0")
        assert result.returncode == 0, result.stderr
        (run,) = pi.runs()
        (video,) = out.glob("*.mjpeg")
        assert hashlib.sha256(video.read_bytes()).hexdigest() == run["sha256"]
        assert json.loads(video.with_suffix(".json").read_text())["status"] == "complete"
    finally:
        pi.server.stop()


@pytest.mark.parametrize(("args", "words"), [(["--frames"], "--codec mjpeg"),
                                             (["--codec", "mjpeg", "--segment", "5s"], "--segment"),
                                             (["--codec", "vp9"], "--codec")])
def test_bad_mjpeg_options(tmp_path: Path, args: list[str], words: str) -> None:
    env = piorch_env(tmp_path, tmp_path / "none")
    result = run_piorch(env, "record", "--pi", "pi@192.0.2.1", *args, "--out", str(tmp_path / "recv"))
    assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1
