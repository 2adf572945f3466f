"""Reaching the Pi over SSH, through the real CLI against real sshds on loopback: Ctrl+C while connecting or
probing, jump hosts (one, two, a loop, a broken one), ProxyCommand, and every failure as one line on stderr.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

import orchestrator.pi.ssh as ssh_module
from orchestrator.errors import ConnectError, Interrupted
from orchestrator.pi.ssh import PendingHost, PromptSocket, SshHost, _deadline_packetizer
from orchestrator.settings import SshSettings
from tests.e2e_helpers import FakePi, piorch_argv, piorch_env, run_piorch, start_fake_pi
from tests.sshd_server import SshServer

pytestmark = pytest.mark.e2e

# Far longer than any test waits: a test that passes cannot have been saved by the connect timeout.
PATIENT = "60"
# Generous: a stopped piorch exits in well under a second; the point is that it does not wait for a timeout.
EXIT_WITHIN_S = 5.0


@pytest.fixture
def fake_pi(tmp_path: Path) -> Iterator[FakePi]:
    from tests.conftest import _require_sshd

    _require_sshd()
    pi = start_fake_pi(tmp_path)
    try:
        yield pi
    finally:
        pi.server.stop()


@pytest.fixture
def jumps() -> Iterator[list[SshServer]]:
    """Two jump hosts, `jump1` and `jump2` (jump1 refuses to forward when a test restarts it so)."""
    from tests.conftest import _require_sshd

    _require_sshd()
    servers = [SshServer(alias="jump1"), SshServer(alias="jump2")]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in reversed(servers):
            server.stop()


def chain_config(tmp_path: Path, servers: list[SshServer], extra: dict[str, str], name: str = "ssh_config") -> Path:
    """One ssh_config and one known_hosts for several servers; `extra`: alias -> one more line for its Host."""
    known = tmp_path / "known_hosts"
    known.write_text("".join(server.info.known_hosts.read_text() for server in servers))
    blocks = []
    for server in servers:
        info = server.info
        block = info.ssh_config.read_text().replace(str(info.known_hosts), str(known))
        if info.alias in extra:
            block = block.replace(f"Host {info.alias}\n", f"Host {info.alias}\n    {extra[info.alias]}\n")
        blocks.append(block)
    path = tmp_path / name
    path.write_text("".join(blocks))
    return path


def env_for(tmp_path: Path, ssh_config: Path, connect_timeout: str = PATIENT) -> dict[str, str]:
    env = piorch_env(tmp_path, ssh_config)
    env["PIORCH_CONNECT_TIMEOUT"] = connect_timeout
    return env


def record_args(tmp_path: Path, pi: str, *more: str) -> list[str]:
    # Through a jump host the laptop's end of the link is not visible: the address is given.
    return ["record", "--pi", pi, "--seconds", "1", "--out", str(tmp_path / "recv"), "--port", "0",
            "--laptop-ip", "127.0.0.1", "--container", "h264", *more]


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "Exception" not in stderr
    return lines[0]


def signal_and_wait(process: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    process.send_signal(sig)
    try:
        _, stderr = process.communicate(timeout=EXIT_WITHIN_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"piorch did not exit within {EXIT_WITHIN_S} s of {sig.name}")
    return process.returncode, stderr


def ssh_connections_to(port: int) -> int:
    """This process's established TCP connections to a loopback port."""
    import psutil  # type: ignore[import-untyped]

    return sum(1 for conn in psutil.Process().net_connections("tcp")
               if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED)


# -- the ssh_config ------------------------------------------------------------------------------------------

def test_an_ssh_config_that_cannot_be_read_is_one_line_exit_3_for_one_pi_and_for_each_of_several(
        tmp_path: Path) -> None:
    # The connection begins on a thread of its own (PendingHost) while the recorder is imported: what
    # reading the config raised is still said in the command's words, once, and nothing is left waiting.
    config = tmp_path / "ssh_config"
    config.write_text("Host cam1 cam2\n    Match bogus\n")
    alone = run_piorch(env_for(tmp_path, config), *record_args(tmp_path, "cam1"), timeout=30)
    assert alone.returncode == 3
    assert one_line(alone.stderr) == (f"piorch: error: cannot read SSH config {config} (Missing parameter to Match "
                                      "'bogus' keyword): fix that file or point ssh_config elsewhere")
    fleet = run_piorch(env_for(tmp_path, config), *record_args(tmp_path, "cam1"), "--pi", "cam2", timeout=30)
    assert fleet.returncode == 1
    assert "Traceback" not in fleet.stderr
    for pi in ("cam1", "cam2"):
        assert f"piorch: {pi}: cannot read SSH config {config}" in fleet.stderr
    assert fleet.stderr.splitlines()[-1] == "piorch: error: 2 of 2 Pis failed: see the lines above"


