"""Is the Pi's SSH host key known, unknown, or changed? Asked by `doctor`, `bootstrap` and `trust` before any login.

The key is read without logging in, preferring the key type already recorded for the host, as paramiko's
own client and OpenSSH do: a Pi recorded with its ECDSA key that also has an Ed25519 key must not look
"unknown" just because Ed25519 comes first in the default preference. known_hosts files are read and written
here only (`read_known_hosts`, `record_host_key`): the SSH login, `trust`, `doctor` and `bootstrap` share them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import functools
import hashlib
import hmac
import os
import re
import shlex
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConnectError, HostKeyError
from orchestrator.pi.target import ReadOnce, SshTarget

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


@dataclass(frozen=True)
class _KnownLine:
    """One key line of a known_hosts file, as far as matching needs it: the key itself is read only for a
    line that names the host asked for."""

    number: int
    text: str
    names: frozenset[str]
    # Each hashed name (`|1|salt|hash`, OpenSSH's HashKnownHosts, the default on Debian and Ubuntu) decoded.
    hashed: tuple[_HashedName, ...]
    # OpenSSH's `@revoked` or `@cert-authority` before the names (their names are patterns), else "".
    marker: str = ""
    key_base64: str = ""

    def names_host(self, name: str) -> bool:
        """Whether this line is for `name`: as paramiko.HostKeys matches (the name itself, or a hashed name
        that is its HMAC-SHA1), or for a marked line as OpenSSH matches its patterns."""
        if self.marker:
            return _patterns_match(self.names, name)
        if name in self.names:
            return True
        return not name.startswith("|1|") and _hash_matches(self.hashed, name)


class _HashedName:
    """One `|1|salt|hash` name: the HMAC-SHA1 of a host name keyed by the salt. From the second host asked on
    (the second Pi of a fleet) the key's two padded blocks (RFC 2104) are kept, so each further host costs two
    copies and two short hashes a line, about half of a whole HMAC (~1.4 us), on every line of a user's
    known_hosts for every Pi. One Pi alone pays no more than the plain HMAC."""

    __slots__ = ("_asked", "_pads", "digest", "salt")

    def __init__(self, salt: bytes, digest: bytes) -> None:
        self.salt, self.digest = salt, digest
        self._asked = False
        self._pads: tuple[Any, Any] | None = None

    def names(self, raw: bytes) -> bool:
        pads = self._pads
        if pads is None:
            if not self._asked:
                self._asked = True
                return hmac.compare_digest(hmac.digest(self.salt, raw, "sha1"), self.digest)
            # OpenSSH's choice of hash for the names (hostfile.c), not a security decision of ours. The salt
            # (20 bytes, _decoded_hashes) is shorter than a block, so it is the key itself, padded.
            key = self.salt.ljust(_SHA1_BLOCK, b"\0")
            # Kept whole in one assignment: two threads that both get here just compute it twice.
            pads = self._pads = (_sha1(key.translate(_INNER)), _sha1(key.translate(_OUTER)))
        inner, outer = pads[0].copy(), pads[1].copy()
        inner.update(raw)
        outer.update(inner.digest())
        return hmac.compare_digest(outer.digest(), self.digest)


_SHA1_BLOCK, _SHA1_SIZE = 64, 20
_sha1 = functools.partial(hashlib.sha1, usedforsecurity=False)
_INNER = bytes(byte ^ 0x36 for byte in range(256))
_OUTER = bytes(byte ^ 0x5C for byte in range(256))


def _hash_matches(hashed: tuple[_HashedName, ...], name: str) -> bool:
    raw = name.encode()
    return any(item.names(raw) for item in hashed)


def _patterns_match(patterns: frozenset[str], name: str) -> bool:
    """OpenSSH's host patterns (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT): `*` and `?` wildcards, `!` negates and
    wins, a hashed name matches its host; without regard to case."""
    name = name.lower()
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        if body.startswith("|1|"):
            hit = _hash_matches(_decoded_hashes([body]), name)
        else:
            glob = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in body.lower())
            hit = re.fullmatch(glob, name, re.DOTALL) is not None
        if hit and negated:
            return False
        matched = matched or hit
    return matched


def _decoded_hashes(names: list[str]) -> tuple[_HashedName, ...]:
    """The hashed names among `names`. As OpenSSH (hostfile.c, extract_salt) a salt or hash that is not
    SHA-1's 20 bytes names no host (paramiko's own lookup would fail an assertion on it)."""
    hashed: list[_HashedName] = []
    for item in names:
        parts = item.split("|")
        if item.startswith("|1|") and len(parts) == 4:
            with contextlib.suppress(binascii.Error, ValueError):
                salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
                if len(salt) == len(digest) == _SHA1_SIZE:
                    hashed.append(_HashedName(salt, digest))
    return tuple(hashed)


def _read_line(number: int, text: str) -> _KnownLine | None:
    # Fields as paramiko's HostKeyEntry.from_line splits them: single spaces or tabs.
    fields = re.split(" |\t", text)
    marker = ""
    if fields[0].startswith("@"):
        marker, fields = fields[0], fields[1:]
    if len(fields) < 3:
        return None  # paramiko skips such a line too
    names = fields[0].split(",")
    return _KnownLine(number, text, frozenset(names), _decoded_hashes(names), marker, fields[2])


class _KnownFile:
    """The key lines of one known_hosts file, indexed for asking which of them name a host: a plain name is
    a dictionary lookup, and only the hashed names are tried one by one (each an HMAC nothing can spare),
    in one loop, with no call a line beyond the hash's own. A user's known_hosts often has a hundred hosts
    or more, and each Pi of a fleet asks for itself."""

    def __init__(self, lines: tuple[_KnownLine, ...]) -> None:
        self.lines = lines
        plain: dict[str, list[int]] = {}
        hashed: list[tuple[_HashedName, int]] = []
        for index, line in enumerate(lines):
            if line.marker:
                continue  # their names are patterns (_patterns_match), asked of each marked line
            for name in line.names:
                plain.setdefault(name, []).append(index)
            hashed.extend((item, index) for item in line.hashed)
        self._plain = plain
        self._hashed = tuple(hashed)
        self.marked = tuple(line for line in lines if line.marker)

    def naming(self, name: str) -> list[_KnownLine]:
        """The unmarked lines for `name`, in the file's order: what `_KnownLine.names_host` says of each."""
        found = set(self._plain.get(name, ()))
        if not name.startswith("|1|"):
            raw = name.encode()
            found.update(index for item, index in self._hashed if item.names(raw))
        return [self.lines[index] for index in sorted(found)]


