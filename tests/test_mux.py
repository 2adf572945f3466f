"""The Pi through the user's open OpenSSH ControlMaster (pi/mux.py): found from the config piorch reads,
used instead of a paramiko connection of piorch's own, and as safe: a killed piorch still frees the camera.

End to end with a real OpenSSH master (`ssh -M -N -f`) in front of the sshd fixture. The config piorch
reads gives the master's ControlPath and a known_hosts file WITHOUT the Pi's key: piorch's own connection
would refuse that Pi (exit 3), so a recording that works went through the master.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.pi.host import CommandResult
from orchestrator.pi.mux import MuxHost, find_master, open_master_host
from orchestrator.pi.ssh import PendingHost
from orchestrator.settings import Backend, CameraSettings, ReceiveSettings, RecordSettings, SshSettings
from orchestrator.sim.stand_in import install_stand_ins
from tests.e2e_helpers import FakePi, manifests, piorch_argv, piorch_env, run_piorch, start_fake_pi, wait_for_bytes
from tests.system_tools import require_tool

SHORT = ("--width", "640", "--height", "480", "--fps", "15", "--container", "h264", "--port", "0")


def write_config(path: Path, alias: str, control: Path, extra: str = "") -> Path:
    path.write_text(f"Host {alias}\n    HostName 127.0.0.1\n    Port 2222\n    User pi\n    ControlPath {control}\n"
                    f"{extra}")
    return path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    """A listening Unix socket standing in for a master's control socket (only its being there matters)."""
    path = tmp_path / "cm.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()
        yield path


# ------------------------------------------------------------------------------------------- finding it


def test_a_master_is_found_from_the_config_and_its_socket(tmp_path: Path, unix_socket: Path) -> None:
    require_tool("ssh")
    config = write_config(tmp_path / "config", "cam1", unix_socket)
    master = find_master(SshSettings(target="cam1", ssh_config=config))
    assert master is not None
    assert (master.hostname, master.port, master.user, master.control_path) == ("127.0.0.1", 2222, "pi", unix_socket)
    assert not master.proxied
    # A target outside that Host block, `use_controlmaster = false`, or no ssh_config at all: none.
    assert find_master(SshSettings(target="cam2", ssh_config=config)) is None
    assert find_master(SshSettings(target="cam1", ssh_config=config, use_controlmaster=False)) is None
    assert find_master(SshSettings(target="cam1", ssh_config=None)) is None


def test_a_connection_begun_early_goes_through_the_master_too(tmp_path: Path, unix_socket: Path) -> None:
    # record's PendingHost asks `ssh -G` on its own thread, while the recorder is imported; what it hands
    # back is the master, as connect_pi would, and no paramiko connection (this "master" is a bare socket).
    require_tool("ssh")
    config = write_config(tmp_path / "config", "cam1", unix_socket)
    stop = threading.Event()
    host = PendingHost(SshSettings(target="cam1", ssh_config=config), stop).result()
    assert isinstance(host, MuxHost)
    assert host.master.control_path == unix_socket
    stop.set()  # its thread still asks this "master" the laptop's address, which it never answers
    host.close()


def test_ctrl_c_cuts_short_the_early_question_of_a_master_that_does_not_answer(tmp_path: Path,
                                                                            unix_socket: Path) -> None:
    """The login's thread asks the laptop's address through the master at once (PendingHost); a master that
    never answers (this one is a bare socket) holds that question up to its timeout, unless the stop event
    (Ctrl+C) is set: then the thread ends within a poll."""
    require_tool("ssh")
    config = write_config(tmp_path / "config", "cam1", unix_socket)
    stop = threading.Event()
    before = set(threading.enumerate())
    host = PendingHost(SshSettings(target="cam1", ssh_config=config), stop).result()
    assert isinstance(host, MuxHost)
    [login] = [thread for thread in set(threading.enumerate()) - before if thread.name == "piorch-pending-cam1"]
    assert login.is_alive()  # still waiting for the master's answer
    stop.set()
    login.join(3)  # the question's own timeout is 5 s (mux.CONFIG_TIMEOUT_S)
    assert not login.is_alive()
    host.close()


