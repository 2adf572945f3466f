"""The fake Pis of benchmarks/startup.py: the project's real OpenSSH sshd fixture with the camera simulator.

Where they run, best first:
- netns: a "laptop" and a "Pi" network namespace joined by a veth pair (tests/netns.py makes them), each
  end shaped to 100 Mbit/s with `tc ... tbf`, as an Ethernet cable to a Pi 3B would be. Every sshd listens
  on 10.203.0.2 in the Pi namespace, one port per Pi. This process moves its own (main) thread into the
  laptop namespace, so every command it starts (nc, ssh, piorch) runs there as is, with no
  `ip netns exec` in front that would add its own start-up time to every measurement.
- netns without tc: the same, plain veth (then the link is faster than a real one; said in the output).
- loopback: not root, or no iproute2: one tests/sshd_server.py SshServer per Pi on 127.0.0.1.

Traffic goes only to loopback or to the Pi namespace made here: before the first connection the laptop
namespace is checked to be the one this thread is in (a failed move would otherwise send to 10.203.0.2
through the machine's own default route).
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import hmac
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.sim.stand_in import install_stand_ins
from tests.netns import (
    LAPTOP_IF,
    LAPTOP_IP,
    PI_IF,
    PI_IP,
    Link,
    NetnsError,
    create_link,
    in_ns,
    netns_unavailable,
    tc,
)
from tests.sshd_server import (
    LOOPBACK,
    PRIVSEP_DIR,
    SshServer,
    _generate_key,
    build_client_config,
    build_session_env,
    build_session_wrapper,
    build_sshd_config,
    find_sftp_server,
    sshd_path,
)

RATE = "100mbit"
# tbf needs a bucket of at least rate/HZ (12.5 kB at HZ=1000, 50 kB at HZ=250) or it cannot reach the rate;
# 64 kB covers both. 50 ms of queue: enough for a TCP window at 100 Mbit/s without bufferbloat.
TBF_ARGS = ("tbf", "rate", RATE, "burst", "64kb", "latency", "50ms")
FIRST_PORT = 2201
# sshd starts in well under a second; 10 s covers a loaded 2-core machine.
SSHD_START_S = 10.0
CLONE_NEWNET = 0x40000000


class LabError(RuntimeError):
    """The fake Pis could not be set up."""


__all__ = ["FakePi", "Lab", "LabError", "NetnsError", "open_lab"]


@dataclass(frozen=True)
class FakePi:
    alias: str
    root: Path
    client_config: str  # its `Host alias` block of the ssh_config
    host: str
    port: int

    @property
    def log_dir(self) -> Path:
        return self.root / "pi-log"


@dataclass
class Lab:
    where: str  # how the Pis are reached, said in the output
    laptop_ip: str
    pis: list[FakePi]
    ssh_config: Path


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise LabError(f"setns failed: {os.strerror(errno)}")


def _same_netns(named: str) -> bool:
    return os.stat("/proc/thread-self/ns/net").st_ino == os.stat(f"/run/netns/{named}").st_ino


def enter_netns(stack: ExitStack, namespace: str) -> None:
    """Move this (main) thread into `namespace` until the stack closes; children inherit it."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    stack.callback(os.close, home)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        _setns(target)
    finally:
        os.close(target)
    # Registered after the move: back home before the namespaces are torn down (their teardown kills every
    # process found in them, which must not be this one).
    stack.callback(_setns, home)
    if not _same_netns(namespace):
        raise LabError(f"this thread is not in {namespace} after setns")
    interfaces = Path("/proc/self/net/dev").read_text()
    if LAPTOP_IF not in interfaces:
        raise LabError(f"{LAPTOP_IF} is not visible after moving into {namespace}")


