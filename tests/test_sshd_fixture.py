"""Tests of the fake-Pi sshd fixture itself, with the real OpenSSH client and with paramiko."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.sshd_server import SshServer, SshServerFactory, SshServerInfo, build_session_env
from tests.system_tools import require_tool

# One ssh round trip on loopback takes ~0.3 s; 20 s only trips on a hung connection.
SSH_TIMEOUT_S = 20.0


def run_ssh(info: SshServerInfo, command: str, *options: str) -> subprocess.CompletedProcess[str]:
    # BatchMode is in the generated config too; repeating it here keeps a broken config from prompting.
    argv = [require_tool("ssh"), "-F", str(info.ssh_config), "-o", "BatchMode=yes", *options, info.alias, command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=SSH_TIMEOUT_S, check=False)


def pids_running(*argv: str) -> list[int]:
    """Pids whose command line is exactly argv (Linux /proc)."""
    wanted = "\0".join(argv) + "\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_text()
        except OSError:
            # Exited during the scan: not running.
            continue
        if cmdline == wanted:
            found.append(int(entry.name))
    return found


def wait_until(condition: str, check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {condition}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("extra_env", "message"),
    [
        ({"PATH": "/x"}, "PATH is set by the fixture"),
        ({"HOME": "/x"}, "HOME is set by the fixture"),
        ({"1BAD": "x"}, "not a valid environment variable name"),
        ({"A B": "x"}, "not a valid environment variable name"),
        ({"OK": "two\nlines"}, "single line"),
    ],
)
def test_session_env_rejects_bad_extra_env(extra_env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_session_env(Path("/b"), Path("/h"), extra_env)


def test_session_env_puts_bin_dir_first() -> None:
    env = build_session_env(Path("/t/bin"), Path("/t/home"), {"PIORCH_SIM_LOG": "/l o g"})
    assert env == {
        "PATH": "/t/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/t/home",
        "PIORCH_SIM_LOG": "/l o g",
    }


@pytest.mark.e2e
def test_command_output_and_exit_status(sshd: SshServerInfo) -> None:
    result = run_ssh(sshd, "echo hello; echo oops >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "hello\n"
    assert "oops" in result.stderr


@pytest.mark.e2e
def test_bin_dir_is_first_on_path(sshd: SshServerInfo) -> None:
    tool = sshd.bin_dir / "mytool"
    tool.write_text('#!/bin/sh\necho mytool ran with "$@"\n')
    tool.chmod(0o755)
    # A stand-in for a system tool proves bin_dir comes *before* /usr/bin, not just somewhere on PATH.
    fake_uname = sshd.bin_dir / "uname"
    fake_uname.write_text("#!/bin/sh\necho fake-uname\n")
    fake_uname.chmod(0o755)

    result = run_ssh(sshd, "command -v mytool; mytool a 'b c'; uname; echo \"$PATH\"")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(tool)
    assert lines[1] == "mytool ran with a b c"
    assert lines[2] == "fake-uname"
    assert lines[3] == f"{sshd.bin_dir}:/usr/local/bin:/usr/bin:/bin"


@pytest.mark.e2e
def test_commands_run_in_scratch_home_with_extra_env(sshd_factory: SshServerFactory, tmp_path: Path) -> None:
    info = sshd_factory(extra_env={"PIORCH_SIM_LOG": str(tmp_path / "sim log")}).info

    result = run_ssh(info, 'echo "$HOME"; pwd; echo "$PIORCH_SIM_LOG"; echo made > made.txt')

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(info.home), str(info.home), str(tmp_path / "sim log")]
    assert (info.home / "made.txt").read_text() == "made\n"


@pytest.mark.e2e
def test_unknown_host_key_is_refused(sshd: SshServerInfo, tmp_path: Path) -> None:
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")

    # Command-line -o wins over the config file, so only the known_hosts file differs.
    result = run_ssh(sshd, "echo should-not-run", "-o", f"UserKnownHostsFile={empty_known_hosts}")

    assert result.returncode == 255
    assert "should-not-run" not in result.stdout
    assert "Host key verification failed" in result.stderr
    # StrictHostKeyChecking=yes must not have learned the key either.
    assert empty_known_hosts.read_text() == ""


@pytest.mark.e2e
def test_known_hosts_matches_reported_fingerprint(sshd: SshServerInfo) -> None:
    result = subprocess.run(
        [require_tool("ssh-keygen"), "-l", "-f", str(sshd.known_hosts)],
        capture_output=True,
        text=True,
        timeout=SSH_TIMEOUT_S,
        check=True,
    )
    assert result.stdout.split()[1] == sshd.host_key_fingerprint
    assert sshd.known_hosts.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")


@pytest.mark.e2e
def test_kill_then_restart_keeps_port_and_host_key(sshd_server: SshServer) -> None:
    info = sshd_server.info
    # A long remote command: kill() must take it down with the "Pi", like a power cut.
    marker = ("sleep", "31.7")
    client = subprocess.Popen(
        [require_tool("ssh"), "-F", str(info.ssh_config), info.alias, " ".join(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until("the remote sleep to start", lambda: pids_running(*marker))

        sshd_server.kill()

        assert client.wait(timeout=SSH_TIMEOUT_S) == 255
        wait_until("the remote sleep to die", lambda: not pids_running(*marker), timeout=5.0)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=SSH_TIMEOUT_S)

    refused = run_ssh(info, "true")
    assert refused.returncode == 255
    assert "Connection refused" in refused.stderr

    assert sshd_server.restart() == info
    # StrictHostKeyChecking=yes with the old known_hosts: success proves the host key is the same.
    again = run_ssh(info, "echo back")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "back\n"


@pytest.mark.e2e
def test_stop_removes_everything(sshd_factory: SshServerFactory) -> None:
    server = sshd_factory()
    info = server.info
    marker = ("sleep", "32.9")
    client = subprocess.Popen(
        [require_tool("ssh"), "-F", str(info.ssh_config), info.alias, " ".join(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until("the remote sleep to start", lambda: pids_running(*marker))
        server.stop()
        # A remote command left running by a test must not outlive the server.
        wait_until("the remote sleep to die", lambda: not pids_running(*marker), timeout=5.0)
        assert client.wait(timeout=SSH_TIMEOUT_S) == 255
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=SSH_TIMEOUT_S)
    assert not info.ssh_config.parent.exists()
    server.stop()  # a second stop (the fixture's teardown) is harmless


@pytest.mark.e2e
def test_factory_servers_are_independent(sshd_factory: SshServerFactory) -> None:
    first = sshd_factory().info
    second = sshd_factory(alias="pi2").info
    assert first.port != second.port
    assert first.host_key_fingerprint != second.host_key_fingerprint

    ok = run_ssh(second, "echo two")
    assert (ok.returncode, ok.stdout) == (0, "two\n")
    # The first server's known_hosts does not vouch for the second server's key.
    crossed = run_ssh(second, "true", "-o", f"UserKnownHostsFile={first.known_hosts}")
    assert crossed.returncode == 255
    assert "Host key verification failed" in crossed.stderr


@pytest.mark.e2e
def test_paramiko_connects_with_known_hosts_and_reject_policy(sshd: SshServerInfo) -> None:
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            sshd.host,
            port=sshd.port,
            username=sshd.user,
            key_filename=str(sshd.user_key),
            # Only the test key: the developer's agent and ~/.ssh keys must not be tried.
            allow_agent=False,
            look_for_keys=False,
            timeout=SSH_TIMEOUT_S,
            banner_timeout=SSH_TIMEOUT_S,
            auth_timeout=SSH_TIMEOUT_S,
        )
        _stdin, stdout, _stderr = client.exec_command("echo hi", timeout=SSH_TIMEOUT_S)
        assert stdout.read() == b"hi\n"
        assert stdout.channel.recv_exit_status() == 0

        # SFTP goes through the same ForceCommand wrapper; files land in the scratch home.
        with client.open_sftp() as sftp, sftp.open("uploaded.txt", "w") as remote:
            remote.write("via sftp\n")
        assert (sshd.home / "uploaded.txt").read_text() == "via sftp\n"
    finally:
        client.close()


@pytest.mark.e2e
def test_paramiko_rejects_unknown_host_key(sshd: SshServerInfo) -> None:
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
            client.connect(
                sshd.host,
                port=sshd.port,
                username=sshd.user,
                key_filename=str(sshd.user_key),
                allow_agent=False,
                look_for_keys=False,
                timeout=SSH_TIMEOUT_S,
            )
    finally:
        client.close()
