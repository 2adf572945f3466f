"""The Pi over SSH (paramiko), with ~/.ssh/config honoured and host keys strictly checked.

paramiko never reads ~/.ssh/config by itself, so the alias, HostName, User, Port, IdentityFile,
UserKnownHostsFile and ProxyJump are looked up here. An unknown host key is refused unless the user said to
record it (`--accept-new-host-key`, `piorch trust`); a changed key is always refused. No AutoAddPolicy.
paramiko is imported inside functions: it costs about 250 ms, and `piorch --help` must stay instant.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ConnectError, HostKeyError
from orchestrator.pi.host import CommandResult, Process, run_to_end
from orchestrator.settings import SshSettings

if TYPE_CHECKING:
    import paramiko


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect, after ~/.ssh/config was applied."""

    alias: str
    hostname: str
    port: int = 22
    user: str | None = None
    identity_files: tuple[Path, ...] = ()
    identities_only: bool = False
    # Empty means OpenSSH's default, expanded when used (not at import: HOME may change, e.g. under sudo).
    known_hosts: tuple[Path, ...] = ()
    proxy_jump: str | None = None
    proxy_command: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH names this host in known_hosts: bare for port 22, `[host]:port` otherwise."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def display(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.hostname}{'' if self.port == 22 else f':{self.port}'}"


_TARGET = re.compile(r"^(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:]+)(?::(?P<port>\d+))?$")