def _wait_banner(host: str, port: int, log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + SSHD_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"sshd exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                sock.settimeout(1)
                if sock.recv(8).startswith(b"SSH-2.0"):
                    return
        except OSError:
            pass  # not listening yet: poll again until the deadline
        time.sleep(0.02)
    raise LabError(f"sshd on {host}:{port} did not serve within {SSHD_START_S:.0f} s: {log.read_text()[-2000:]}")


def start_netns_pi(root: Path, pi_ns: str, alias: str, port: int) -> FakePi:
    """One sshd in the Pi namespace on PI_IP:port, built by tests/sshd_server.py's pure builders."""
    for sub in ("keys", "bin", "home", "pi-log"):
        (root / sub).mkdir(parents=True)
    keys = root / "keys"
    _generate_key(keys / "host_ed25519", "piorch-bench-host")
    _generate_key(keys / "user_ed25519", "piorch-bench-user")
    shutil.copyfile(keys / "user_ed25519.pub", root / "authorized_keys")
    env = {"PIORCH_SIM_LOG": str(root / "pi-log"), "PIORCH_SIM_LOCK": str(root / "camera.lock")}
    session_env = build_session_env(root / "bin", root / "home", env)
    wrapper = root / "session-wrapper.sh"
    wrapper.write_text(build_session_wrapper(session_env))
    wrapper.chmod(0o755)
    config = build_sshd_config(port=port, host_key=keys / "host_ed25519", pid_file=root / "sshd.pid",
                               authorized_keys=root / "authorized_keys", session_env=session_env, wrapper=wrapper,
                               sftp_server=find_sftp_server())
    config = _replace_once(config, f"ListenAddress {LOOPBACK}:{port}", f"ListenAddress {PI_IP}:{port}")
    (root / "sshd_config").write_text(config)
    host_pub = (keys / "host_ed25519.pub").read_text().split()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[{PI_IP}]:{port} {host_pub[0]} {host_pub[1]}\n")
    user = pwd.getpwuid(os.geteuid()).pw_name
    client = build_client_config(alias=alias, port=port, user=user, user_key=keys / "user_ed25519",
                                 known_hosts=known_hosts)
    client = _replace_once(client, f"    HostName {LOOPBACK}", f"    HostName {PI_IP}")
    install_stand_ins(root / "bin", ("raspivid",))
    if not PRIVSEP_DIR.exists():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
    sshd = sshd_path()
    if sshd is None:
        raise LabError("sshd not found: install openssh-server")
    log = root / "sshd.log"
    with log.open("ab") as handle:
        # Its own session: a Ctrl+C at the terminal must not reach "the Pi". Link.close kills it.
        proc = subprocess.Popen(in_ns(pi_ns, [sshd, "-D", "-e", "-f", str(root / "sshd_config")]),
                                stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
    _wait_banner(PI_IP, port, log, proc)
    return FakePi(alias, root, client, PI_IP, port)


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old + "\n") != 1:
        raise LabError(f"expected one line {old!r} in the generated config")
    return text.replace(old + "\n", new + "\n")


def start_loopback_pi(stack: ExitStack, root: Path, alias: str) -> FakePi:
    """One tests/sshd_server.py SshServer on 127.0.0.1 (its own temp dir); the simulator logs under root."""
    (root / "pi-log").mkdir(parents=True)
    server = SshServer({"PIORCH_SIM_LOG": str(root / "pi-log"), "PIORCH_SIM_LOCK": str(root / "camera.lock")},
                       alias=alias)
    info = server.start()
    stack.callback(server.stop)
    install_stand_ins(info.bin_dir, ("raspivid",))
    return FakePi(alias, root, info.ssh_config.read_text(), info.host, info.port)


def why_not_netns() -> str | None:
    return netns_unavailable()


def _hashed_name(name: str) -> str:
    """A known_hosts name as OpenSSH writes it with HashKnownHosts yes (the default on Debian and Ubuntu)."""
    salt = os.urandom(20)
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def share_user_key(pis: list[FakePi]) -> list[FakePi]:
    """One key for every Pi, as a user has (`ssh-copy-id` to each): the first Pi's user key is authorized on
    every Pi beside its own, and every Pi's ssh_config block names it. Each fake Pi's own key, as the sshd
    fixture makes it, would have a fleet's logins read 8 key files where a user's read one."""
    if not pis:
        return pis
    shared = _identity_file(pis[0])
    public = shared.with_name(shared.name + ".pub").read_text()
    changed = [pis[0]]
    for pi in pis[1:]:
        own = _identity_file(pi)
        # Both layouts (start_netns_pi's root, SshServer's temp dir) keep authorized_keys beside keys/.
        with (own.parent.parent / "authorized_keys").open("a") as authorized:
            authorized.write(public)
        config = pi.client_config.replace(f"IdentityFile {own}\n", f"IdentityFile {shared}\n")
        if config == pi.client_config:
            raise LabError(f"could not name the shared key in {pi.alias}'s ssh_config block")
        changed.append(replace(pi, client_config=config))
    return changed


def _identity_file(pi: FakePi) -> Path:
    lines = [line.split(None, 1)[1] for line in pi.client_config.splitlines()
             if line.strip().startswith("IdentityFile")]
    if len(lines) != 1:
        raise LabError(f"expected one IdentityFile line in {pi.alias}'s ssh_config block")
    return Path(lines[0].strip())


def share_known_hosts(scratch: Path, pis: list[FakePi], others: int) -> list[FakePi]:
    """One known_hosts for every Pi, as a user has: their keys under hashed names among `others` other hosts
    (ed25519, ECDSA and RSA keys in turn), each Pi's line where it would be had it been added in turn. The
    Pis' ssh_config blocks name it instead of their own one-line files."""
    keys = scratch / "other-host-keys"
    keys.mkdir()
    publics = []
    for kind in ("ed25519", "ecdsa", "rsa"):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(keys / kind)], check=True)
        publics.append(" ".join((keys / f"{kind}.pub").read_text().split()[:2]))
    lines = [f"{_hashed_name(f'host{n}.example.net')} {publics[n % 3]}\n" for n in range(others)]
    shared = scratch / "known_hosts"
    changed = []
    for index, pi in enumerate(pis):
        own = next(line.split() for line in pi.client_config.splitlines() if "UserKnownHostsFile" in line)[1]
        name, kind, blob = Path(own).read_text().split()[:3]
        lines.insert((index + 1) * len(lines) // (len(pis) + 1), f"{_hashed_name(name)} {kind} {blob}\n")
        changed.append(replace(pi, client_config=pi.client_config.replace(f"UserKnownHostsFile {own}\n",
                                                                          f"UserKnownHostsFile {shared}\n")))
    shared.write_text("".join(lines))
    return changed


def open_lab(stack: ExitStack, scratch: Path, count: int, force_loopback: bool,
             known_hosts_others: int | None = None) -> Lab:
    """`count` fake Pis named pi1..piN; everything is undone when `stack` closes. `known_hosts_others`: one
    shared known_hosts with that many other hosts (share_known_hosts), else each Pi its own one-line file."""
    aliases = [f"pi{index}" for index in range(1, count + 1)]
    reason = "asked for (--loopback)" if force_loopback else why_not_netns()
    pis: list[FakePi]
    if reason is None:
        link: Link = create_link(None)
        stack.callback(link.close)
        if shutil.which("tc") is not None:
            try:
                for namespace, iface in ((link.laptop_ns, LAPTOP_IF), (link.pi_ns, PI_IF)):
                    tc(namespace, "qdisc", "add", "dev", iface, "root", *TBF_ARGS)
                where = f"network namespaces, veth shaped to 100 Mbit/s each way (tc tbf {RATE})"
            except NetnsError as exc:  # the kernel may lack sch_tbf: plain veth, said in the output
                where = f"network namespaces, plain veth (tc tbf failed: {exc})"
        else:
            where = "network namespaces, plain veth (no tc: the link is not shaped to 100 Mbit/s)"
        enter_netns(stack, link.laptop_ns)
        pis = [start_netns_pi(scratch / alias, link.pi_ns, alias, FIRST_PORT + index)
               for index, alias in enumerate(aliases)]
        laptop_ip = LAPTOP_IP
    else:
        where = f"loopback 127.0.0.1 (no network namespaces: {reason})"
        pis = [start_loopback_pi(stack, scratch / alias, alias) for alias in aliases]
        laptop_ip = LOOPBACK
    pis = share_user_key(pis)
    if known_hosts_others is not None:
        pis = share_known_hosts(scratch, pis, known_hosts_others)
    ssh_config = scratch / "ssh_config"
    ssh_config.write_text("".join(pi.client_config for pi in pis))
    return Lab(where, laptop_ip, pis, ssh_config)
