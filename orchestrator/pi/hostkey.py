"""Is the Pi's SSH host key known, unknown, or changed? Asked by `doctor`, `bootstrap` and `trust` before any login.

The key is read without logging in, preferring the key type already recorded for the host, as paramiko's
own client and OpenSSH do: a Pi recorded with its ECDSA key that also has an Ed25519 key must not look
"unknown" just because Ed25519 comes first in the default preference. known_hosts files are read and written
here only (`read_known_hosts`, `record_host_key`): the SSH login, `trust`, `doctor` and `bootstrap` share them.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import os
import shlex
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConnectError
from orchestrator.pi.target import SshTarget

if TYPE_CHECKING:
    import paramiko


class HostKeyState(str, enum.Enum):
    KNOWN = "known"
    UNKNOWN = "unknown"
    CHANGED = "changed"


@dataclass(frozen=True)
class HostKeyCheck:
    state: HostKeyState
    key_type: str
    fingerprint: str
    # The known_hosts file it is recorded in (or would be), and the name it is recorded under.
    known_hosts: Path
    name: str


def classify_host_key(recorded: Mapping[str, bytes], key_type: str, key_blob: bytes) -> HostKeyState:
    """`recorded`: key type -> key blob from known_hosts for this host name (empty when none)."""
    if key_type not in recorded:
        # paramiko (and so piorch record) treats a host whose recorded keys are all of other types as
        # unknown, not changed; doctor says the same thing record would.
        return HostKeyState.UNKNOWN
    return HostKeyState.KNOWN if recorded[key_type] == key_blob else HostKeyState.CHANGED


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:...` form, so the user can compare it with `ssh-keygen -lf` on the Pi."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def read_known_hosts(paths: tuple[Path, ...], into: paramiko.HostKeys | None = None) -> paramiko.HostKeys:
    """Every key in the known_hosts files that exist (hashed names included), added to `into` when given
    (an SSHClient's own table) or to a new table."""
    import paramiko

    known = paramiko.HostKeys() if into is None else into
    for path in paths:
        if path.is_file():
            try:
                known.load(str(path))
            except OSError as exc:
                raise ConnectError(f"cannot read {path} ({exc.strerror})", "check its permissions") from None
    return known


def record_host_key(known_hosts: Path, name: str, key: paramiko.PKey) -> None:
    """Append one known_hosts line; the folder is created private like ~/.ssh."""
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    with open(known_hosts, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def load_recorded_keys(target: SshTarget) -> dict[str, bytes]:
    """Every key recorded for the target in its known_hosts files: key type -> key blob."""
    entry = read_known_hosts(target.known_hosts).lookup(target.known_hosts_name)
    return {} if entry is None else {key_type: key.asbytes() for key_type, key in entry.items()}


def _preferred_types(recorded: Mapping[str, bytes], offered: list[str]) -> list[str]:
    if not recorded:
        return offered
    first = next(iter(recorded))
    # known_hosts says "ssh-rsa" for an RSA key; the algorithms that verify it today are rsa-sha2-*.
    if first == "ssh-rsa":
        first = next((name for name in ("rsa-sha2-512", "rsa-sha2-256") if name in offered), first)
    return [first, *[name for name in offered if name != first]] if first in offered else offered


def fetch_key(target: SshTarget, timeout: float, recorded: Mapping[str, bytes], stream: Any = None) -> paramiko.PKey:
    """The server's host key, asking for the recorded type first. Over `stream` (a channel through the jump
    hosts, a ProxyCommand: pi/ssh.py check_host_key_on_the_way) when given, else a direct TCP connection."""
    import paramiko

    sock = stream
    if sock is None:
        try:
            sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
        except OSError as exc:
            raise ConnectError(f"cannot reach {target.display} ({exc.strerror or exc})",
                               "check the cable and address; `piorch setup-link --check` tests the link") from None
    transport = paramiko.Transport(sock)
    try:
        options = transport.get_security_options()
        options.key_types = _preferred_types(recorded, list(options.key_types))
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except paramiko.SSHException as exc:
        raise ConnectError(f"{target.display} did not speak SSH ({exc})", "check the address and port") from None
    except (EOFError, OSError) as exc:
        # The connection closed under the handshake (a jump host that gave up, a port that accepts and hangs up).
        raise ConnectError(f"cannot reach {target.display}: the connection closed ({exc or 'end of stream'})",
                           "check the cable and address, and any ProxyJump in the SSH config") from None
    finally:
        transport.close()


def check_host_key(target: SshTarget, timeout: float, stream: Any = None) -> tuple[HostKeyCheck, paramiko.PKey]:
    """Fetch the key (over `stream` when given) and say whether known_hosts knows it; the key comes back for
    `record_host_key`."""
    recorded = load_recorded_keys(target)
    key = fetch_key(target, timeout, recorded, stream)
    state = classify_host_key(recorded, key.get_name(), key.asbytes())
    check = HostKeyCheck(state, key.get_name(), fingerprint(key), target.known_hosts[0], target.known_hosts_name)
    return check, key


def host_key_fix(target: SshTarget, check: HostKeyCheck) -> str:
    """What to do about an unknown or changed key, in the words `piorch trust` and ssh-keygen use."""
    if check.state is HostKeyState.CHANGED:
        return (f"if the Pi was re-flashed, remove the old key with `ssh-keygen -R '{check.name}' "
                f"-f {shlex.quote(str(check.known_hosts))}` and run `piorch trust {target.alias}`; "
                "otherwise do not connect")
    kind = "rsa" if "rsa" in check.key_type else "ecdsa" if "ecdsa" in check.key_type else "ed25519"
    return (f"compare {check.fingerprint} with `ssh-keygen -lf /etc/ssh/ssh_host_{kind}_key.pub` on the Pi, "
            f"then run `piorch trust {target.alias}` (or `piorch bootstrap --pi {target.alias}`)")
