"""The iproute2 path for real, inside network namespaces this test creates and deletes.

Two namespaces joined by a veth pair: "laptop" (interface `pl0`) and "pi" (its end is `eth0` with
192.168.50.2/24 and an SSH banner on port 22). piorch runs inside the laptop namespace (`ip netns exec`),
so psutil, `ip` and the SSH probe all see that namespace only. The machine's own interfaces are never
touched: every test compares them before and after. Needs root (creating namespaces); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from orchestrator.link.laptop import apply_laptop_plan, gather_routes
from orchestrator.link.plan import Iface, IfaceKind, build_iproute2_setup, build_iproute2_undo
from tests.e2e_helpers import piorch_argv, piorch_env
from tests.system_tools import cannot_run, require_tool

IFACE = "pl0"
# The banner server stops by itself after this long, should the test's own cleanup never run.
BANNER_LIFETIME_S = 120
BANNER_SERVER = f"""
import socket, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 22))
server.listen(8)
server.settimeout(1.0)
print("ready", flush=True)
deadline = time.monotonic() + {BANNER_LIFETIME_S}
while time.monotonic() < deadline:
    try:
        conn, _ = server.accept()
    except socket.timeout:
        continue
    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\\r\\n")
    conn.close()
"""


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10).stdout


def addresses(namespace: str, iface: str) -> list[str]:
    (link,) = json.loads(ip("-n", namespace, "-j", "addr", "show", "dev", iface))
    return [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a["family"] == "inet"]


def is_up(namespace: str, iface: str) -> bool:
    (link,) = json.loads(ip("-n", namespace, "-j", "link", "show", "dev", iface))
    return "UP" in link["flags"]


def host_addresses() -> str:
    return ip("-j", "addr", "show")


@dataclass(frozen=True)
class Namespaces:
    laptop: str
    pi: str


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    require_tool("ip")
    tag = uuid.uuid4().hex[:8]
    spaces = Namespaces(f"piorch-{tag}-laptop", f"piorch-{tag}-pi")
    host_before = host_addresses()
    try:
        ip("netns", "add", spaces.laptop)
    except subprocess.CalledProcessError as exc:
        cannot_run(f"cannot create a network namespace here ({exc.stderr.strip()})")
    try:
        ip("netns", "add", spaces.pi)
        # Created inside the laptop namespace, the peer moved straight into the Pi's: no name ever exists
        # in the machine's own namespace.
        ip("-n", spaces.laptop, "link", "add", IFACE, "type", "veth", "peer", "name", "eth0", "netns", spaces.pi)
        for space in (spaces.laptop, spaces.pi):
            ip("-n", space, "link", "set", "lo", "up")
        ip("-n", spaces.pi, "addr", "add", "192.168.50.2/24", "dev", "eth0")
        ip("-n", spaces.pi, "link", "set", "eth0", "up")
        yield spaces
    finally:
        for space in (spaces.pi, spaces.laptop):
            subprocess.run(["ip", "netns", "del", space], capture_output=True, timeout=10)
    assert host_addresses() == host_before


@pytest.fixture
def pi_ssh(netns: Namespaces) -> Iterator[None]:
    """Something that answers SSH's banner at 192.168.50.2:22 inside the Pi namespace."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns.pi, sys.executable, "-c", BANNER_SERVER],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        # Python starts in well under a second; 15 s covers a loaded CI machine.
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready and proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_in(namespace: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", namespace, *piorch_argv("setup-link", *args)], env=env,
                          capture_output=True, text=True, timeout=60)


# --laptop-tool iproute2 always: inside a namespace, nmcli would talk to the machine's own NetworkManager.
LINK = ("--skip-pi", "--iface", IFACE, "--laptop-tool", "iproute2")


