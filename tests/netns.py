"""Network namespaces for the fault tests: a "laptop" and a "Pi" joined by one link, a real sshd in the Pi's.

Layout (every name carries a random tag, so parallel runs and leftovers of a crashed run never collide):

    piorch-t-laptop-TAG  [pl0 10.203.0.1/24] ---- link ---- [eth0 10.203.0.2/24]  piorch-t-pi-TAG
                          (piorch runs here)                  (sshd + camera simulator run here)

The link is a veth pair. With an impairment (loss, delay) it is `tc netem` on both ends when the kernel has
sch_netem; kernels built without it (Firecracker-style CI VMs) get a userspace "wire" instead: two TAP
devices, one in each namespace, and a relay process that copies Ethernet frames between them, dropping a
random share and delaying the rest (see `run_wire`). TAP devices have no checksum or segmentation offload,
so the kernel hands the relay whole, checksummed frames that can be re-injected as they are.

Only loopback and addresses inside these namespaces carry traffic; the machine's own interfaces are never
touched. `Link.close` kills every process left in the namespaces and deletes them, whatever happened.

sshd: the pure builders of tests/sshd_server.py make the config, the session wrapper and the client config;
only the listen address and HostName differ (sshd_server.py pins both to 127.0.0.1), so those two lines are
replaced here, each replacement checked.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import json
import os
import pwd
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.sim.camera import camera_is_free
from orchestrator.sim.stand_in import install_stand_ins
from tests.sshd_server import (
    LOOPBACK,
    PRIVSEP_DIR,
    _fingerprint,
    _generate_key,
    build_client_config,
    build_session_env,
    build_session_wrapper,
    build_sshd_config,
    find_sftp_server,
    sshd_path,
)
from tests.system_tools import PACKAGES, find_tool

LAPTOP_IP = "10.203.0.1"
PI_IP = "10.203.0.2"
PREFIX = 24
LAPTOP_IF = "pl0"
PI_IF = "eth0"
SSH_PORT = 22
ALIAS = "netpi"
# A third machine on another port of the laptop, for the foreign-peer test.
INTRUDER_LAPTOP_IP = "10.203.1.1"
INTRUDER_IP = "10.203.1.2"
INTRUDER_IF = "pl1"
NS_PREFIX = "piorch-t-"

# `ip` answers in milliseconds; 10 s only matters on a machine that is swapping.
IP_TIMEOUT_S = 10.0
# sshd starts in well under a second; 10 s covers a loaded 2-core CI machine.
SSHD_START_S = 10.0
# A reboot: SIGTERM to everything, this long to exit (systemd's default is 90 s; the simulator needs ~0.1 s),
# then SIGKILL for the rest.
REBOOT_GRACE_S = 2.0

# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


class NetnsError(RuntimeError):
    """Namespaces, links or the sshd inside them could not be set up."""


def netns_unavailable() -> str | None:
    """Why these tests cannot run here (a reason to skip), or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to create network namespaces"
    # ip for the namespaces, sshd and its keys for the Pi, nc for its stream.
    for tool in ("ip", "sshd", "ssh-keygen", "nc"):
        if find_tool(tool) is None:
            return f"{tool} not found: install {PACKAGES[tool]}"
    return None


def ip(*args: str) -> str:
    try:
        result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"`ip {' '.join(args)}` hung") from exc
    if result.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def in_ns(namespace: str, argv: Sequence[str]) -> list[str]:
    """argv run inside a namespace. `ip netns exec` execs the command, so the pid is the command's own."""
    return ["ip", "netns", "exec", namespace, *argv]


def ns_pids(namespace: str) -> list[int]:
    try:
        return [int(p) for p in ip("netns", "pids", namespace).split()]
    except NetnsError:
        return []  # the namespace is gone: nothing is left in it