def _read_lines(path: Path) -> _KnownFile:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return _KnownFile(tuple(line for number, raw in enumerate(handle, 1)
                                if (text := raw.strip()) and not text.startswith("#")
                                and (line := _read_line(number, text)) is not None))


# Several Pis started at once (and a jump host with its Pi) read the same file once.
_KNOWN: ReadOnce[_KnownFile] = ReadOnce(_read_lines)


def _known_lines(path: Path) -> _KnownFile | None:
    """The key lines of one known_hosts file, None when there is none; read again whenever it changed."""
    try:
        info = path.stat()
        return _KNOWN.get(path, info) if stat.S_ISREG(info.st_mode) else None
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ConnectError(f"cannot read {path} ({exc.strerror})", "check its permissions") from None


def revoked_keys(paths: tuple[Path, ...], name: str) -> frozenset[bytes]:
    """The keys (as blobs) that a `@revoked` line of these known_hosts files marks for host `name`: OpenSSH
    never accepts them, so neither does piorch (paramiko itself does not read marked lines)."""
    revoked: set[bytes] = set()
    for path in paths:
        known = _known_lines(path)
        for line in known.marked if known is not None else ():
            if line.marker == "@revoked" and line.names_host(name):
                with contextlib.suppress(binascii.Error, ValueError):
                    revoked.add(base64.b64decode(line.key_base64, validate=True))
    return frozenset(revoked)


def read_known_hosts(paths: tuple[Path, ...], name: str, into: paramiko.HostKeys | None = None) -> paramiko.HostKeys:
    """The keys recorded for host `name` (as known_hosts names it: `host`, or `[host]:port`) in the known_hosts
    files that exist, hashed names included, added to `into` when given (an SSHClient's own table) or to a new
    table: what paramiko.HostKeys.load would give for that name, less any key a `@revoked` line marks for it
    (which then reads as unknown: `revoked_keys` tells the two apart).

    Only the lines for `name` are turned into keys: the rest of a user's known_hosts (often a hundred hosts
    or more) costs a string or HMAC comparison a line, not a key object each (~40 us), for every Pi. A line
    for another host that paramiko could not read (an OpenSSH `@cert-authority` line, which made paramiko's
    own HostKeys.load raise) no longer matters either."""
    import paramiko
    from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

    known = paramiko.HostKeys() if into is None else into
    revoked = revoked_keys(paths, name)
    for path in paths:
        lines = _known_lines(path)
        for line in lines.naming(name) if lines is not None else ():
            try:
                entry = HostKeyEntry.from_line(line.text, line.number)
            except paramiko.SSHException:
                continue  # a key paramiko cannot read: skipped, as HostKeys.load does
            except InvalidHostKey:
                raise ConnectError(f"cannot read line {line.number} of {path}: its key for {name} is not base64",
                                   f"remove it with `ssh-keygen -R '{name}' -f {shlex.quote(str(path))}`") from None
            if entry is None or entry.key is None or entry.key.asbytes() in revoked:
                continue
            key_type = entry.key.get_name()
            # A hashed name OpenSSH cannot read (a salt that is not 20 bytes) stays out: paramiko's lookup would
            # fail an assertion on it, even when another name of the same line is the one asked for.
            for host in (host for host in entry.hostnames if not host.startswith("|1|") or _decoded_hashes([host])):
                # The first line wins, as a lookup in what HostKeys.load gives finds the first key of a type.
                recorded = known.lookup(host)
                if recorded is None or key_type not in recorded:
                    known.add(host, key_type, entry.key)
    return known


def revoked_key_error(who: str, key: paramiko.PKey, paths: tuple[Path, ...]) -> HostKeyError:
    where = paths[0] if len(paths) == 1 else "known_hosts"
    return HostKeyError(f"the host key of {who} ({key.get_name()} {fingerprint(key)}) is marked @revoked in {where}; "
                        "refusing to connect",
                        "do not connect to it; if its keys were made anew on purpose, remove that @revoked line")


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
    entry = read_known_hosts(target.known_hosts, target.known_hosts_name).lookup(target.known_hosts_name)
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
    `record_host_key`. A key marked `@revoked` for the Pi raises HostKeyError: it must not be recorded."""
    recorded = load_recorded_keys(target)
    key = fetch_key(target, timeout, recorded, stream)
    if key.asbytes() in revoked_keys(target.known_hosts, target.known_hosts_name):
        raise revoked_key_error(f"the Pi at {target.display}", key, target.known_hosts)
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
