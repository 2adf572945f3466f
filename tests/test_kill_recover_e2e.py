"""piorch killed outright (SIGKILL): the Pi frees its camera by itself; the laptop's leftover is recovered."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e_helpers import kill_once_bytes_arrive, manifests, piorch_argv, piorch_env, run_piorch, start_fake_pi

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("ignore_hup_pipe", [False, True])
def test_sigkill_frees_the_camera_and_recover_keeps_the_bytes(tmp_path: Path, ignore_hup_pipe: bool) -> None:
    from tests.conftest import _require_sshd

    _require_sshd()
    # The second case plays the legacy raspivid that ignores SIGHUP and a broken pipe (userland#268).
    extra = {"PIORCH_SIM_IGNORE_HUP_PIPE": "1"} if ignore_hup_pipe else {}
    pi = start_fake_pi(tmp_path, ("raspivid",), extra)
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        proc = subprocess.Popen(piorch_argv("record", "--pi", pi.info.alias, "--out", str(out), "--port", "0",
                                            "--bitrate", "4000000"),
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill_once_bytes_arrive(proc, out, 300_000)
        # The Pi notices on its own: its watchdog sees the SSH channel close and stops the whole group.
        pi.wait_until_freed(10, "piorch was killed")
        (leftover,) = out.glob("*.h264.tmp")
        kept = leftover.read_bytes()
        (run,) = pi.runs()
        assert run["reason"] in ("signal", "epipe")

        result = run_piorch(env, "recover", str(out))
        assert result.returncode == 0, result.stderr
        assert not list(out.glob("*.tmp"))
        (video,) = out.glob("*.h264")
        assert video.read_bytes() == kept  # never changed, never deleted
        (manifest,) = manifests(out)
        assert manifest["status"] == "recovered" and manifest["bytes"] == len(kept)
        assert manifest["sha256"] == hashlib.sha256(kept).hexdigest()
        assert run_piorch(env, "recover", str(out)).stdout.startswith("nothing to recover")
    finally:
        pi.server.stop()


def test_next_run_recovers_leftovers_and_skips_live_files(tmp_path: Path) -> None:
    from orchestrator.events import Event, FileFinished
    from orchestrator.stream.recovery import recover_leftovers
    from orchestrator.stream.writer import FileWriter

    out = tmp_path / "recv"
    out.mkdir()
    orphan = out / "11111111-2222-3333-4444-555555555555.h264.tmp"
    orphan.write_bytes(b"\x00\x00\x00\x01" * 1000)
    live = FileWriter(out, ".h264", "127.0.0.1:1")  # holds its flock like a running piorch
    live.write(b"still arriving")
    events: list[Event] = []
    recovered = recover_leftovers(out, events.append)
    assert [f.path.name for f in recovered] == ["11111111-2222-3333-4444-555555555555.h264"]
    assert live.tmp_path.exists()  # a file in use is never touched
    assert any(isinstance(e, FileFinished) for e in events)
    manifest = json.loads((out / "11111111-2222-3333-4444-555555555555.json").read_text())
    assert manifest["status"] == "recovered" and manifest["bytes"] == 4000
    live.finalize().release()
