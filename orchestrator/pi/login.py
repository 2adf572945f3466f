"""Logging in to a Pi the first time: the laptop's key, a one-time password login, and telling a refused
login apart from an unreachable Pi.

The password is used for one paramiko connection and dropped: it is never written anywhere, never put in a
message, and never sent to anything but the Pi's sshd.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import ConnectError, HostKeyError, PiorchError
from orchestrator.pi.hostkey import fingerprint, read_known_hosts
from orchestrator.pi.target import SshTarget, login_name
from orchestrator.settings import SshSettings

if TYPE_CHECKING:
    import paramiko

# The names OpenSSH and paramiko try by themselves (look_for_keys), best first.
DEFAULT_KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")


def is_login_refused(exc: ConnectError) -> bool:
    """True when `ssh.open_host` failed because the Pi refused the login (not the link or the address).

    open_host turns every failure into a ConnectError with its own message; the paramiko exception it
    replaced stays on `__context__` (`raise ... from None` only hides it from tracebacks).
    """
    import paramiko

    cause = exc.__context__
    if isinstance(cause, paramiko.AuthenticationException):
        return True
    # No key file, no agent and no password: paramiko gives up before asking the Pi anything, and says so
    # only in this message (client.py, SSHClient._auth). For the user it is the same: no key works.
    return isinstance(cause, paramiko.SSHException) and "No authentication methods available" in str(cause)


@dataclass(frozen=True)
class LaptopKey:
    private: Path
    # One authorized_keys line: "ssh-ed25519 AAAA... comment".
    public_line: str
    created: bool


def pick_key_path(explicit: Path | None, target: SshTarget, ssh_dir: Path) -> Path:
    """The key bootstrap uses: --key, else the ssh config's IdentityFile, else an existing ~/.ssh/id_*,
    else ~/.ssh/id_ed25519 (to be created). Only the first of each list matters when none exists."""
    if explicit is not None:
        return explicit
    candidates = list(target.identity_files) or [ssh_dir / name for name in DEFAULT_KEY_NAMES]
    return next((path for path in candidates if path.is_file()), candidates[0])


def create_ed25519_key(path: Path, comment: str) -> str:
    """Write a new Ed25519 key pair in OpenSSH format (private 0600, never over an existing file).

    cryptography (a paramiko dependency) does it, so the laptop needs no ssh-keygen. No passphrase: piorch
    logs in unattended; the file is as private as ~/.ssh itself.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_EXCL: a key that appeared meanwhile is never overwritten.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    Path(f"{path}.pub").write_text(line + "\n", encoding="utf-8")
    return line


def read_public_line(private: Path) -> str:
    """The key's authorized_keys line, from KEY.pub (or from the private key when it has no passphrase)."""
    public = Path(f"{private}.pub")
    if public.is_file():
        line = public.read_text(encoding="utf-8").strip()
        if line and "\n" not in line:
            return line
        raise PiorchError(f"{public} is not a one-line public key", f"recreate it: ssh-keygen -y -f {private}")
    import paramiko

    try:
        key = paramiko.PKey.from_path(str(private))
    except (paramiko.SSHException, OSError, ValueError):
        raise PiorchError(f"cannot read the public half of {private}",
                          f"write it: ssh-keygen -y -f {private} > {public}") from None
    return f"{key.get_name()} {key.get_base64()}"


def ensure_laptop_key(path: Path) -> LaptopKey:
    if path.is_file():
        return LaptopKey(path, read_public_line(path), created=False)
    if path.exists():
        raise PiorchError(f"{path} exists but is not a file", "pass --key with another path")
    try:
        line = create_ed25519_key(path, f"piorch@{socket.gethostname()}")
    except OSError as exc:
        raise PiorchError(f"cannot create the key {path} ({exc.strerror})", "pass --key with another path") from None
    return LaptopKey(path, line, created=True)


def _password_login_failure(target: SshTarget, exc: BaseException, timeout: float) -> BaseException:
    """What a failed password login says: paramiko's exceptions in piorch's words, anything else as it is."""
    import paramiko

    from orchestrator.pi.ssh import failure_reason

    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(f"the host key of {target.display} has CHANGED (now {fingerprint(exc.key)})",
                            "refusing to send a password to it; see `piorch doctor`")
    if isinstance(exc, paramiko.AuthenticationException):
        return ConnectError(f"{target.display} refused the password for {login_name(target)}",
                            "check the user name (user@host) and the password set when the card was written")
    if isinstance(exc, (OSError, EOFError, paramiko.SSHException)):
        return ConnectError(f"cannot log in to {target.display} ({failure_reason(exc, timeout)})",
                            "check the link and try again")
    return exc


def open_password_client(target: SshTarget, settings: SshSettings, password: str) -> paramiko.SSHClient:
    """Log in once with a password; the host key must already be recorded (RejectPolicy otherwise)."""
    import paramiko

    if target.proxy_jump or target.proxy_command:
        raise ConnectError(f"a password login to {target.display} through a jump host is not supported",
                           f"install the key with `ssh-copy-id {target.alias}`, then run bootstrap again")
    from orchestrator.pi.ssh import dial, new_transport

    # Over piorch's own socket, not one paramiko opens: no SSH message of the login waits for a delayed ACK.
    sock = dial(target, settings.connect_timeout)
    client: paramiko.SSHClient | None = None
    try:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        read_known_hosts(target.known_hosts, target.known_hosts_name, client.get_host_keys())
        client.connect(
            target.hostname, port=target.port, username=login_name(target), password=password,
            # Only the password: the point is to get in where no key works yet.
            look_for_keys=False, allow_agent=False,
            timeout=settings.connect_timeout, banner_timeout=settings.connect_timeout,
            auth_timeout=settings.connect_timeout, sock=sock, transport_factory=new_transport,
        )
    except BaseException as exc:
        if client is not None:
            client.close()
        sock.close()
        failure = _password_login_failure(target, exc, settings.connect_timeout)
        if failure is exc:
            raise
        raise failure from None
    return client