def kill_ns_processes(namespace: str, grace_s: float) -> list[int]:
    """SIGTERM every process in the namespace, SIGKILL what is left after `grace_s`: a reboot, or teardown."""
    victims = ns_pids(namespace)
    for pid in victims:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in victims):
        time.sleep(0.05)
    for pid in ns_pids(namespace):
        _signal(pid, signal.SIGKILL)
    # The killed ones may need a moment to be reaped by their parents (or PID 1).
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(_alive(pid) for pid in victims):
        time.sleep(0.05)
    return victims


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return  # already gone


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""  # gone already


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rfind(")") + 2 :][:1] not in ("Z", "X")  # a zombie no longer holds anything


@dataclass(frozen=True)
class Impairment:
    """What `tc netem loss LOSS delay DELAY` does, applied in each direction."""

    loss: float
    delay_s: float
    seed: int = 1

    @property
    def netem_args(self) -> list[str]:
        return ["netem", "loss", f"{self.loss * 100:g}%", "delay", f"{self.delay_s * 1000:g}ms"]


@dataclass
class Link:
    laptop_ns: str
    pi_ns: str
    # How the impairment is applied: "" (none), "tc netem" or "userspace wire".
    impairment_method: str = ""
    intruder_ns: str | None = None
    _wire: subprocess.Popen[bytes] | None = None
    # What the userspace wire did: frames seen and dropped per direction (set by stop_wire).
    wire_stats: dict[str, int] | None = None
    _closed: bool = field(default=False, repr=False)

    @property
    def namespaces(self) -> list[str]:
        return [ns for ns in (self.pi_ns, self.intruder_ns, self.laptop_ns) if ns]

    def set_pi_end(self, up: bool) -> None:
        """The cable out at the Pi: its end goes down, so the laptop's end loses its carrier too."""
        ip("-n", self.pi_ns, "link", "set", "dev", PI_IF, "up" if up else "down")

    def add_intruder(self) -> str:
        """A third namespace on a second link of the laptop (10.203.1.2), routed to the Pi link."""
        name = self.laptop_ns.replace("laptop", "intruder")
        ip("netns", "add", name)
        self.intruder_ns = name
        ip("-n", self.laptop_ns, "link", "add", INTRUDER_IF, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("-n", self.laptop_ns, "addr", "add", f"{INTRUDER_LAPTOP_IP}/{PREFIX}", "dev", INTRUDER_IF)
        ip("-n", self.laptop_ns, "link", "set", INTRUDER_IF, "up")
        ip("-n", name, "addr", "add", f"{INTRUDER_IP}/{PREFIX}", "dev", "eth0")
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "route", "add", "default", "via", INTRUDER_LAPTOP_IP)
        return name

    def stop_wire(self) -> dict[str, int] | None:
        """End the userspace wire (closing its lifeline) and keep the counts it reports."""
        wire, self._wire = self._wire, None
        if wire is None:
            return self.wire_stats
        try:
            out, _ = wire.communicate(timeout=5)  # closes stdin, the wire's lifeline
            self.wire_stats = json.loads(out.decode().strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            pass  # no counts this time (the relay hung or died); the test that reads them says so
        finally:
            if wire.poll() is None:
                wire.kill()
                wire.wait(5)
        return self.wire_stats

    def close(self) -> None:
        """Kill whatever still runs in the namespaces, stop the wire, delete the namespaces. Never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop_wire()
        except Exception:  # teardown goes on: the namespaces must be deleted whatever happened
            pass
        for namespace in self.namespaces:
            kill_ns_processes(namespace, grace_s=1.0)
        for namespace in self.namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=IP_TIMEOUT_S)


def create_link(impairment: Impairment | None = None) -> Link:
    """Two fresh namespaces joined by a link; the caller must `close()` it (also when this raises)."""
    tag = uuid.uuid4().hex[:8]
    link = Link(f"{NS_PREFIX}laptop-{tag}", f"{NS_PREFIX}pi-{tag}")
    ip("netns", "add", link.laptop_ns)
    try:
        ip("netns", "add", link.pi_ns)
        use_wire = impairment is not None and not netem_available(link.laptop_ns)
        if use_wire:
            assert impairment is not None
            link._wire = start_wire(link, impairment)
            link.impairment_method = "userspace wire (this kernel has no sch_netem)"
        else:
            # Created inside the laptop namespace with its peer moved straight into the Pi's: no interface
            # ever exists in the machine's own namespace.
            ip("-n", link.laptop_ns, "link", "add", LAPTOP_IF, "type", "veth", "peer", "name", PI_IF,
               "netns", link.pi_ns)
        for namespace, iface, address in ((link.laptop_ns, LAPTOP_IF, LAPTOP_IP), (link.pi_ns, PI_IF, PI_IP)):
            ip("-n", namespace, "link", "set", "lo", "up")
            ip("-n", namespace, "addr", "add", f"{address}/{PREFIX}", "dev", iface)
            ip("-n", namespace, "link", "set", iface, "up")
            if impairment is not None and not use_wire:
                tc(namespace, "qdisc", "add", "dev", iface, "root", *impairment.netem_args)
                link.impairment_method = "tc netem"
    except BaseException:
        link.close()
        raise
    return link


def tc(namespace: str, *args: str) -> None:
    result = subprocess.run(in_ns(namespace, ["tc", *args]), capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if result.returncode != 0:
        raise NetnsError(f"`tc {' '.join(args)}` failed in {namespace}: {result.stderr.strip()}")


def netem_available(namespace: str) -> bool:
    """Try a netem qdisc on the namespace's loopback (and remove it): many CI kernels lack sch_netem."""
    if shutil.which("tc") is None:
        return False
    try:
        tc(namespace, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
    except NetnsError:
        return False
    tc(namespace, "qdisc", "del", "dev", "lo", "root")
    return True


def start_wire(link: Link, impairment: Impairment) -> subprocess.Popen[bytes]:
    """The relay process, inside the laptop namespace; returns once both TAP ends exist."""
    argv = in_ns(link.laptop_ns, [sys.executable, "-m", "tests.netns", "wire", "--pi-ns", link.pi_ns,
                                  "--loss", str(impairment.loss), "--delay", str(impairment.delay_s),
                                  "--seed", str(impairment.seed)])
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    # stdin is the relay's lifeline: it exits when this pipe closes, so it never outlives the test run.
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if line != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise NetnsError(f"the userspace wire did not start: {err.decode(errors='replace').strip()}")
    return proc


def _open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def run_wire(pi_ns: str, loss: float, delay_s: float, seed: int) -> int:
    """Relay Ethernet frames between two TAP devices like a cable with netem on both ends.

    Runs in the laptop namespace: both TAPs are made here, then one moves to the Pi's namespace (the file
    descriptor stays attached). Every frame in either direction is dropped with probability `loss`, else
    sent on `delay_s` later; the order of frames is kept, as netem keeps it for a fixed delay.
    """
    laptop_fd = _open_tap(LAPTOP_IF)
    pi_fd = _open_tap(PI_IF)
    ip("link", "set", "dev", PI_IF, "netns", pi_ns)
    rng = random.Random(seed)
    queues: dict[int, collections.deque[tuple[float, bytes]]] = {laptop_fd: collections.deque(),
                                                                 pi_fd: collections.deque()}
    other = {laptop_fd: pi_fd, pi_fd: laptop_fd}
    names = {laptop_fd: "to_pi", pi_fd: "to_laptop"}
    stats = {f"{name}_{what}": 0 for name in names.values() for what in ("frames", "dropped")}
    print("ready", flush=True)
    lifeline = sys.stdin.fileno()
    while True:
        now = time.monotonic()
        wait = 0.5
        for out_fd, queue in queues.items():
            while queue and queue[0][0] <= now:
                try:
                    os.write(out_fd, queue.popleft()[1])
                except OSError:
                    pass  # that end is down (EIO): the frame is lost, as on a cable with no one at the end
            if queue:
                wait = min(wait, queue[0][0] - now)
        readable, _, _ = select.select([laptop_fd, pi_fd, lifeline], [], [], max(0.0, wait))
        for fd in readable:
            if fd == lifeline:
                if not os.read(lifeline, 4096):
                    print(json.dumps(stats), flush=True)
                    return 0
                continue
            try:
                frame = os.read(fd, 65536)
            except OSError:
                continue  # the interface is going down
            direction = names[fd]
            stats[f"{direction}_frames"] += 1
            if rng.random() < loss:
                stats[f"{direction}_dropped"] += 1
            else:
                queues[other[fd]].append((time.monotonic() + delay_s, frame))


@dataclass
class NetnsPi:
    """The camera simulator behind a real sshd in the Pi namespace, reached at 10.203.0.2:22."""

    link: Link
    root: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    tools: tuple[str, ...] = ("raspivid",)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def log_dir(self) -> Path:
        return self.root / "pi-log"

    @property
    def lock(self) -> Path:
        return self.root / "camera.lock"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh_config"

    @property
    def sshd_log(self) -> Path:
        return self.root / "sshd.log"

    def start(self) -> None:
        for sub in ("keys", "bin", "home", "pi-log"):
            (self.root / sub).mkdir(parents=True)
        keys = self.root / "keys"
        _generate_key(keys / "host_ed25519", "piorch-netns-host")
        _generate_key(keys / "user_ed25519", "piorch-netns-user")
        shutil.copyfile(keys / "user_ed25519.pub", self.root / "authorized_keys")
        env = {"PIORCH_SIM_LOG": str(self.log_dir), "PIORCH_SIM_LOCK": str(self.lock), **self.extra_env}
        session_env = build_session_env(self.root / "bin", self.root / "home", env)
        wrapper = self.root / "session-wrapper.sh"
        wrapper.write_text(build_session_wrapper(session_env))
        wrapper.chmod(0o755)
        config = build_sshd_config(port=SSH_PORT, host_key=keys / "host_ed25519", pid_file=self.root / "sshd.pid",
                                   authorized_keys=self.root / "authorized_keys", session_env=session_env,
                                   wrapper=wrapper, sftp_server=find_sftp_server())
        (self.root / "sshd_config").write_text(
            _replace_line(config, f"ListenAddress {LOOPBACK}:{SSH_PORT}", f"ListenAddress {PI_IP}:{SSH_PORT}"))
        host_pub = (keys / "host_ed25519.pub").read_text().split()
        known_hosts = self.root / "known_hosts"
        known_hosts.write_text(f"{PI_IP} {host_pub[0]} {host_pub[1]}\n")  # port 22: the bare address
        user = pwd.getpwuid(os.geteuid()).pw_name
        client = build_client_config(alias=ALIAS, port=SSH_PORT, user=user, user_key=keys / "user_ed25519",
                                     known_hosts=known_hosts)
        self.ssh_config.write_text(_replace_line(client, f"HostName {LOOPBACK}", f"HostName {PI_IP}"))
        self.host_key_fingerprint = _fingerprint(keys / "host_ed25519.pub")
        install_stand_ins(self.root / "bin", self.tools)
        if not PRIVSEP_DIR.exists():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        self.boot()

    def boot(self) -> None:
        """Start sshd in the Pi namespace and wait until it serves a banner on the link."""
        sshd = sshd_path()
        assert sshd is not None
        with self.sshd_log.open("ab") as log:
            log.write(b"--- tests/netns.py: starting sshd ---\n")
            log.flush()
            offset = self.sshd_log.stat().st_size
            argv = in_ns(self.link.pi_ns, [sshd, "-D", "-e", "-f", str(self.root / "sshd_config")])
            # Its own session: a Ctrl+C at the test's terminal must not reach "the Pi".
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + SSHD_START_S
        listening = f"Server listening on {PI_IP} port {SSH_PORT}".encode()
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise NetnsError(f"sshd exited with {self._proc.returncode}: {self.sshd_log.read_text()[-2000:]}")
            if listening in self.sshd_log.read_bytes()[offset:] and self._banner_from_laptop():
                return
            time.sleep(0.05)
        raise NetnsError(f"sshd did not serve within {SSHD_START_S:.0f} s: {self.sshd_log.read_text()[-2000:]}")

    def _banner_from_laptop(self) -> bool:
        probe = (f"import socket\ntry:\n    s = socket.create_connection(({PI_IP!r}, {SSH_PORT}), timeout=1)\n"
                 "    s.settimeout(1)\n    print(s.recv(8).decode(errors='replace'))\nexcept OSError:\n    pass\n")
        result = subprocess.run(in_ns(self.link.laptop_ns, [sys.executable, "-c", probe]), capture_output=True,
                                text=True, timeout=10)
        return result.stdout.startswith("SSH-2.0")

    def power_cycle(self, off_s: float, data_first: Callable[[], None] | None = None) -> tuple[float, float]:
        """A reboot: sshd's listener stops, then every other process of the Pi namespace gets SIGTERM and,
        after a grace time, SIGKILL; `off_s` after the start sshd is back. Returns (wall time it went down,
        wall time sshd was started again).

        The listener goes first so that piorch's immediate reconnect is refused cleanly instead of landing
        in the backlog of a dying sshd (that race is BUG eof-handshake, reproduced deterministically by
        test_a_reset_during_the_ssh_handshake_is_a_connect_error; here it would only make the test flaky).

        `data_first`: the order in which the laptop learns of it is forced: the sshd sessions are frozen,
        the camera and nc are stopped (nc closes the data connection cleanly, with a FIN), `data_first()` is
        called (to wait for the laptop to see that), and only then do the sessions die, dropping the SSH
        connection. Without it the laptop sees the two connections end in either order.
        """
        down_at = time.time()
        if self._proc is not None:
            self._proc.terminate()  # the listener: sshd -D exits at once on SIGTERM, sessions live on
            self._proc.wait(5)
        if data_first is not None:
            sessions = [pid for pid in ns_pids(self.link.pi_ns) if _comm(pid) == "sshd"]
            for pid in sessions:
                _signal(pid, signal.SIGSTOP)
            others = [pid for pid in ns_pids(self.link.pi_ns) if pid not in sessions]
            for pid in others:
                _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + REBOOT_GRACE_S
            while time.monotonic() < deadline and any(_alive(pid) for pid in others):
                time.sleep(0.05)
            data_first()
            for pid in sessions:
                _signal(pid, signal.SIGKILL)  # a frozen process still dies of SIGKILL
        kill_ns_processes(self.link.pi_ns, REBOOT_GRACE_S)
        time.sleep(max(0.0, off_s - (time.time() - down_at)))
        up_at = time.time()  # the Pi is back when its sshd starts, not when this test has checked it serves
        self.boot()
        return down_at, up_at

    # -- the camera's side, as the simulator logs it -----------------------------------------------------

    def runs(self) -> list[dict[str, object]]:
        path = self.log_dir / "runs.jsonl"
        if not path.exists():
            return []
        runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        # The probe's `--help` / `--version` questions do not open the camera: not runs.
        runs = [run for run in runs if run.get("argv", [])[1:] not in (["--help"], ["--version"])]
        return sorted(runs, key=lambda run: float(run["started"]))

    def cameras_running(self) -> list[Path]:
        return sorted(self.log_dir.glob("running-*"))

    def camera_free(self) -> bool:
        """The simulator holds an exclusive flock on the lock file while it runs, like the real camera."""
        return camera_is_free(self.lock)

    def wait_camera_free(self, timeout: float) -> float | None:
        """Seconds until no simulator runs and the lock is free; None if still held at the deadline."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if not self.cameras_running() and self.camera_free():
                return time.monotonic() - start
            time.sleep(0.1)
        return None


def _replace_line(text: str, old: str, new: str) -> str:
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip() == old]
    if len(hits) != 1:
        raise NetnsError(f"expected one line {old!r} in the generated config, found {len(hits)}")
    indent = lines[hits[0]][: len(lines[hits[0]]) - len(lines[hits[0]].lstrip())]
    lines[hits[0]] = f"{indent}{new}\n"
    return "".join(lines)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.netns")
    sub = parser.add_subparsers(dest="command", required=True)
    wire = sub.add_parser("wire", help="the userspace netem stand-in (run inside the laptop namespace)")
    wire.add_argument("--pi-ns", required=True)
    wire.add_argument("--loss", type=float, default=0.0)
    wire.add_argument("--delay", type=float, default=0.0)
    wire.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    return run_wire(args.pi_ns, args.loss, args.delay, args.seed)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