def parse_target(text: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` -> (user, host, port); IPv6 goes in brackets."""
    match = _TARGET.match(text)
    if not match:
        raise ConnectError(f"cannot read the Pi address {text!r}", "write it as [user@]host[:port]")
    host = match.group("host").strip("[]")
    port = int(match.group("port")) if match.group("port") else None
    return match.group("user"), host, port


def resolve_target(text: str, ssh_config: Path | None) -> SshTarget:
    """Apply the OpenSSH client config (when it exists) to a `[user@]host[:port]` or alias."""
    user, host, port = parse_target(text)
    looked: dict[str, Any] = {}
    if ssh_config is not None and ssh_config.expanduser().is_file():
        import paramiko

        try:
            config = paramiko.SSHConfig.from_path(str(ssh_config.expanduser()))
            looked = dict(config.lookup(host))
        except Exception as exc:  # paramiko raises several unrelated types for a bad file
            raise ConnectError(f"cannot read SSH config {ssh_config} ({exc})",
                               "fix that file or point ssh_config elsewhere") from None
    known = tuple(Path(p).expanduser() for p in str(looked.get("userknownhostsfile", "")).split() if p)
    identities = tuple(Path(p).expanduser() for p in looked.get("identityfile", []))
    return SshTarget(
        alias=text,
        hostname=str(looked.get("hostname", host)),
        port=port or int(looked.get("port", 22)),
        user=user or looked.get("user"),
        identity_files=identities,
        identities_only=str(looked.get("identitiesonly", "no")).lower() == "yes",
        known_hosts=known or (Path("~/.ssh/known_hosts").expanduser(),),
        proxy_jump=looked.get("proxyjump"),
        proxy_command=looked.get("proxycommand"),
    )


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:...` form, so the user can compare it with `ssh-keygen -lf` on the Pi."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def record_host_key(known_hosts: Path, name: str, key: paramiko.PKey) -> None:
    """Append one known_hosts line; the folder is created private like ~/.ssh."""
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = f"{name} {key.get_name()} {key.get_base64()}\n"
    with open(known_hosts, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def _make_policy(target: SshTarget, accept_new: bool) -> Any:
    import paramiko

    class RecordOrRefuse(paramiko.MissingHostKeyPolicy):
        """Unknown key: refuse with the fix, or record it when the user asked for exactly that."""

        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            print_name = target.known_hosts_name
            if not accept_new:
                raise HostKeyError(
                    f"unknown host key for {target.display} ({key.get_name()} {fingerprint(key)})",
                    f"if that is your Pi, run `piorch trust {target.alias}` or add --accept-new-host-key",
                )
            record_host_key(target.known_hosts[0], print_name, key)
            client.get_host_keys().add(print_name, key.get_name(), key)

    return RecordOrRefuse()


def open_client(target: SshTarget, settings: SshSettings, _depth: int = 0) -> paramiko.SSHClient:
    """Connect and authenticate; every failure becomes a ConnectError or HostKeyError with its fix."""
    import paramiko

    client = paramiko.SSHClient()
    for path in target.known_hosts:
        if path.is_file():
            try:
                client.load_host_keys(str(path))
            except OSError as exc:
                raise ConnectError(f"cannot read {path} ({exc.strerror})", "check its permissions") from None
    client.set_missing_host_key_policy(_make_policy(target, settings.accept_new_host_key))
    sock: Any = None
    if target.proxy_jump and _depth < 4:
        jump = resolve_target(target.proxy_jump.split(",")[0], settings.ssh_config)
        jump_client = open_client(jump, settings, _depth + 1)
        transport = jump_client.get_transport()
        assert transport is not None
        sock = transport.open_channel("direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0),
                                      timeout=settings.connect_timeout)
    elif target.proxy_command:
        sock = paramiko.ProxyCommand(target.proxy_command)
    keys = [str(p) for p in target.identity_files if p.is_file()]
    try:
        client.connect(
            target.hostname, port=target.port, username=target.user, key_filename=keys or None,  # type: ignore[arg-type]
            look_for_keys=not target.identities_only, allow_agent=not target.identities_only,
            timeout=settings.connect_timeout, banner_timeout=settings.connect_timeout,
            auth_timeout=settings.connect_timeout, sock=sock,
        )
    except HostKeyError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"the host key of {target.display} has CHANGED (now {fingerprint(exc.key)}); refusing to connect",
            f"if the Pi was re-flashed, remove the old key with `ssh-keygen -R '{target.known_hosts_name}' "
            f"-f {shlex.quote(str(target.known_hosts[0]))}` and run `piorch trust {target.alias}`",
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise ConnectError(f"the Pi at {target.display} refused the login",
                           "install your key there with `ssh-copy-id` (or `piorch bootstrap`)") from None
    # EOFError: paramiko's word for a peer that reset the connection mid-handshake (a Pi rebooting).
    except (OSError, EOFError, paramiko.SSHException) as exc:
        client.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ConnectError(f"cannot reach the Pi at {target.display} ({reason})",
                           "check the cable and address; `piorch setup-link --check` tests the link") from None
    transport = client.get_transport()
    assert transport is not None
    # Keepalives keep NAT/firewall state warm; they never declare the peer dead (piorch watches that).
    transport.set_keepalive(5)
    return client


class SshHost:
    """A Pi reached over one SSH connection; every command is a new channel on it."""

    def __init__(self, client: paramiko.SSHClient, target: SshTarget) -> None:
        self._client = client
        self.target = target
        self.name = target.alias

    @classmethod
    def connect(cls, settings: SshSettings) -> SshHost:
        target = resolve_target(settings.target, settings.ssh_config)
        return cls(open_client(target, settings), target)

    def host_key_fingerprint(self) -> str:
        transport = self._client.get_transport()
        assert transport is not None
        return fingerprint(transport.get_remote_server_key())

    def start(self, command: str) -> Process:
        import paramiko

        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectError(f"the SSH connection to {self.name} is closed", "check the link and try again")
        try:
            channel = transport.open_session(timeout=10)
            channel.exec_command(command)
        except (paramiko.SSHException, OSError) as exc:
            raise ConnectError(f"cannot start a command on {self.name} ({exc})", "check the link") from None

        def read_out(size: int) -> bytes:
            return bytes(channel.recv(size))

        def read_err(size: int) -> bytes:
            return bytes(channel.recv_stderr(size))

        def exit_status(timeout: float) -> int | None:
            # recv_exit_status() has no timeout: wait on the event ourselves.
            if not channel.status_event.wait(timeout):
                return None
            return channel.exit_status

        return Process(read_out, read_err, exit_status, channel.close)

    def run(self, command: str, timeout: float) -> CommandResult:
        return run_to_end(self, command, timeout)

    def local_address(self) -> str | None:
        transport = self._client.get_transport()
        sock = transport.sock if transport is not None else None
        if isinstance(sock, socket.socket):
            return str(sock.getsockname()[0])
        return None  # through a jump host the local end of the link is not ours to see

    def peer_address(self) -> str | None:
        """The Pi's address as this laptop sees it: the only peer the receiver accepts."""
        transport = self._client.get_transport()
        sock = transport.sock if transport is not None else None
        if isinstance(sock, socket.socket):
            return str(sock.getpeername()[0])
        return None

    def close(self) -> None:
        self._client.close()


def fetch_host_key(target: SshTarget, timeout: float) -> paramiko.PKey:
    """Read the server's host key without logging in (for `piorch trust`)."""
    import paramiko

    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
    except OSError as exc:
        raise ConnectError(f"cannot reach {target.display} ({exc.strerror or exc})", "check the address") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except paramiko.SSHException as exc:
        raise ConnectError(f"{target.display} did not speak SSH ({exc})", "check the address and port") from None
    finally:
        transport.close()