def test_setup_check_second_run_and_undo(tmp_path: Path, netns: Namespaces, pi_ssh: None) -> None:
    env = piorch_env(tmp_path, tmp_path / "no-ssh-config")
    config = tmp_path / "no-user-config.toml"
    assert addresses(netns.laptop, IFACE) == [] and not is_up(netns.laptop, IFACE)

    first = run_in(netns.laptop, env, *LINK)
    assert first.returncode == 0, first.stderr
    assert addresses(netns.laptop, IFACE) == ["192.168.50.1/24"] and is_up(netns.laptop, IFACE)
    assert "$ ip addr add 192.168.50.1/24 dev pl0\n$ ip link set pl0 up\n" in first.stdout
    assert "does not survive a reboot" in first.stdout
    assert "ok   Pi answers SSH: 192.168.50.2:22 answers (SSH-2.0-OpenSSH_9.2p1 Debian-2)" in first.stdout
    saved = config.read_text()
    assert saved.endswith('pi = "pi@192.168.50.2"\nlaptop_ip = "192.168.50.1"\npi_ip = "192.168.50.2"\n'
                          'link_prefix = 24\niface = "pl0"\nport = 10401\n')

    second = run_in(netns.laptop, env, *LINK)
    assert second.returncode == 0, second.stderr
    assert "laptop (iproute2): nothing to do" in second.stdout and "$ ip" not in second.stdout
    assert addresses(netns.laptop, IFACE) == ["192.168.50.1/24"] and config.read_text() == saved

    check = run_in(netns.laptop, env, "--check")
    assert check.returncode == 0, check.stderr
    lines = check.stdout.splitlines()
    # The carrier hint may or may not be there yet: the kernel reports it a moment after the link is set up.
    assert lines[0].startswith("ok   laptop address: 192.168.50.1/24 is up on pl0")
    assert lines[1:] == [
        "ok   subnet unique: 192.168.50.0/24 is used by the link only",
        "ok   Pi answers SSH: 192.168.50.2:22 answers (SSH-2.0-OpenSSH_9.2p1 Debian-2)",
    ]

    undo = run_in(netns.laptop, env, "--undo", *LINK)
    assert undo.returncode == 0, undo.stderr
    assert "$ ip addr del 192.168.50.1/24 dev pl0" in undo.stdout
    assert addresses(netns.laptop, IFACE) == []
    again = run_in(netns.laptop, env, "--undo", *LINK)
    assert again.returncode == 0 and "nothing to remove" in again.stdout

    after = run_in(netns.laptop, env, "--check")
    assert after.returncode == 6
    assert "FAIL laptop address: 192.168.50.1/24 is on no interface" in after.stdout
    assert after.stderr.startswith("piorch: error: link check failed (laptop address")