def test_a_held_login_thread_still_runs_its_work_when_the_early_question_fails(
        tmp_path: Path, unix_socket: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet's login thread is held for the Pi's recording (continue_with); the early question through the
    master is optional, so a fault in it (here: any exception from the command) must not leave the work
    unrun, and the caller who asks meets the fault itself."""
    require_tool("ssh")
    config = write_config(tmp_path / "config", "cam1", unix_socket)

    def failing_run(self: MuxHost, command: str, timeout: float, stop: threading.Event | None = None) -> CommandResult:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(MuxHost, "run", failing_run)
    pending = PendingHost(SshSettings(target="cam1", ssh_config=config), threading.Event(), hold=True)
    host = pending.result()
    assert isinstance(host, MuxHost)
    ran: list[str] = []
    pending.continue_with(lambda: ran.append(threading.current_thread().name), "piorch-cam1").join(10)
    assert ran == ["piorch-pending-cam1"]
    with pytest.raises(RuntimeError, match="can't start new thread"):
        host.local_address()


def test_no_early_question_where_the_recording_needs_no_address(tmp_path: Path, unix_socket: Path) -> None:
    """`--laptop-ip` with the nc backend needs neither of the link's addresses: the login's thread asks
    nothing through the master (this one would hold the question up to its 5 s timeout) and ends."""
    require_tool("ssh")
    config = write_config(tmp_path / "config", "cam1", unix_socket)
    before = set(threading.enumerate())
    host = PendingHost(SshSettings(target="cam1", ssh_config=config), threading.Event(),
                       learn_addresses=False).result()
    assert isinstance(host, MuxHost)
    for login in [thread for thread in set(threading.enumerate()) - before if thread.name == "piorch-pending-cam1"]:
        login.join(3)
        assert not login.is_alive()
    host.close()


@pytest.mark.parametrize(("laptop_ip", "backend", "allowed_peer", "needed"), [
    (None, Backend.BUILTIN, None, True),          # the default: both addresses
    (None, Backend.NC, None, True),               # where the Pi sends
    ("10.0.0.1", Backend.BUILTIN, None, True),    # the one peer the receiver lets in
    ("10.0.0.1", Backend.BUILTIN, "10.0.0.2", False),
    ("10.0.0.1", Backend.NC, None, False),
])
def test_which_recordings_need_the_links_addresses(laptop_ip: str | None, backend: Backend,
                                                   allowed_peer: str | None, needed: bool) -> None:
    settings = RecordSettings(CameraSettings(), ReceiveSettings(out_dir=Path("out"), backend=backend,
                                                                allowed_peer=allowed_peer), laptop_ip=laptop_ip)
    assert settings.needs_link_addresses is needed


def test_no_socket_no_master(tmp_path: Path) -> None:
    require_tool("ssh")
    config = write_config(tmp_path / "config", "cam1", tmp_path / "not-there.sock")
    assert find_master(SshSettings(target="cam1", ssh_config=config)) is None
    # A plain file where the socket should be is not a master either.
    (tmp_path / "file.sock").write_text("")
    config = write_config(tmp_path / "config2", "cam1", tmp_path / "file.sock")
    assert find_master(SshSettings(target="cam1", ssh_config=config)) is None


def test_a_config_that_names_no_control_path_costs_no_ssh_process(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    config.write_text("Host cam1\n    HostName 10.0.0.2\n    ControlPath none\n")

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("ssh -G was run for a config that names no ControlPath")

    monkeypatch.setattr(subprocess, "run", forbidden)
    assert find_master(SshSettings(target="cam1", ssh_config=config)) is None


def test_a_socket_left_by_a_dead_master_is_no_master(tmp_path: Path) -> None:
    require_tool("ssh")
    left = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(left))  # bound, never listening, closed: the file stays, connections are refused
    config = write_config(tmp_path / "config", "cam1", left)
    assert left.exists() and find_master(SshSettings(target="cam1", ssh_config=config)) is None


def test_a_control_path_in_an_included_file_is_found(tmp_path: Path, unix_socket: Path) -> None:
    require_tool("ssh")
    extra = tmp_path / "conf.d" / "pi.conf"
    extra.parent.mkdir()
    write_config(extra, "cam1", unix_socket)
    config = tmp_path / "config"
    config.write_text(f"Include {tmp_path}/conf.d/*.conf\n")
    master = find_master(SshSettings(target="cam1", ssh_config=config))
    assert master is not None and master.control_path == unix_socket


def test_a_master_that_does_not_answer_is_not_used_when_verified(tmp_path: Path, unix_socket: Path) -> None:
    require_tool("ssh")
    config = write_config(tmp_path / "config", "cam1", unix_socket)
    settings = SshSettings(target="cam1", ssh_config=config, connect_timeout=1.0)
    assert open_master_host(settings) is not None  # found, as its socket is there
    started = time.monotonic()
    assert open_master_host(settings, verify=True) is None  # but no command gets through it
    assert time.monotonic() - started < 10


def test_a_master_through_a_jump_host_has_no_laptop_address_of_its_own(tmp_path: Path, unix_socket: Path) -> None:
    require_tool("ssh")
    config = write_config(tmp_path / "config", "cam1", unix_socket, "    ProxyJump gateway\n")
    master = find_master(SshSettings(target="cam1", ssh_config=config))
    assert master is not None and master.proxied


# ------------------------------------------------------------------------------------- through a master


@pytest.fixture
def pi_behind_master(tmp_path: Path) -> Iterator[tuple[FakePi, Path]]:
    """A fake Pi, an OpenSSH master open to it, and the config piorch reads: the master's socket, and a
    known_hosts file that does not know the Pi."""
    require_tool("ssh")
    pi = start_fake_pi(tmp_path, ("rpicam-vid",), {"PIORCH_SIM_BOARD": "pi4"})
    control = tmp_path / "cm.sock"
    master = ["ssh", "-F", str(pi.info.ssh_config), "-o", f"ControlPath={control}", "-o", "ControlMaster=yes",
              "-o", "ControlPersist=no"]
    try:
        subprocess.run([*master, "-N", "-f", pi.info.alias], check=True, timeout=30, stdin=subprocess.DEVNULL)
        text = pi.info.ssh_config.read_text()
        empty = tmp_path / "empty_known_hosts"
        empty.write_text("")
        text = text.replace("ControlPath none", f"ControlPath {control}")
        text = text.replace(f"UserKnownHostsFile {pi.info.known_hosts}", f"UserKnownHostsFile {empty}")
        config = tmp_path / "piorch_ssh_config"
        config.write_text(text)
        yield pi, config
    finally:
        subprocess.run([*master, "-O", "exit", pi.info.alias], timeout=30, capture_output=True, check=False)
        pi.server.stop()


@pytest.mark.e2e
def test_a_connection_begun_early_learns_the_laptops_address_while_the_caller_imports(
        pi_behind_master: tuple[FakePi, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a master, the laptop's address as the Pi sees it is a command of its own (`echo
    "$SSH_CONNECTION"`): record's PendingHost asks it on its own thread, right after finding the master, so
    that it overlaps the recorder's imports instead of following them."""
    pi, config = pi_behind_master
    asked: list[tuple[str, str]] = []
    real_run = MuxHost.run

    def noting_run(self: MuxHost, command: str, timeout: float, stop: threading.Event | None = None) -> CommandResult:
        asked.append((command, threading.current_thread().name))
        return real_run(self, command, timeout, stop)

    monkeypatch.setattr(MuxHost, "run", noting_run)
    pending = PendingHost(SshSettings(target=pi.info.alias, ssh_config=config))
    host = pending.result()
    assert isinstance(host, MuxHost)
    deadline = time.monotonic() + 20
    while not asked and time.monotonic() < deadline:
        time.sleep(0.01)
    # The caller has not asked anything yet: the command ran on the login's own thread.
    assert asked == [('echo "$SSH_CONNECTION"', f"piorch-pending-{pi.info.alias}")]
    assert (host.local_address(), host.peer_address()) == ("127.0.0.1", "127.0.0.1")
    assert len(asked) == 1  # the caller's questions are answered from that one command
    host.close()


@pytest.mark.e2e
def test_a_question_cut_short_by_ctrl_c_is_asked_again_by_whoever_still_wants_it(
        pi_behind_master: tuple[FakePi, Path]) -> None:
    """Ctrl+C during the early question: it ends at once and keeps nothing, so a later caller gets the real
    address (not "unknown", which would tell the user to pass --laptop-ip instead of exiting 130)."""
    pi, config = pi_behind_master
    host = open_master_host(SshSettings(target=pi.info.alias, ssh_config=config))
    assert host is not None
    stop = threading.Event()
    stop.set()
    host.learn_addresses(stop)
    assert (host.local_address(), host.peer_address()) == ("127.0.0.1", "127.0.0.1")
    host.close()


@pytest.mark.e2e
def test_record_and_snap_go_through_the_users_master(tmp_path: Path, pi_behind_master: tuple[FakePi, Path]) -> None:
    pi, config = pi_behind_master
    env = piorch_env(tmp_path, config)
    result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "2", "--out", str(tmp_path / "v"), *SHORT)
    assert result.returncode == 0, result.stderr
    (manifest,) = manifests(tmp_path / "v")
    assert manifest["status"] == "complete" and int(str(manifest["bytes"])) > 0
    # The clock offset's samples went through the master too: one `ssh -S` command, a line in per sample.
    (session,) = (tmp_path / "v").glob("session-*.json")
    clock = json.loads(session.read_text())
    assert abs(clock["clock_offset_s"]) <= clock["clock_uncertainty_s"] + 0.05
    # Its own connection would have refused the Pi: the known_hosts piorch reads does not know it.
    refused = run_piorch({**env, "PIORCH_USE_CONTROLMASTER": "false"}, "record", "--pi", pi.info.alias,
                         "--seconds", "1", "--out", str(tmp_path / "w"), *SHORT)
    assert refused.returncode == 3 and "host key" in refused.stderr, refused.stderr
    assert len(pi.runs()) == 1
    install_stand_ins(pi.info.bin_dir, ("rpicam-still",), extra_env={"PIORCH_SIM_BOARD": "pi4"})
    snap = run_piorch(env, "snap", "--pi", pi.info.alias, "--out", str(tmp_path / "s"), "--port", "0")
    assert snap.returncode == 0, snap.stderr
    assert [p.suffix for p in (tmp_path / "s").iterdir() if p.suffix != ".json"] == [".jpg"]


@pytest.mark.e2e
def test_a_killed_piorch_frees_the_camera_through_the_master(tmp_path: Path,
                                                             pi_behind_master: tuple[FakePi, Path]) -> None:
    pi, config = pi_behind_master
    out = tmp_path / "recv"
    proc = subprocess.Popen(piorch_argv("record", "--pi", pi.info.alias, "--out", str(out), *SHORT),
                            env=piorch_env(tmp_path, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_bytes(out, 20_000, timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 15  # the watchdog's TERM, at most 3 s to its KILL: well within
        while not pi.camera_free() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pi.camera_free(), "the camera must be freed once piorch and its ssh are gone"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