# -- Ctrl+C ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_pi_never_answers_exits_130_at_once(tmp_path: Path, sig: signal.Signals) -> None:
    # A "Pi" that accepts TCP and never sends the SSH greeting: the kernel completes the handshake for the
    # listen backlog, and the test accepts to know that piorch is waiting for the greeting.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        silent.settimeout(30)
        port = silent.getsockname()[1]
        env = env_for(tmp_path, tmp_path / "no_ssh_config")
        process = subprocess.Popen(piorch_argv(*record_args(tmp_path, f"127.0.0.1:{port}")), env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        connection, _ = silent.accept()
        with connection:
            code, stderr = signal_and_wait(process, sig)
    assert code == 130
    assert one_line(stderr) == (f"piorch: interrupted while connecting to the Pi at 127.0.0.1:{port}: "
                                "nothing was started on the Pi")
    assert not (tmp_path / "recv").exists()


def test_a_stop_while_a_fleet_connects_exits_130_at_once(tmp_path: Path) -> None:
    with socket.socket() as first, socket.socket() as second:
        for silent in (first, second):
            silent.bind(("127.0.0.1", 0))
            silent.listen(1)
            silent.settimeout(30)
        targets = [f"127.0.0.1:{silent.getsockname()[1]}" for silent in (first, second)]
        env = env_for(tmp_path, tmp_path / "no_ssh_config")
        args = ["record", "--pi", targets[0], "--pi", targets[1], "--seconds", "1", "--out", str(tmp_path / "recv")]
        process = subprocess.Popen(piorch_argv(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        accepted = [first.accept()[0], second.accept()[0]]
        code, stderr = signal_and_wait(process, signal.SIGINT)
        for connection in accepted:
            connection.close()
    assert code == 130, stderr
    assert "Traceback" not in stderr and "piorch: error" not in stderr
    for target in targets:
        assert f"[{target}] interrupted: interrupted while connecting to the Pi at {target}" in stderr


def test_a_stop_while_probing_exits_130_with_nothing_started(tmp_path: Path, fake_pi: FakePi) -> None:
    # The probe asks `nc -h`; this nc answers only after a minute, so piorch is caught probing.
    started = fake_pi.info.home / "nc-asked"
    slow_nc = fake_pi.info.bin_dir / "nc"
    slow_nc.write_text(f"#!/bin/sh\ntouch {started}\nexec sleep 60\n")
    slow_nc.chmod(0o755)
    env = env_for(tmp_path, fake_pi.info.ssh_config)
    process = subprocess.Popen(piorch_argv(*record_args(tmp_path, fake_pi.info.alias)), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not started.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "piorch never probed the Pi"
        time.sleep(0.05)
    code, stderr = signal_and_wait(process, signal.SIGINT)
    assert code == 130
    # The plain log said where it stood ("probing the Pi"); the end is one line, and no traceback.
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("piorch:")] == \
        [f"piorch: interrupted while waiting for {fake_pi.info.alias}: nothing was started on the Pi"]
    assert fake_pi.runs() == [] and not fake_pi.cameras_running() and fake_pi.camera_free()


def _silent_pi() -> socket.socket:
    """A "Pi" that accepts TCP and never sends the SSH greeting."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    silent.settimeout(30)
    return silent


def _reads_until_closed(connection: socket.socket, within: float) -> bool:
    """True when the client closed the connection within `within` s (what it sent first is read past)."""
    connection.settimeout(within)
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if connection.recv(1024) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def test_a_pending_connection_logs_in_on_one_thread_and_a_stop_closes_it_at_once() -> None:
    # record's PendingHost logs in on its own thread, with no second thread to watch it: whoever waits in
    # result() sees the stop, closes the half-open connection (which ends the handshake's wait) and says so.
    with _silent_pi() as silent:
        port = silent.getsockname()[1]
        stop = threading.Event()
        settings = SshSettings(target=f"127.0.0.1:{port}", ssh_config=None, connect_timeout=float(PATIENT))
        before = set(threading.enumerate())
        pending = PendingHost(settings, stop)
        connection, _ = silent.accept()
        with connection:
            # Its one thread beside paramiko's transport, and no other (open_host's would be `piorch-connect-...`).
            started = set(threading.enumerate()) - before
            assert [thread.name for thread in started if not isinstance(thread, paramiko.Transport)] == \
                [f"piorch-pending-127.0.0.1:{port}"]
            waiting: list[BaseException] = []

            def wait() -> None:
                try:
                    pending.result()
                except BaseException as exc:
                    waiting.append(exc)

            waiter = threading.Thread(target=wait)
            waiter.start()
            stop.set()
            waiter.join(EXIT_WITHIN_S)
            assert not waiter.is_alive()
            assert len(waiting) == 1 and isinstance(waiting[0], Interrupted)
            assert waiting[0].message == f"interrupted while connecting to the Pi at 127.0.0.1:{port}"
            assert _reads_until_closed(connection, EXIT_WITHIN_S)
    assert f"piorch-pending-127.0.0.1:{port}" not in [thread.name for thread in threading.enumerate()]


def test_an_abandoned_pending_connection_is_closed_at_once_without_a_stop_event() -> None:
    with _silent_pi() as silent:
        port = silent.getsockname()[1]
        settings = SshSettings(target=f"127.0.0.1:{port}", ssh_config=None, connect_timeout=float(PATIENT))
        pending = PendingHost(settings)
        connection, _ = silent.accept()
        with connection:
            started = time.monotonic()
            pending.abandon()
            assert time.monotonic() - started < EXIT_WITHIN_S
            assert _reads_until_closed(connection, EXIT_WITHIN_S)
    assert f"piorch-pending-127.0.0.1:{port}" not in [thread.name for thread in threading.enumerate()]


def _take(pending: PendingHost, name: str) -> tuple[threading.Thread, threading.Event, list[object]]:
    """continue_with: work that notes its thread and what result() gave (the host's answer) or raised."""
    seen: list[object] = []
    done = threading.Event()

    def then() -> None:
        seen.append(threading.current_thread())
        try:
            host = pending.result()
            seen.append(host.run("echo logged-in", timeout=20).stdout)
            host.close()
        except BaseException as exc:
            seen.append(exc)
        done.set()

    return pending.continue_with(then, name), done, seen


def test_a_fleets_pi_records_on_the_thread_that_logged_in_to_it(tmp_path: Path, fake_pi: FakePi) -> None:
    # The login waits (in its ProxyCommand) until the work is given: it is sure to be under way then.
    go = tmp_path / "go"
    gate = f"ProxyCommand sh -c 'while [ ! -e {go} ]; do sleep 0.02; done; exec nc %h %p'"
    config = chain_config(tmp_path, [fake_pi.server], {fake_pi.info.alias: gate})
    settings = SshSettings(target=fake_pi.info.alias, ssh_config=config, connect_timeout=float(PATIENT))
    before = set(threading.enumerate())
    pending = PendingHost(settings, threading.Event())
    thread, done, seen = _take(pending, "piorch-testpi")
    go.touch()
    assert done.wait(float(PATIENT)), "the work never ran"
    assert thread.name == f"piorch-pending-{fake_pi.info.alias}" and seen == [thread, "logged-in"]
    thread.join(EXIT_WITHIN_S)
    assert not [t for t in set(threading.enumerate()) - before if not isinstance(t, paramiko.Transport)], \
        "no thread besides the login's"


def test_a_login_starts_no_thread_but_paramikos_transport(tmp_path: Path, fake_pi: FakePi,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # paramiko's own Packetizer starts a threading.Timer at each handshake, to set a flag its reads look at:
    # piorch's keeps the deadline as a time (pi/ssh._deadline_packetizer), so a fleet's start has one thread a
    # Pi fewer to start, wake and end.
    started: list[threading.Thread] = []
    start = threading.Thread.start

    def noted(self: threading.Thread) -> None:
        started.append(self)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", noted)
    config = chain_config(tmp_path, [fake_pi.server], {})
    host = PendingHost(SshSettings(target=fake_pi.info.alias, ssh_config=config, connect_timeout=float(PATIENT)),
                       threading.Event()).result()
    try:
        assert host.run("echo ok", timeout=float(PATIENT)).stdout.strip() == "ok"
    finally:
        host.close()
    assert not [t for t in started if isinstance(t, threading.Timer)]
    assert sorted(type(t).__name__ for t in started) == ["Thread", "Transport"]


def test_a_second_login_in_the_process_reads_no_key_file(tmp_path: Path, fake_pi: FakePi,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # A fleet's Pis log in with the user's one key: paramiko's tries of the file (as RSA, ECDSA, then
    # Ed25519) are made once a process (pi/keys.py), and the second login still gets in with the key.
    reads: list[str] = []
    for klass in (paramiko.RSAKey, paramiko.ECDSAKey, paramiko.Ed25519Key):
        own = klass.from_private_key_file.__func__

        def counted(cls: type, *args: object, _own: object = own, **kwargs: object) -> object:
            reads.append(cls.__name__)
            return _own(cls, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(klass, "from_private_key_file", classmethod(counted))
    config = chain_config(tmp_path, [fake_pi.server], {})
    settings = SshSettings(target=fake_pi.info.alias, ssh_config=config, connect_timeout=float(PATIENT))
    for login in range(2):
        host = SshHost.connect(settings)
        try:
            assert host.run("echo ok", timeout=float(PATIENT)).stdout.strip() == "ok"
        finally:
            host.close()
        if login == 0:
            assert reads == ["RSAKey", "ECDSAKey", "Ed25519Key"], "the fixture's key is an Ed25519 one"
    assert reads == ["RSAKey", "ECDSAKey", "Ed25519Key"]


def test_a_quiet_connection_wakes_paramikos_thread_about_once_a_second_and_keepalives_still_go(
        tmp_path: Path, fake_pi: FakePi, monkeypatch: pytest.MonkeyPatch) -> None:
    # paramiko's transport thread read with a 0.1 s timeout: 10 wake-ups a second a Pi while it was quiet.
    # Once logged in it waits up to IDLE_WAKE_S; the keepalive (checked at each wake-up) still goes out.
    reads: list[float] = []
    own_recv = PromptSocket.recv
    watched: list[object] = []

    def counted(self: PromptSocket, *args: Any) -> bytes:
        if self in watched:  # this connection's reads only: another one open in the process has its own
            reads.append(time.monotonic())
        return own_recv(self, *args)

    monkeypatch.setattr(PromptSocket, "recv", counted)
    monkeypatch.setattr(ssh_module, "KEEPALIVE_S", 1)
    config = chain_config(tmp_path, [fake_pi.server], {})
    host = SshHost.connect(SshSettings(target=fake_pi.info.alias, ssh_config=config, connect_timeout=float(PATIENT)))
    try:
        transport = host._client.get_transport()
        assert transport is not None and transport.sock.gettimeout() == ssh_module.IDLE_WAKE_S
        watched.append(transport.sock)
        keepalives: list[str] = []
        own_request = transport.global_request
        transport.global_request = lambda kind, *args, **kwargs: (  # type: ignore[method-assign]
            keepalives.append(kind) or own_request(kind, *args, **kwargs))
        quiet_s = 3.0
        time.sleep(quiet_s)
        # A wake-up a second (a keepalive asks for no answer): ~3, with a margin; 0.1 s made ~30.
        assert len(reads) <= 2 * quiet_s / ssh_module.IDLE_WAKE_S + 2, reads
        assert keepalives and set(keepalives) == {"keepalive@lag.net"}
        assert host.run("echo ok", timeout=float(PATIENT)).stdout.strip() == "ok"
    finally:
        host.close()


def test_a_close_ends_paramikos_thread_at_once_however_long_it_waits_for_the_pi(
        tmp_path: Path, fake_pi: FakePi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh_module, "IDLE_WAKE_S", 600.0)
    config = chain_config(tmp_path, [fake_pi.server], {})
    host = SshHost.connect(SshSettings(target=fake_pi.info.alias, ssh_config=config, connect_timeout=float(PATIENT)))
    transport = host._client.get_transport()
    assert transport is not None
    assert host.run("echo ok", timeout=float(PATIENT)).stdout.strip() == "ok"
    time.sleep(0.3)  # the thread is waiting for the Pi's next message
    host.close()
    transport.join(EXIT_WITHIN_S)
    assert not transport.is_alive(), "the close woke the read (a shutdown), not the end of its wait"


def test_the_handshake_deadline_is_read_from_the_clock_as_paramikos_timer_flag_was() -> None:
    left, right = socket.socketpair()
    with left, right:
        packetizer = _deadline_packetizer()(left)
        assert not packetizer.handshake_timed_out()  # no handshake started: never timed out
        packetizer.start_handshake(0.05)
        assert not packetizer.handshake_timed_out()
        time.sleep(0.06)  # past the deadline (what is checked is the state after it, not how long anything took)
        assert packetizer.handshake_timed_out()
        packetizer.complete_handshake()
        assert not packetizer.handshake_timed_out()
        packetizer.start_handshake(0.0)  # a later key exchange does not start the clock again
        assert not packetizer.handshake_timed_out()


def test_a_held_login_thread_waits_for_its_work_after_logging_in(tmp_path: Path, fake_pi: FakePi) -> None:
    # hold=True (what record does for a fleet): the login is over before the work is given (the caller
    # imports the recorder meanwhile), and the work still runs on the login's thread.
    config = chain_config(tmp_path, [fake_pi.server], {})
    settings = SshSettings(target=fake_pi.info.alias, ssh_config=config, connect_timeout=float(PATIENT))
    pending = PendingHost(settings, threading.Event(), hold=True)
    pending.result()  # logged in
    thread, done, seen = _take(pending, "piorch-testpi")
    assert done.wait(float(PATIENT)), "the work never ran"
    assert thread.name == f"piorch-pending-{fake_pi.info.alias}" and seen == [thread, "logged-in"]
    thread.join(EXIT_WITHIN_S)
    assert not thread.is_alive()


def test_an_abandoned_held_login_thread_ends_and_closes_its_host(tmp_path: Path, fake_pi: FakePi) -> None:
    config = chain_config(tmp_path, [fake_pi.server], {})
    settings = SshSettings(target=fake_pi.info.alias, ssh_config=config, connect_timeout=float(PATIENT))
    pending = PendingHost(settings, threading.Event(), hold=True)
    host = pending.result()
    pending.abandon()
    assert f"piorch-pending-{fake_pi.info.alias}" not in [t.name for t in threading.enumerate()]
    with pytest.raises(ConnectError, match="closed"):
        host.start("true")


def test_work_given_after_the_login_ended_gets_a_thread_of_its_own_and_the_logins_failure() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nobody listens: the login fails at once
    settings = SshSettings(target=f"127.0.0.1:{port}", ssh_config=None, connect_timeout=float(PATIENT))
    pending = PendingHost(settings, threading.Event())
    deadline = time.monotonic() + EXIT_WITHIN_S
    while any(t.name == f"piorch-pending-127.0.0.1:{port}" for t in threading.enumerate()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    thread, done, seen = _take(pending, "piorch-late")
    assert done.wait(EXIT_WITHIN_S)
    assert thread.name == "piorch-late" and seen[0] is thread
    assert isinstance(seen[1], ConnectError) and "refused" in seen[1].message


def test_a_stop_cuts_a_login_whose_work_waits_on_its_thread() -> None:
    with _silent_pi() as silent:
        port = silent.getsockname()[1]
        stop = threading.Event()
        settings = SshSettings(target=f"127.0.0.1:{port}", ssh_config=None, connect_timeout=float(PATIENT))
        pending = PendingHost(settings, stop)
        connection, _ = silent.accept()  # the login waits for a greeting that never comes
        with connection:
            thread, done, seen = _take(pending, "piorch-unused")
            stop.set()
            pending.interrupt_login()  # what run_fleet's on_stop does: nobody waits in result()
            assert done.wait(EXIT_WITHIN_S), "the login was not cut short"
            assert thread.name == f"piorch-pending-127.0.0.1:{port}" and seen[0] is thread
            assert isinstance(seen[1], Interrupted)
            assert seen[1].message == f"interrupted while connecting to the Pi at 127.0.0.1:{port}"
            assert _reads_until_closed(connection, EXIT_WITHIN_S)


# -- one line for every failure -------------------------------------------------------------------------------

def test_a_pi_that_never_greets_is_one_line_exit_3(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        result = run_piorch(env_for(tmp_path, tmp_path / "no_ssh_config", connect_timeout="1"),
                            *record_args(tmp_path, f"127.0.0.1:{port}"))
    assert result.returncode == 3
    # paramiko's own "Exception (client): Error reading SSH protocol banner" and its traceback stay unsaid.
    assert one_line(result.stderr) == (f"piorch: error: cannot reach the Pi at 127.0.0.1:{port} (no SSH greeting "
                                       "within 1 s): check the cable and address; `piorch setup-link --check` "
                                       "tests the link")


def test_two_jump_hosts_are_passed_in_order(tmp_path: Path, fake_pi: FakePi, jumps: list[SshServer]) -> None:
    config = chain_config(tmp_path, [*jumps, fake_pi.server], {"testpi": "ProxyJump jump1,jump2"})
    result = run_piorch(env_for(tmp_path, config), *record_args(tmp_path, "testpi"))
    assert result.returncode == 0, result.stderr
    (run,) = fake_pi.runs()
    (video,) = (tmp_path / "recv").glob("*.h264")
    assert isinstance(run["bytes"], int) and run["bytes"] > 0
    assert video.stat().st_size == run["bytes"]
    for jump in jumps:
        assert "Accepted publickey" in jump.log_path.read_text()

    # The second hop is reached through the first: when jump1 may not forward, jump2 is never reached.
    logins_on_jump2 = jumps[1].log_path.read_text().count("Accepted publickey")
    with SshServer(alias="jump1", sshd_options={"AllowTcpForwarding": "no"}) as refusing:
        config = chain_config(tmp_path, [refusing, jumps[1], fake_pi.server], {"testpi": "ProxyJump jump1,jump2"})
        result = run_piorch(env_for(tmp_path, config), *record_args(tmp_path, "testpi"))
        assert result.returncode == 3
        assert one_line(result.stderr).startswith(
            f"piorch: error: the jump host jump1 at {refusing.info.user}@127.0.0.1:{refusing.info.port} cannot "
            "connect on to the jump host jump2 at ")
        assert "AllowTcpForwarding" in result.stderr
    assert jumps[1].log_path.read_text().count("Accepted publickey") == logins_on_jump2
    assert len(fake_pi.runs()) == 1


@pytest.mark.parametrize(("down", "said"), [
    (0, "piorch: error: cannot reach the jump host jump1 at {user}@127.0.0.1:{port1} (Connection refused): "),
    (1, "piorch: error: the jump host jump1 at {user}@127.0.0.1:{port1} cannot connect on to the jump host jump2 "
        "at {user}@127.0.0.1:{port2} (Connect failed): "),
])
def test_a_jump_host_that_is_down_is_one_line_exit_3(tmp_path: Path, fake_pi: FakePi, jumps: list[SshServer],
                                                      down: int, said: str) -> None:
    config = chain_config(tmp_path, [*jumps, fake_pi.server], {"testpi": "ProxyJump jump1,jump2"})
    user, port1, port2 = jumps[0].info.user, jumps[0].info.port, jumps[1].info.port
    jumps[down].kill()
    result = run_piorch(env_for(tmp_path, config), *record_args(tmp_path, "testpi"))
    assert result.returncode == 3
    assert one_line(result.stderr).startswith(said.format(user=user, port1=port1, port2=port2))
    assert fake_pi.runs() == []


def test_a_proxyjump_loop_is_refused_clearly(tmp_path: Path, fake_pi: FakePi, jumps: list[SshServer]) -> None:
    # `jump1` jumps through itself: OpenSSH would recurse until it gives up.
    config = chain_config(tmp_path, [jumps[0], fake_pi.server], {"testpi": "ProxyJump jump1",
                                                                  "jump1": "ProxyJump jump1"})
    result = run_piorch(env_for(tmp_path, config), *record_args(tmp_path, "testpi"))
    assert result.returncode == 3
    assert one_line(result.stderr).startswith("piorch: error: more than 8 jump hosts on the way to jump1: ")
    assert "Accepted publickey" not in jumps[0].log_path.read_text()


def test_proxycommand_works_and_its_failure_is_told_in_its_words(tmp_path: Path, fake_pi: FakePi,
                                                                 jumps: list[SshServer]) -> None:
    # The usual ProxyCommand: OpenSSH's own client opens the stream through a jump host.
    config = chain_config(tmp_path, [jumps[0], fake_pi.server], {})
    proxied = chain_config(tmp_path, [jumps[0], fake_pi.server],
                           {"testpi": f"ProxyCommand ssh -F {config} -W %h:%p jump1"}, name="proxied_config")
    result = run_piorch(env_for(tmp_path, proxied), *record_args(tmp_path, "testpi"))
    assert result.returncode == 0, result.stderr
    assert len(fake_pi.runs()) == 1

    broken = chain_config(tmp_path, [fake_pi.server], {"testpi": "ProxyCommand sh -c 'echo no route to the pi >&2; "
                                                                  "exit 7'"})
    result = run_piorch(env_for(tmp_path, broken), *record_args(tmp_path, "testpi"))
    assert result.returncode == 3
    assert one_line(result.stderr).startswith(
        f"piorch: error: cannot reach the Pi at {fake_pi.info.user}@127.0.0.1:{fake_pi.info.port}: its ProxyCommand "
        "ended (exit status 7: no route to the pi): check ProxyCommand")


def test_jump_connections_are_closed_after_a_failure_and_with_the_host(tmp_path: Path, fake_pi: FakePi,
                                                                       jumps: list[SshServer]) -> None:
    jump_port = jumps[0].info.port
    config = chain_config(tmp_path, [jumps[0], fake_pi.server], {"testpi": "ProxyJump jump1"})
    settings = SshSettings(target="testpi", ssh_config=config, connect_timeout=float(PATIENT))
    host = SshHost.connect(settings)
    try:
        assert host.run("echo through", timeout=20).stdout == "through"
        assert ssh_connections_to(jump_port) == 1
    finally:
        host.close()
    assert ssh_connections_to(jump_port) == 0

    fake_pi.server.kill()  # the Pi is gone; the jump host answers
    with pytest.raises(ConnectError, match="cannot connect on to the Pi at"):
        SshHost.connect(settings)
    assert ssh_connections_to(jump_port) == 0


def test_trust_reaches_a_pi_behind_jump_hosts_the_way_record_does(tmp_path: Path, fake_pi: FakePi,
                                                                    jumps: list[SshServer]) -> None:
    config = chain_config(tmp_path, [*jumps, fake_pi.server], {"testpi": "ProxyJump jump1,jump2"})
    known = tmp_path / "known_hosts"
    pi_line = fake_pi.info.known_hosts.read_text()
    known.write_text(known.read_text().replace(pi_line, ""))  # the jump hosts are known, the Pi is not
    logins = [jump.log_path.read_text().count("Accepted publickey") for jump in jumps]
    env = env_for(tmp_path, config)
    result = run_piorch(env, "trust", "testpi", "--yes")
    assert result.returncode == 0, result.stderr
    assert fake_pi.info.host_key_fingerprint in result.stdout and "recorded in" in result.stdout
    # The key was fetched through both hops (each logged in to once more), and record then logs in.
    assert [jump.log_path.read_text().count("Accepted publickey") for jump in jumps] == [n + 1 for n in logins]
    result = run_piorch(env, *record_args(tmp_path, "testpi"))
    assert result.returncode == 0, result.stderr


def test_trust_through_a_proxycommand_that_fails_is_one_line(tmp_path: Path, fake_pi: FakePi) -> None:
    broken = chain_config(tmp_path, [fake_pi.server], {"testpi": "ProxyCommand sh -c 'echo nope >&2; exit 3'"})
    result = run_piorch(env_for(tmp_path, broken), "trust", "testpi", "--yes")
    assert result.returncode == 3, result.stderr
    assert one_line(result.stderr).startswith(
        f"piorch: error: cannot reach {fake_pi.info.user}@127.0.0.1:{fake_pi.info.port}: its ProxyCommand ended "
        "(exit status 3: nope)"), result.stderr


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")
def test_the_connection_sends_and_acknowledges_each_message_at_once(tmp_path: Path, fake_pi: FakePi,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # No SSH message waits ~40 ms for a delayed acknowledgement: Nagle is off, and every read asks for the
    # quick acknowledgement again (Linux clears it by itself). The time it saves is benchmarks/startup.py's
    # to show; here, that the options are really set on the connection a login and a command go over.
    asked: list[tuple[int, int, int]] = []
    setsockopt = PromptSocket.setsockopt

    def noting(sock: PromptSocket, level: int, option: int, value: int) -> None:
        asked.append((level, option, value))
        setsockopt(sock, level, option, value)

    monkeypatch.setattr(PromptSocket, "setsockopt", noting)
    config = chain_config(tmp_path, [fake_pi.server], {})
    host = SshHost.connect(SshSettings(target="testpi", ssh_config=config, connect_timeout=float(PATIENT)))
    try:
        transport = host._client.get_transport()
        assert transport is not None and isinstance(transport.sock, PromptSocket)
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        logged_in = asked.count((socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1))
        assert logged_in >= 4, "the key exchange and the login were read with quick acknowledgements"
        assert host.run("echo prompt", timeout=20).stdout == "prompt"
        assert asked.count((socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)) > logged_in
    finally:
        host.close()


# -- known_hosts ----------------------------------------------------------------------------------------------

def _hashed_name(name: str) -> str:
    import base64
    import hashlib
    import hmac
    import os

    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def test_a_hashed_known_hosts_among_many_hosts_with_openssh_markers_records(tmp_path: Path, fake_pi: FakePi) -> None:
    # As Debian and Ubuntu write it (HashKnownHosts yes), with a hundred other hosts and an OpenSSH
    # @cert-authority line that paramiko's own HostKeys.load raises on.
    name, kind, blob = fake_pi.info.known_hosts.read_text().split()[:3]
    others = [f"{_hashed_name(f'host{n}.example')} {kind} {blob}\n" for n in range(100)]
    others.insert(50, f"{_hashed_name(name)} {kind} {blob}\n")
    others.insert(10, f"@cert-authority *.example {kind} {blob}\n")
    fake_pi.info.known_hosts.write_text("".join(others))
    result = run_piorch(env_for(tmp_path, fake_pi.info.ssh_config), *record_args(tmp_path, "testpi"))
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "recv").glob("*.h264"))) == 1


@pytest.mark.parametrize("pattern", ["exact", "wildcard", "hashed"])
def test_a_host_key_marked_revoked_is_refused_before_the_login(tmp_path: Path, fake_pi: FakePi,
                                                               pattern: str) -> None:
    name, kind, blob = fake_pi.info.known_hosts.read_text().split()[:3]
    marked = {"exact": name, "wildcard": "[127.0.0.*]:*", "hashed": _hashed_name(name)}[pattern]
    # The key is recorded as well: @revoked wins, as in OpenSSH.
    fake_pi.info.known_hosts.write_text(f"{name} {kind} {blob}\n@revoked {marked} {kind} {blob}\n")
    env = env_for(tmp_path, fake_pi.info.ssh_config)
    for args in (record_args(tmp_path, "testpi"), record_args(tmp_path, "testpi", "--accept-new-host-key"),
                 ["trust", "testpi", "--yes"]):
        result = run_piorch(env, *args)
        assert result.returncode != 0
        line = one_line(result.stderr)
        assert f"{fake_pi.info.host_key_fingerprint}) is marked @revoked in {fake_pi.info.known_hosts}" in line, line
        assert "remove that @revoked line" in line
    doctor = run_piorch(env, "doctor", "--pi", "testpi")
    assert doctor.returncode != 0
    assert "is marked @revoked" in doctor.stdout + doctor.stderr
    assert "Accepted publickey" not in fake_pi.server.log_path.read_text()
    assert fake_pi.info.known_hosts.read_text().count(blob) == 2  # nothing recorded
    assert fake_pi.runs() == []


def test_a_revoked_line_for_another_host_or_a_negated_pattern_changes_nothing(tmp_path: Path,
                                                                             fake_pi: FakePi) -> None:
    name, kind, blob = fake_pi.info.known_hosts.read_text().split()[:3]
    fake_pi.info.known_hosts.write_text(f"{name} {kind} {blob}\n@revoked other.example {kind} {blob}\n"
                                        f"@revoked [127.0.0.*]:*,!{name} {kind} {blob}\n")
    result = run_piorch(env_for(tmp_path, fake_pi.info.ssh_config), *record_args(tmp_path, "testpi"))
    assert result.returncode == 0, result.stderr


def _cipher_of(host: SshHost) -> tuple[str, str]:
    transport = host._client.get_transport()
    assert transport is not None
    return transport.local_cipher, transport.remote_cipher


# paramiko has AES-GCM since 3.5 (pyproject allows 3.4, where the login keeps paramiko's own order).
PARAMIKO_GCM = "aes128-gcm@openssh.com" in paramiko.Transport._cipher_info


@pytest.mark.parametrize("offered, agreed", [
    (None, "aes128-gcm@openssh.com" if PARAMIKO_GCM else "aes128-ctr"),  # AES-GCM: one call a packet
    ("aes256-gcm@openssh.com,aes128-ctr", "aes256-gcm@openssh.com" if PARAMIKO_GCM else "aes128-ctr"),
    ("aes128-ctr,aes256-ctr", "aes128-ctr"),  # a server without GCM (dropbear): paramiko's next choice
])
def test_the_login_asks_for_aes_gcm_first_and_takes_what_the_server_has(tmp_path: Path, offered: str | None,
                                                                       agreed: str) -> None:
    with SshServer(sshd_options={"Ciphers": offered} if offered else None) as server:
        config = chain_config(tmp_path, [server], {})
        host = PendingHost(SshSettings(target=server.info.alias, ssh_config=config, connect_timeout=float(PATIENT)),
                           threading.Event()).result()
        try:
            assert isinstance(host, SshHost)
            assert _cipher_of(host) == (agreed, agreed)
            assert host.run("echo ok", timeout=float(PATIENT)).stdout.strip() == "ok"
        finally:
            host.close()


def test_aes_gcm_goes_first_only_where_paramiko_has_it_and_a_disabled_cipher_stays_out() -> None:
    from orchestrator.pi.ssh import AEAD_CIPHERS, new_transport, prefer_aead

    assert prefer_aead(("aes128-ctr", "aes256-ctr")) == ("aes128-ctr", "aes256-ctr")  # paramiko 3.4's kind
    assert prefer_aead(("aes128-ctr", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com")) == \
        ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")
    left, right = socket.socketpair()
    with left, right:
        transport = new_transport(left, disabled_algorithms={"ciphers": [AEAD_CIPHERS[0]]})
        offered = tuple(transport.preferred_ciphers)
        assert AEAD_CIPHERS[0] not in offered
        if PARAMIKO_GCM:
            assert offered[0] == AEAD_CIPHERS[1]
