"""Shared pieces of the end-to-end tests: a fake Pi (real sshd + camera simulator) and running piorch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.sim.camera import camera_is_free
from orchestrator.sim.stand_in import install_stand_ins
from tests.sshd_server import SshServer, SshServerInfo
from tests.system_tools import require_tool

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FakePi:
    server: SshServer
    info: SshServerInfo
    log_dir: Path
    lock: Path

    def runs(self) -> list[dict[str, object]]:
        """Every run of a camera tool, except the probe's questions (`--help`, `--version`), which do not
        open the camera."""
        return [run for run in self.all_runs() if not is_question(run)]

    def questions(self) -> list[dict[str, object]]:
        """The probe's `--help` and `--version` runs."""
        return [run for run in self.all_runs() if is_question(run)]

    def all_runs(self) -> list[dict[str, object]]:
        path = self.log_dir / "runs.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def cameras_running(self) -> list[Path]:
        return sorted(self.log_dir.glob("running-*"))

    def camera_free(self) -> bool:
        """The simulator holds an exclusive flock on the lock file while it runs, like the real camera."""
        return camera_is_free(self.lock)

    def wait_until_freed(self, timeout: float, after: str) -> None:
        """The Pi frees its camera by itself (its watchdog, after piorch is gone): within `timeout` seconds
        of `after`, or the test fails saying so."""
        deadline = time.monotonic() + timeout
        while not (self.camera_free() and not self.cameras_running()):
            assert time.monotonic() < deadline, f"the camera was still held {timeout:g} s after {after}"
            time.sleep(0.1)

    def use_traditional_nc(self) -> None:
        (self.info.bin_dir / "nc").symlink_to(require_tool("nc.traditional"))


def is_question(run: dict[str, object]) -> bool:
    argv = run.get("argv")
    return isinstance(argv, list) and argv[1:] in (["--help"], ["--version"])


def start_fake_pi(tmp_path: Path, tools: tuple[str, ...] = ("raspivid",),
                  extra_env: dict[str, str] | None = None) -> FakePi:
    # The fake Pi streams through the machine's own netcat (its PATH ends in /usr/bin), as a real Pi does.
    require_tool("nc")
    log_dir = tmp_path / "pi-log"
    log_dir.mkdir()
    lock = tmp_path / "camera.lock"
    server = SshServer({"PIORCH_SIM_LOG": str(log_dir), "PIORCH_SIM_LOCK": str(lock), **(extra_env or {})})
    info = server.start()
    install_stand_ins(info.bin_dir, tools)
    return FakePi(server, info, log_dir, lock)


def piorch_env(tmp_path: Path, ssh_config: Path, laptop_bin: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Never the developer's own config: no user file, and the test's ssh_config with its known_hosts.
    env["PIORCH_CONFIG"] = str(tmp_path / "no-user-config.toml")
    env["PIORCH_SSH_CONFIG"] = str(ssh_config)
    env["PYTHONPATH"] = str(ROOT)
    # What piorch remembers of each Pi (pi/probe_memory.py) stays with the test.
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    if laptop_bin is not None:
        env["PATH"] = f"{laptop_bin}{os.pathsep}{env['PATH']}"
    return env


def piorch_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def run_piorch(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(piorch_argv(*args), env=env, capture_output=True, text=True, timeout=timeout)


def manifests(out: Path) -> list[dict[str, object]]:
    """The per-file manifests (not the session manifest)."""
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if not p.name.startswith("session-")]


def wait_for_bytes(out: Path, minimum: int, timeout: float = 20) -> None:
    """Until a file being received in `out` (`*.tmp`) holds `minimum` bytes, or the test fails saying so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sizes = [p.stat().st_size for p in out.glob("*.tmp")] if out.exists() else []
        if sizes and max(sizes) >= minimum:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {minimum} bytes arrived in {out} within {timeout} s")


def kill_once_bytes_arrive(proc: subprocess.Popen[bytes], out: Path, minimum: int, timeout: float = 20) -> None:
    """SIGKILL a running `piorch record` once `minimum` bytes are in `out`: killed outright, no handler runs."""
    try:
        wait_for_bytes(out, minimum, timeout)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
