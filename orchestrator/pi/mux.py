"""The Pi through a connection the user already has open: an OpenSSH ControlMaster.

Many users keep one SSH connection to their Pi open and let every `ssh` share it (`ControlMaster auto`,
`ControlPath ...`, `ControlPersist ...` in ~/.ssh/config). When the config piorch reads names a ControlPath
for the Pi and that socket is there, piorch runs its commands through it (`ssh -S PATH`) instead of opening
a connection of its own with paramiko: no paramiko import, no key exchange, no authentication, which is
most of what a start costs (benchmarks/startup.py). The master was opened and its host key checked by the
user's own OpenSSH, exactly as a hand-typed `ssh` would use it.

Every command is one `ssh` process, whose stdin piorch holds open and silent like a paramiko channel's: the
pipeline's watchdog on the Pi sees end-of-file when piorch goes away, however it goes. The video never
passes through SSH either way. `ControlMaster=no` on each command: piorch never becomes a master itself.
"""

from __future__ import annotations

import glob
import re
import shutil
import socket
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ConnectError, Interrupted, PiorchError
from orchestrator.pi.host import CommandResult, Process, run_to_end, start_process
from orchestrator.pi.target import parse_target
from orchestrator.settings import SshSettings

# The user's and the system-wide client config, which OpenSSH reads when no `-F` is given.
DEFAULT_CONFIG = Path("~/.ssh/config")
SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")
# Worth asking `ssh -G` only when a config file (or one it includes) names a control path other than `none`.
_NAMES_MASTER = re.compile(r"^\s*ControlPath(?!\s*=?\s*none\s*$)\b", re.IGNORECASE | re.MULTILINE)
_INCLUDE = re.compile(r"^\s*Include\s*=?\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
# OpenSSH refuses deeper Include nesting than this (readconf.c READCONF_MAX_DEPTH).
MAX_INCLUDE_DEPTH = 16
# `ssh -G` prints the effective config and exits at once; this only guards against a hung binary.
CONFIG_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Master:
    """An open ControlMaster for the Pi, as `ssh -G` resolved the target."""

    alias: str
    hostname: str
    port: int
    user: str
    control_path: Path
    # Through jump hosts or a ProxyCommand the link's ends are not this laptop's to see.
    proxied: bool


def _own_config(settings: SshSettings) -> Path | None:
    """The config file to name with `-F`: None for the user's default, which ssh reads by itself (and then
    the system-wide file too, which `-F` would skip)."""
    path = settings.ssh_config
    if path is None or path.expanduser() == DEFAULT_CONFIG.expanduser():
        return None
    return path.expanduser()


def _names_master(path: Path, user_file: bool, depth: int = 0) -> bool:
    """Whether the config file, or a file it includes, has a ControlPath line (not `none`). Include
    arguments are globs, relative to ~/.ssh in a user's file and to /etc/ssh in the system's (ssh_config(5))."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    if _NAMES_MASTER.search(text):
        return True
    if depth >= MAX_INCLUDE_DEPTH:
        return False
    base = Path.home() / ".ssh" if user_file else SYSTEM_CONFIG.parent
    for line in _INCLUDE.finditer(text):
        for pattern in line.group(1).split():
            pattern = str(Path(pattern.strip('"')).expanduser())
            full = pattern if pattern.startswith("/") else str(base / pattern)
            if any(_names_master(Path(found), user_file, depth + 1) for found in sorted(glob.glob(full))):
                return True
    return False


def _mentions_master(settings: SshSettings) -> bool:
    own = _own_config(settings)
    if own is not None:
        return _names_master(own, user_file=True)
    return _names_master(DEFAULT_CONFIG.expanduser(), user_file=True) or _names_master(SYSTEM_CONFIG, user_file=False)


def _answers(control: Path) -> bool:
    """A master listens on its socket: a socket file left by a master that died refuses the connection
    (and `ssh -S` would then quietly open a connection of its own instead)."""
    try:
        if not stat.S_ISSOCK(control.stat().st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            probe.connect(str(control))
        return True
    except OSError:
        return False


def _ssh_target_args(target: str) -> list[str]:
    """`[user@]host[:port]` or an alias as ssh's own arguments (the port and user as options)."""
    user, host, port = parse_target(target)
    return [*(["-l", user] if user else []), *(["-p", str(port)] if port else []), "--", host]


def _config_args(settings: SshSettings) -> list[str]:
    own = _own_config(settings)
    return [] if own is None else ["-F", str(own)]


def may_have_master(settings: SshSettings) -> bool:
    """Whether find_master has to ask `ssh -G` at all: an OpenSSH client, master use on, and a config
    that names a ControlPath or ControlMaster. Reads files only (no process)."""
    # No ssh_config at all (an empty `ssh_config` setting): piorch reads none, so it looks for no master.
    return (settings.ssh_config is not None and settings.use_controlmaster and shutil.which("ssh") is not None
            and _mentions_master(settings))


def find_master(settings: SshSettings) -> Master | None:
    """The user's open ControlMaster for this Pi, or None (no ssh, no ControlPath, no socket there)."""
    ssh = shutil.which("ssh")
    if ssh is None or not may_have_master(settings):
        return None
    try:
        result = subprocess.run([ssh, *_config_args(settings), "-G", *_ssh_target_args(settings.target)],
                                capture_output=True, text=True, timeout=CONFIG_TIMEOUT_S,
                                stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired, ConnectError):
        return None
    if result.returncode != 0:
        return None
    seen: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        seen.setdefault(key.lower(), value.strip())
    path = seen.get("controlpath", "none")
    if path.lower() == "none" or not path:
        return None
    control = Path(path).expanduser()
    if not _answers(control):
        return None
    proxied = any(seen.get(key, "none").lower() != "none" for key in ("proxyjump", "proxycommand"))
    try:
        port = int(seen.get("port", "22"))
    except ValueError:
        return None
    return Master(settings.target, seen.get("hostname", ""), port, seen.get("user", ""), control, proxied)


class MuxHost:
    """The Pi through the user's open ControlMaster: every command is `ssh -S PATH ... -- COMMAND`."""

    def __init__(self, master: Master, settings: SshSettings) -> None:
        self.master = master
        self.name = master.alias
        # RemoteCommand=none: a config that gives the Pi one (`tmux new -A`) would refuse piorch's commands;
        # no forwardings: the user's own (LocalForward...) belong to their sessions, not to each command.
        self._argv = ["ssh", *_config_args(settings), "-S", str(master.control_path), "-o", "ControlMaster=no",
                      "-o", "BatchMode=yes", "-o", "RemoteCommand=none", "-o", "ClearAllForwardings=yes", "-T",
                      *_ssh_target_args(settings.target)]
        self._lock = threading.Lock()
        self._local: tuple[str | None, str | None] | None = None

    def identity(self) -> str:
        """For what piorch keeps about this Pi (pi/probe_memory.py): the master checked the host key,
        which piorch does not see; the guard's stamp still tells another Pi at this address."""
        master = self.master
        return f"{master.user}@{master.hostname}:{master.port} via controlmaster"

    def start(self, command: str) -> Process:
        try:
            return start_process([*self._argv, command])
        except OSError as exc:
            raise ConnectError(f"cannot run ssh for {self.name} ({exc})", "check that OpenSSH's ssh is installed") \
                from None

    def run(self, command: str, timeout: float, stop: threading.Event | None = None) -> CommandResult:
        return run_to_end(self, command, timeout, stop)

    def learn_addresses(self, stop: threading.Event | None = None) -> None:
        """Ask `_ends` now (one command), so that local_address and peer_address answer at once later;
        `stop` cuts it short (Ctrl+C while record still imports), and then nothing is kept: whoever still
        wants the answer asks again."""
        self._ends(stop)

    def _ends(self, stop: threading.Event | None = None) -> tuple[str | None, str | None]:
        """(this laptop's address, the Pi's) of the master's own connection, as the Pi's sshd saw it
        (`$SSH_CONNECTION`: client address, client port, server address, server port). Through jump hosts
        or a ProxyCommand the client is not this laptop: none."""
        with self._lock:
            if self._local is not None:
                return self._local
            ends: tuple[str | None, str | None] = (None, None)
            if not self.master.proxied:
                try:
                    said = self.run('echo "$SSH_CONNECTION"', CONFIG_TIMEOUT_S, stop).stdout.split()
                except Interrupted:
                    return ends  # cut short, not an answer: kept for no one
                except PiorchError:
                    said = []  # no answer through the master: the caller says what to pass instead
                if len(said) == 4:
                    ends = (said[0], said[2])
            self._local = ends
            return ends

    def local_address(self) -> str | None:
        return self._ends()[0]

    def peer_address(self) -> str | None:
        return self._ends()[1]

    def close(self) -> None:
        """Nothing to release: the master is the user's and stays open; each command closes its own ssh."""


def open_master_host(settings: SshSettings, verify: bool = False) -> MuxHost | None:
    """A MuxHost when the user has a master open for this Pi (and `use_controlmaster` is on), else None.

    `verify`: only when a command gets through it within the connect timeout. A master whose connection
    died with the link keeps its socket until OpenSSH notices (without ServerAlive*, not soon): after a
    link loss, piorch's own connection attempts are the ones that tell when the Pi is back."""
    master = find_master(settings)
    if master is None:
        return None
    host = MuxHost(master, settings)
    if verify:
        try:
            if host.run("true", timeout=settings.connect_timeout).exit_code != 0:
                return None
        except PiorchError:
            return None
    return host
