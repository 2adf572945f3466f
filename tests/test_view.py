"""`--view`: the player is fed from the received stream and can never hurt the recording."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from orchestrator.events import Event
from orchestrator.stream.viewer import MAX_QUEUED_BYTES, ViewFeeder, build_player_argv
from tests.e2e_helpers import run_piorch


def player_stand_in(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "mpv"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


def env_with(bin_dir: Path, tmp_path: Path, keep_path: bool = True) -> dict[str, str]:
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}" if keep_path else str(bin_dir)
    return dict(os.environ, PATH=path, PIORCH_CONFIG=str(tmp_path / "none.toml"))


def test_player_sees_the_stream_that_is_recorded(tmp_path: Path) -> None:
    seen = tmp_path / "seen.h264"
    player_stand_in(tmp_path / "bin", f"cat > {seen}")
    out = tmp_path / "recv"
    result = run_piorch(env_with(tmp_path / "bin", tmp_path), "demo", "--seconds", "2", "--view",
                        "--container", "h264", "--bitrate", "2000000", "--out", str(out))
    assert result.returncode == 0, result.stderr
    (video,) = out.glob("*.h264")
    assert hashlib.sha256(seen.read_bytes()).digest() == hashlib.sha256(video.read_bytes()).digest()


def test_a_closed_player_does_not_touch_the_recording(tmp_path: Path) -> None:
    player_stand_in(tmp_path / "bin", "exit 0")  # the window closed at once
    out = tmp_path / "recv"
    result = run_piorch(env_with(tmp_path / "bin", tmp_path), "demo", "--seconds", "2", "--view",
                        "--bitrate", "2000000", "--out", str(out))
    assert result.returncode == 0, result.stderr
    (video,) = out.glob("*.mp4")
    assert json.loads(video.with_suffix(".json").read_text())["status"] == "complete"


def test_no_player_is_a_clear_error_before_anything_starts(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # No nc either: the demo brings a stand-in (and the player is missing before anything starts).
    for tool in ("sh", "setsid", "head", "sleep"):
        found = shutil.which(tool)
        assert found
        (bin_dir / tool).symlink_to(found)
    result = run_piorch(env_with(bin_dir, tmp_path, keep_path=False), "demo", "--seconds", "1", "--view",
                        "--out", str(tmp_path / "recv"))
    assert result.returncode == 2
    assert "--view needs a player" in result.stderr and "mpv" in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_stuck_player_never_blocks_offer(tmp_path: Path) -> None:
    """A player that never reads: offer() keeps returning at once and drops what does not fit."""
    events: list[Event] = []
    feeder = ViewFeeder(["sleep", "30"], events.append)
    feeder.start()
    chunk = os.urandom(1 << 20)
    for _ in range(40):
        feeder.offer(chunk)
    stopper = threading.Thread(target=feeder.stop, kwargs={"timeout": 1.0})
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive()
    # 40 MiB offered against a pipe that is never read: most was dropped, none of it waited.
    assert feeder.dropped_bytes >= 40 * (1 << 20) - MAX_QUEUED_BYTES - (1 << 20)


@pytest.mark.parametrize("player", ["mpv", "ffplay"])
def test_player_command_lines_read_raw_h264_from_stdin(player: str) -> None:
    argv = build_player_argv(player, f"/usr/bin/{player}")
    assert argv[0] == f"/usr/bin/{player}" and argv[-1] == "-"
    assert any("h264" in arg for arg in argv)
