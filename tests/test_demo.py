"""`piorch demo` through the real CLI: no sshd, no hardware, a playable H.264 file at the end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e_helpers import run_piorch
from tests.system_tools import require_tool


def decoded_frames(path: Path, form: str | None = "h264") -> int:
    import av  # a runtime dependency: missing means a broken install
    with av.open(str(path), format=form) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("backend", ["builtin", "nc"])
def test_demo_records_a_playable_file(tmp_path: Path, backend: str) -> None:
    if backend == "nc":
        require_tool("nc")  # the laptop's own netcat receives
    env = dict(os.environ, PIORCH_CONFIG=str(tmp_path / "none.toml"))
    out = tmp_path / "recv"
    result = run_piorch(env, "demo", "--seconds", "2", "--out", str(out), "--bitrate", "4000000",
                        "--backend", backend, "--container", "h264")
    assert result.returncode == 0, result.stderr
    (video,) = out.glob("*.h264")
    manifest = json.loads(video.with_suffix(".json").read_text())
    assert manifest["status"] == "complete" and manifest["tool"] == "raspivid"
    assert manifest["remote_argv"][:3] == ["raspivid", "-o", "-"] and "-ih" in manifest["remote_argv"]
    # 2 s at 25 fps, paced by the simulator; the stream decodes from its first byte.
    assert 45 <= decoded_frames(video) <= 55
    # Paced at the bitrate: 2 s at 4 Mbit/s is about 1 MB.
    assert 0.8e6 < video.stat().st_size < 1.2e6


def test_demo_without_netcat_on_the_laptop(tmp_path: Path) -> None:
    """A laptop with no nc still runs the demo: the simulated Pi brings its own sender."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "setsid", "head", "sleep"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    env = dict(os.environ, PIORCH_CONFIG=str(tmp_path / "none.toml"), PATH=str(bin_dir))
    out = tmp_path / "recv"
    result = run_piorch(env, "demo", "--seconds", "1", "--out", str(out), "--bitrate", "2000000")
    assert result.returncode == 0, result.stderr
    (video,) = out.glob("*.mp4")
    manifest = json.loads(video.with_suffix(".json").read_text())
    assert manifest["status"] == "complete" and manifest["container"] == "mp4"
    assert decoded_frames(video, None) == manifest["frames"] > 0


def test_demo_bad_input_is_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, PIORCH_CONFIG=str(tmp_path / "none.toml"))
    result = run_piorch(env, "demo", "--seconds", "-3", "--out", str(tmp_path / "recv"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--seconds" in result.stderr
    assert not (tmp_path / "recv").exists()