def test_dry_run_changes_nothing(tmp_path: Path, netns: Namespaces) -> None:
    env = piorch_env(tmp_path, tmp_path / "no-ssh-config")
    before = ip("-n", netns.laptop, "-j", "addr", "show")
    dry = run_in(netns.laptop, env, *LINK, "--pi-ip", "10.77.0.2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "laptop (iproute2): would run these commands:\n  ip addr add 10.77.0.1/24 dev pl0\n" \
           "  ip link set pl0 up\n" in dry.stdout
    assert ip("-n", netns.laptop, "-j", "addr", "show") == before
    assert not (tmp_path / "no-user-config.toml").exists()


def test_taken_subnet_is_avoided_or_refused(tmp_path: Path, netns: Namespaces) -> None:
    # A second interface already on 192.168.50.0/24, like a home network that uses it.
    ip("-n", netns.laptop, "link", "add", "home0", "type", "veth", "peer", "name", "home1")
    ip("-n", netns.laptop, "addr", "add", "192.168.50.10/24", "dev", "home0")
    env = piorch_env(tmp_path, tmp_path / "no-ssh-config")
    refused = run_in(netns.laptop, env, *LINK, "--laptop-ip", "192.168.50.1")
    assert refused.returncode == 2
    assert "clashes with this laptop's other networks (home0 has 192.168.50.10/24)" in refused.stderr
    assert addresses(netns.laptop, IFACE) == [] and not (tmp_path / "no-user-config.toml").exists()
    chosen = run_in(netns.laptop, env, *LINK)
    assert chosen.returncode == 0, chosen.stderr
    assert addresses(netns.laptop, IFACE) == ["192.168.51.1/24"]
    assert "next: boot the Pi on the cable" in chosen.stdout  # nothing answers at 192.168.51.2 yet


def test_no_wired_interface_is_explained(tmp_path: Path, netns: Namespaces) -> None:
    env = piorch_env(tmp_path, tmp_path / "no-ssh-config")
    result = run_in(netns.laptop, env, "--skip-pi", "--laptop-tool", "iproute2")
    assert result.returncode == 6
    assert "no wired Ethernet interface found (seen: lo (loopback), pl0 (virtual))" in result.stderr
    assert "--iface" in result.stderr and addresses(netns.laptop, IFACE) == []


def test_command_prefix_runs_the_plan_inside_the_namespace(netns: Namespaces) -> None:
    """The injectable prefix: this process stays in the machine's namespace, the commands do not."""
    prefix = ("ip", "netns", "exec", netns.laptop)
    link = IPv4Interface("10.77.0.1/24")
    notes: list[str] = []
    apply_laptop_plan(build_iproute2_setup(Iface(IFACE, IfaceKind.WIRED, False), link), prefix, notify=notes.append)
    assert addresses(netns.laptop, IFACE) == ["10.77.0.1/24"] and is_up(netns.laptop, IFACE)
    assert notes == ["$ ip addr add 10.77.0.1/24 dev pl0", "$ ip link set pl0 up"]
    assert [(str(r.network), r.iface) for r in gather_routes(prefix)] == [("10.77.0.0/24", IFACE)]
    present = Iface(IFACE, IfaceKind.WIRED, True, (link,))
    apply_laptop_plan(build_iproute2_undo(present, link), prefix, notify=notes.append)
    assert addresses(netns.laptop, IFACE) == []


def test_sd_card_and_laptop_in_one_run_and_undo(tmp_path: Path, netns: Namespaces) -> None:
    card = tmp_path / "bootfs"
    card.mkdir()
    original = b"console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 rootwait quiet\n"
    (card / "cmdline.txt").write_bytes(original)
    env = piorch_env(tmp_path, tmp_path / "no-ssh-config")
    both = ("--boot", str(card), "--iface", IFACE, "--laptop-tool", "iproute2")
    done = run_in(netns.laptop, env, *both)
    assert done.returncode == 0, done.stderr
    assert (card / "cmdline.txt").read_bytes() == original[:-1] + b" ip=192.168.50.2::0.0.0.0:255.255.255.0::eth0:off\n"
    assert addresses(netns.laptop, IFACE) == ["192.168.50.1/24"]
    undone = run_in(netns.laptop, env, "--undo", *both)
    assert undone.returncode == 0, undone.stderr
    assert (card / "cmdline.txt").read_bytes() == original and sorted(p.name for p in card.iterdir()) == ["cmdline.txt"]
    assert addresses(netns.laptop, IFACE) == []


SUDO_STAND_IN = """#!/bin/sh
# Stand-in for sudo on a laptop where piorch is not root: log the call, run the command.
echo "$*" >> "{log}"
[ "$1" = "-n" ] && shift
[ "$1" = "-v" ] && exit 0
exec "$@"
"""


def test_sudo_is_said_first_and_used_for_every_command(tmp_path: Path, netns: Namespaces,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sudo.log"
    (bin_dir / "sudo").write_text(SUDO_STAND_IN.format(log=log))
    (bin_dir / "sudo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    notes: list[str] = []
    plan = build_iproute2_setup(Iface(IFACE, IfaceKind.WIRED, False), IPv4Interface("10.77.0.1/24"))
    apply_laptop_plan(plan, ("ip", "netns", "exec", netns.laptop), sudo=True, notify=notes.append)
    assert notes[0] == "piorch is not root: the laptop commands run through sudo (it may ask for your password)"
    assert log.read_text().splitlines() == [
        "-v",
        f"-n ip netns exec {netns.laptop} ip addr add 10.77.0.1/24 dev pl0",
        f"-n ip netns exec {netns.laptop} ip link set pl0 up",
    ]
    assert addresses(netns.laptop, IFACE) == ["10.77.0.1/24"]



IP_REFUSING_ADD = """#!/bin/sh
# Stand-in for ip: the kernel refuses the address (as it would under a restrictive policy); all else is real.
if [ "$1 $2" = "addr add" ]; then echo "RTNETLINK answers: Operation not permitted" >&2; exit 2; fi
exec {ip} "$@"
"""


def test_failing_laptop_command_is_one_line_with_its_stderr(tmp_path: Path, netns: Namespaces) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ip").write_text(IP_REFUSING_ADD.format(ip=shutil.which("ip")))
    (bin_dir / "ip").chmod(0o755)
    env = piorch_env(tmp_path, tmp_path / "no-ssh-config", bin_dir)
    result = run_in(netns.laptop, env, *LINK)
    assert result.returncode == 6
    assert result.stderr == ("piorch: error: `ip addr add 192.168.50.1/24 dev pl0` failed (RTNETLINK answers: "
                             "Operation not permitted): fix that and run setup-link again (it skips what is "
                             "already done)\n")
    assert addresses(netns.laptop, IFACE) == [] and not is_up(netns.laptop, IFACE)
    assert not (tmp_path / "no-user-config.toml").exists()
