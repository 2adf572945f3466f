"""What piorch remembers of a Pi (pi/probe_memory.py): the second `record` starts without asking the Pi
first, and a Pi that changed in between is found out by the start itself, before anything runs there.

The pure half (the memory file, the guard script under a real dash) and the whole of it through the CLI, a
real sshd and the camera simulator, whose log tells every run of a camera tool apart from the probe's
questions (`--help`, `--version`).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.pi.probe_memory import keep_probe, memory_folder, recall_probe
from orchestrator.pi.scripts import STALE_MARK, build_guarded_script, build_probe_script, build_stamp_command
from orchestrator.sim.stand_in import install_stand_ins
from tests.e2e_helpers import FakePi, piorch_env, run_piorch, start_fake_pi
from tests.system_tools import require_tool

needs_dash = pytest.mark.skipif(shutil.which("dash") is None, reason="needs dash")
RPICAM = {"PIORCH_SIM_BOARD": "pi4"}
SHORT = ("--seconds", "1", "--width", "640", "--height", "480", "--fps", "15", "--container", "h264", "--port", "0")


class NamedHost:
    """Just enough of a Host for the memory: a name and an identity."""

    def __init__(self, identity: str | None) -> None:
        self.name = "cam1"
        self._identity = identity

    def identity(self) -> str | None:
        return self._identity


def probe_text(stamp: str = "123 45") -> str:
    return ("piorch-tool rpicam-vid /usr/bin/rpicam-vid\npiorch-nc-begin\nOpenBSD netcat (Debian patchlevel 1.219-1)\n"
            f"piorch-nc-end\npiorch-setsid\npiorch-stamp {stamp}\npiorch-probe-done\n")


# ------------------------------------------------------------------------------------------- the pure half


def test_a_kept_probe_comes_back_for_the_same_pi_and_question(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert memory_folder() == tmp_path / "piorch" / "pis"
    host = NamedHost("pi@10.0.0.2:22 key SHA256:abc")
    keep_probe(host, ("rpicam-vid",), probe_text())  # type: ignore[arg-type]
    kept = recall_probe(host, ("rpicam-vid",))  # type: ignore[arg-type]
    assert kept is not None and kept.stamp == "123 45" and kept.nc_flavour is not None
    # Another question, another Pi (a new host key on the same address), a host with no identity: nothing.
    assert recall_probe(host, ("libcamera-vid",)) is None  # type: ignore[arg-type]
    assert recall_probe(NamedHost("pi@10.0.0.2:22 key SHA256:new"), ("rpicam-vid",)) is None  # type: ignore[arg-type]
    keep_probe(NamedHost(None), (), probe_text())  # type: ignore[arg-type]
    assert len(list(memory_folder().iterdir())) == 1


@pytest.mark.parametrize("damage", ["not json", '{"format": 99, "probe": "x"}', '["a list"]',
                                    '{"format": 1, "probe": "piorch-tool rpicam-vid /x\\n"}', "x" * 300_000])
def test_a_damaged_memory_file_is_no_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    host = NamedHost("pi@cam1:22 key SHA256:abc")
    keep_probe(host, (), probe_text())  # type: ignore[arg-type]
    (path,) = memory_folder().iterdir()
    path.write_text(damage)
    assert recall_probe(host, ()) is None  # type: ignore[arg-type]


def test_a_probe_without_a_stamp_is_not_kept_and_an_unwritable_cache_is_no_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    host = NamedHost("pi@cam1:22 key SHA256:abc")
    keep_probe(host, (), probe_text().replace("piorch-stamp 123 45\n", ""))  # type: ignore[arg-type]
    assert not (tmp_path / "cache").exists()
    (tmp_path / "cache").write_text("a file where the folder would go")
    keep_probe(host, (), probe_text())  # type: ignore[arg-type]
    assert recall_probe(host, ()) is None  # type: ignore[arg-type]


@needs_dash
def test_the_guard_runs_the_script_only_for_the_stamp_it_was_given(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = f"touch {marker}; echo started"
    stamp = subprocess.run(["dash", "-c", build_stamp_command()], capture_output=True, text=True).stdout.strip()
    probe = subprocess.run(["dash", "-c", build_probe_script()], capture_output=True, text=True).stdout
    assert f"piorch-stamp {stamp}\n" in probe, "the probe reports the same stamp the guard computes"

    same = subprocess.run(["dash", "-c", build_guarded_script(script, stamp)], capture_output=True, text=True)
    assert same.stdout.strip() == "started" and marker.exists()
    marker.unlink()
    other = subprocess.run(["dash", "-c", build_guarded_script(script, "1 2")], capture_output=True, text=True)
    assert (other.stdout.strip(), other.returncode) == (STALE_MARK, 0) and not marker.exists()


def shell_argv(shell: str) -> list[str]:
    """The argv prefix that runs a script under `shell`: bash (a Pi's login shell), dash, busybox's ash."""
    if shell == "bash":
        return ["bash", "-c"]
    return [require_tool(shell), *(["sh"] if shell == "busybox" else []), "-c"]


@pytest.mark.parametrize("shell", ["bash", "dash", "busybox"])
def test_the_stamp_changes_with_a_new_tool_the_environment_and_not_with_the_login(tmp_path: Path,
                                                                                   shell: str) -> None:
    argv = shell_argv(shell)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    here = tmp_path / "here"  # the current folder, on the search path as a trailing empty entry
    here.mkdir()

    def stamp(**env: str) -> str:
        base = {"PATH": f"{bin_dir}:/usr/bin:/bin:", "HOME": str(tmp_path)}
        result = subprocess.run([*argv, build_stamp_command()], capture_output=True, text=True,
                                env={**base, **env}, cwd=here, check=True)
        assert result.stdout.strip(), "a stamp is printed"
        return result.stdout.strip()

    # Every variable that differs from one login to the next (bash lists them as `declare -x`, dash and
    # busybox as `export`), set or not: the same stamp.
    first = stamp(SSH_CONNECTION="10.0.0.1 50000 10.0.0.2 22", XDG_SESSION_ID="4", SSH_CLIENT="10.0.0.1 50000 22")
    assert stamp(SSH_CONNECTION="10.0.0.1 50123 10.0.0.2 22", XDG_SESSION_ID="9", SSH_TTY="/dev/pts/3",
                 _="/usr/bin/bash", SHLVL="2", PWD="/home/pi", OLDPWD="/tmp", MOTD_SHOWN="pam") == first
    assert stamp(PIORCH_SIM_BOARD="pi5") != first
    assert stamp(SSHD_OPTIONS="x") != first, "only the session's own SSH_ variables are left out"
    tool = bin_dir / "rpicam-vid"
    tool.write_text("#!/bin/sh\n# 1.4\n")
    tool.chmod(0o755)
    installed = stamp()
    assert installed != first
    # Rewritten in place, at the same size, within the same minute (a stand-in switched to another
    # release): still another file.
    time.sleep(0.02)
    tool.write_text("#!/bin/sh\n# 1.9\n")
    rewritten = stamp()
    assert rewritten != installed
    # A tool in the current folder, which the trailing empty entry of the search path names.
    (here / "nc").write_text("#!/bin/sh\n")
    assert stamp() != rewritten


# --------------------------------------------------------------------------------------- through the CLI


@pytest.fixture
def pi(tmp_path: Path) -> Iterator[FakePi]:
    """A fake Pi 4 with rpicam-vid (real sshd, camera simulator)."""
    fake = start_fake_pi(tmp_path, ("rpicam-vid",), RPICAM)
    try:
        yield fake
    finally:
        fake.server.stop()


def record(pi: FakePi, tmp_path: Path, name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_piorch({**piorch_env(tmp_path, pi.info.ssh_config), **env}, "record", "--pi", pi.info.alias,
                      "--out", str(tmp_path / name), *SHORT, *args)


def kept_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "cache" / "piorch" / "pis"
    return sorted(folder.glob("*.json")) if folder.exists() else []


@pytest.mark.e2e
def test_the_second_record_asks_the_pi_nothing_before_the_camera(tmp_path: Path, pi: FakePi) -> None:
    first = record(pi, tmp_path, "one")
    assert first.returncode == 0, first.stderr
    asked = len(pi.questions())
    assert asked == 2 and len(kept_files(tmp_path)) == 1  # --version and --help, once
    second = record(pi, tmp_path, "two")
    assert second.returncode == 0, second.stderr
    assert len(pi.questions()) == asked, "the second run must not ask the tool about itself again"
    runs = pi.runs()
    assert len(runs) == 2 and runs[0]["argv"] == runs[1]["argv"]
    assert any(p.suffix == ".h264" and p.stat().st_size > 0 for p in (tmp_path / "two").iterdir())


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["builtin", "nc"])
def test_a_pi_whose_tools_changed_is_probed_again_and_nothing_ran_under_the_old_answer(tmp_path: Path, pi: FakePi,
                                                                                       backend: str) -> None:
    if backend == "nc":
        require_tool("nc")
    # A fixed port: the second try's receiver listens again where the first one did.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    port = ["--port", str(free), "--backend", backend]
    assert record(pi, tmp_path, "one", *port).returncode == 0
    # The Pi now has libcamera-vid only (an older release on its card): the remembered rpicam-vid is gone.
    (pi.info.bin_dir / "rpicam-vid").unlink()
    install_stand_ins(pi.info.bin_dir, ("libcamera-vid",), extra_env=RPICAM)
    second = record(pi, tmp_path, "two", *port)
    assert second.returncode == 0, second.stderr
    runs = pi.runs()
    assert len(runs) == 2, "the guarded start must start nothing on a changed Pi"
    assert str(runs[1]["argv"][0]).endswith("libcamera-vid")  # type: ignore[index]
    assert len(pi.questions()) == 4  # asked again: libcamera-vid's --version and --help
    assert "error" not in second.stderr


@pytest.mark.e2e
def test_a_remembered_answer_is_never_the_reason_for_a_refusal(tmp_path: Path, pi: FakePi) -> None:
    assert record(pi, tmp_path, "one").returncode == 0
    # The kept answer says "no nc" under the Pi's true stamp: the refusal it leads to is checked afresh.
    (path,) = kept_files(tmp_path)
    kept = json.loads(path.read_text())
    kept["probe"] = "\n".join(line for line in kept["probe"].splitlines() if "netcat" not in line.lower()
                              and not line.startswith("piorch-nc-"))
    path.write_text(json.dumps(kept))
    second = record(pi, tmp_path, "two")
    assert second.returncode == 0, second.stderr
    assert "nc is not installed" not in second.stderr and len(pi.runs()) == 2
    assert "piorch-nc-begin" in json.loads(path.read_text())["probe"], "the fresh answer is kept"


@pytest.mark.e2e
def test_remember_pi_false_asks_every_time_and_keeps_nothing(tmp_path: Path, pi: FakePi) -> None:
    for name in ("one", "two"):
        result = record(pi, tmp_path, name, PIORCH_REMEMBER_PI="false")
        assert result.returncode == 0, result.stderr
    assert len(pi.questions()) == 4 and kept_files(tmp_path) == []


@pytest.mark.e2e
def test_the_second_snap_asks_the_pi_nothing_before_the_camera(tmp_path: Path, pi: FakePi) -> None:
    install_stand_ins(pi.info.bin_dir, ("rpicam-still",), extra_env=RPICAM)
    env = piorch_env(tmp_path, pi.info.ssh_config)
    for name in ("one", "two"):
        result = run_piorch(env, "snap", "--pi", pi.info.alias, "--out", str(tmp_path / name), "--port", "0")
        assert result.returncode == 0, result.stderr
        assert [p.suffix for p in (tmp_path / name).iterdir() if p.suffix != ".json"] == [".jpg"]
    assert len(pi.questions()) == 2 and len(pi.runs()) == 2
