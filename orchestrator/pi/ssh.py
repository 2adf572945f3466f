"""The Pi over SSH (paramiko): the connection, through every jump host, and a Host whose commands are
channels of that one connection.

Host keys are strictly checked: an unknown key is refused unless the user said to record it
(`--accept-new-host-key`, `piorch trust`), a changed key is always refused, and there is no AutoAddPolicy.
The handshake runs in a worker thread while the caller watches its stop event, so Ctrl+C during a connection
that hangs (a Pi that accepts TCP and never speaks SSH) ends the wait at once: everything opened so far is
closed and `Interrupted` is raised, with nothing started on the Pi. paramiko is imported inside functions:
it costs about 250 ms, and `piorch --help` must stay instant.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.errors import ConnectError, HostKeyError, Interrupted
from orchestrator.pi.channel import ChannelProcess
from orchestrator.pi.host import CommandResult, Host, Process, run_to_end
from orchestrator.pi.hostkey import (
    HostKeyCheck,
    check_host_key,
    fingerprint,
    read_known_hosts,
    record_host_key,
    revoked_key_error,
    revoked_keys,
)
from orchestrator.pi.keys import kept_keys_client
from orchestrator.pi.mux import MuxHost, may_have_master, open_master_host
from orchestrator.pi.proxy import ProxyProcess
from orchestrator.pi.target import SshTarget, login_name, resolve_target
from orchestrator.settings import SshSettings

if TYPE_CHECKING:
    import paramiko

T = TypeVar("T")

# OpenSSH sets no limit, but a chain this long is a loop in the config (a `Host *` entry with a ProxyJump
# that does not exclude the jump host itself).
MAX_HOPS = 8
# How often the caller looks at its stop event while the handshake runs in the worker.
STOP_POLL_S = 0.05
# After a stop, how long the worker gets to notice its closed sockets; it is a daemon thread either way, and
# whatever it opens after the stop is closed at once (see _Opened.add).
ABORT_JOIN_S = 1.0
# How long a held login thread (PendingHost(hold=True)) waits for its work: the caller gives it within
# milliseconds, after its imports; past this the thread ends and the work gets a thread of its own.
HOLD_S = 30.0
# Keepalives keep NAT/firewall state warm; they never declare the peer dead (piorch watches that itself).
KEEPALIVE_S = 5
# How long paramiko's transport thread waits for the Pi's next message once logged in, before it looks at its
# own flags (keepalive due, a rekey asked for by a send) and waits again. paramiko's 0.1 s woke each Pi's
# thread 10 times a second for nothing while the Pi was quiet (~3 ms of CPU a second a Pi here, timer wake-ups
# from an idle CPU being the dear ones); a close no longer waits for it (PromptSocket.close).
IDLE_WAKE_S = 1.0
LINK_FIX = "check the cable and address; `piorch setup-link --check` tests the link"
JUMP_FIX = "check that jump host and the ProxyJump line in the SSH config"


class _Abandoned(Exception):
    """The caller stopped waiting: the worker unwinds without opening anything more."""


def _close_quietly(item: Any) -> None:
    import paramiko

    if isinstance(item, socket.socket):
        # shutdown wakes a thread blocked reading it (paramiko's transport thread); close alone does not.
        with contextlib.suppress(OSError):
            item.shutdown(socket.SHUT_RDWR)
    # Closing what is already broken may fail in any of these ways; the point is only that it is closed.
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        item.close()


class _Opened:
    """Everything one connection opened, in order (sockets, ProxyCommands, jump host clients, tunnels), so
    that a failure, a stop or SshHost.close closes all of it, last opened first, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._closed = False

    def add(self, item: T) -> T:
        with self._lock:
            if not self._closed:
                self._items.append(item)
                return item
        _close_quietly(item)
        raise _Abandoned()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            items, self._items = self._items[::-1], []
        for item in items:
            _close_quietly(item)


def _named(target: SshTarget, jump: bool) -> str:
    if not jump:
        return f"the Pi at {target.display}"
    if target.alias in (target.display, target.hostname):
        return f"the jump host {target.display}"
    return f"the jump host {target.alias} at {target.display}"


def failure_reason(exc: BaseException | None, timeout: float) -> str:
    """A failure in a few words, for the end of a one-line message."""
    import paramiko

    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, paramiko.ChannelException):
        return exc.text
    if isinstance(exc, EOFError):
        # paramiko's word for a peer that reset the connection mid-handshake (a Pi rebooting).
        return "the connection closed during the SSH handshake"
    text = str(exc)
    # paramiko's two ways of saying that no SSH greeting came in time (which one depends on a race between
    # its banner timeout and its handshake timeout).
    if "protocol banner" in text or text == "No existing session":
        return f"no SSH greeting within {timeout:g} s"
    return text or type(exc).__name__


def _make_policy(target: SshTarget, accept_new: bool, jump: bool) -> Any:
    import paramiko

    who = _named(target, jump)
    what = "jump host" if jump else "Pi"

    class RecordOrRefuse(paramiko.MissingHostKeyPolicy):
        """Unknown key: refuse with the fix, or record it when the user asked for exactly that. A key that a
        `@revoked` line marks (left out of the table, so it comes here as unknown) is refused either way,
        before the login."""

        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            if key.asbytes() in revoked_keys(target.known_hosts, target.known_hosts_name):
                raise revoked_key_error(who, key, target.known_hosts)
            print_name = target.known_hosts_name
            if not accept_new:
                raise HostKeyError(
                    f"unknown host key for {who} ({key.get_name()} {fingerprint(key)})",
                    f"if that is your {what}, run `piorch trust {target.alias}`"
                    + ("" if jump else " or add --accept-new-host-key"),
                )
            record_host_key(target.known_hosts[0], print_name, key)
            client.get_host_keys().add(print_name, key.get_name(), key)

    return RecordOrRefuse()


class PromptSocket(socket.socket):
    """A TCP connection to an sshd on which no SSH message waits for a timer: each is sent at once
    (TCP_NODELAY, set by `_dial`) and each arrival is acknowledged at once (TCP_QUICKACK after every read;
    Linux clears it by itself, so it is set again each time).

    An SSH login is a string of small messages, each answering the last. Left to TCP's defaults, two of
    them waited ~40 ms each for a delayed acknowledgement (benchmarks/startup.py, `authentication` and the
    pipeline's start): the login request behind the unacknowledged NEWKEYS (Nagle's algorithm here), and
    the sshd's answer to the session's CHANNEL_OPEN behind its own unacknowledged post-login messages
    (hostkeys-00@openssh.com, the authorized_keys debug lines; sshd turns Nagle off only once a session
    runs). OpenSSH's own client waits for the second too. The reads are few: status lines, not the video.

    Each read also takes whatever has arrived (up to READ_AHEAD) and hands it out as paramiko asks:
    paramiko reads a packet's first block, then its rest, one recv each, and a recv with a timeout is two
    system calls (poll, then recv) that each let go of the GIL. With several Pis starting at once, every
    such let-go is a hand-over between their threads, so the rest of a packet, and the packets that came
    with it, are taken from what the first read brought. paramiko reads this socket only through `recv`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # What the last read brought beyond what was asked for, and how much of it is handed out.
        self._held = b""
        self._held_at = 0
        # Held from reading the descriptor's number to the end of the write, and by close(): a close by
        # another thread in between (paramiko's transport sends while its owner closes) would free the
        # number for the next connection opened, which the write would then corrupt.
        self._writing = threading.Lock()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if held := self._held:
            start = self._held_at
            data = held[start:start + bufsize]
            self._held_at = start + len(data)
            if self._held_at == len(held):
                self._held = b""
            return data
        data = super().recv(max(bufsize, READ_AHEAD), flags)
        if _QUICKACK is not None:
            with contextlib.suppress(OSError):
                self.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        if len(data) > bufsize:
            self._held, self._held_at = data, bufsize
            return data[:bufsize]
        return data

    def send(self, data: Any, flags: int = 0) -> int:
        # A send with a timeout polls for room first: one system call and one GIL let-go more per message,
        # for room there nearly always is. Where there is none, the usual way waits for it.
        if not flags:
            with self._writing:
                descriptor = self.fileno()
                if descriptor >= 0:
                    with contextlib.suppress(BlockingIOError):
                        return os.write(descriptor, data)
        return super().send(data, flags)

    def close(self) -> None:
        with self._writing:
            # A shutdown first wakes a read waiting on this socket in another thread (paramiko's transport
            # thread, IDLE_WAKE_S): it reads the end at once. A close alone would leave it waiting.
            with contextlib.suppress(OSError):
                self.shutdown(socket.SHUT_RDWR)
            super().close()


# Where the system has it (Linux); elsewhere the acknowledgements keep the system's timing.
_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
# What one read of the Pi's connection takes at most: more than a login's packets together.
READ_AHEAD = 32 * 1024


@functools.cache
def _deadline_packetizer() -> type:
    """paramiko's Packetizer, its handshake deadline kept as a time instead of a `threading.Timer`.

    paramiko starts a Timer thread at every connection's handshake (15 s, `Transport.handshake_timeout`),
    only to set a flag that its reads look at when they time out (every 0.1 s), and cancels it once the
    keys are exchanged: a thread started, woken and ended a connection, while a fleet's Pis all start at
    once. Here the same reads compare the clock with the deadline instead: the same answer at the same
    moments, without the thread."""
    from paramiko.packet import Packetizer

    class DeadlinePacketizer(Packetizer):
        _deadline: float | None = None
        _handshaken = False

        def start_handshake(self, timeout: float) -> None:
            if self._deadline is None:
                self._deadline = time.monotonic() + float(timeout)

        def handshake_timed_out(self) -> bool:
            return self._deadline is not None and not self._handshaken and time.monotonic() >= self._deadline

        def complete_handshake(self) -> None:
            if self._deadline is not None:
                self._handshaken = True

    return DeadlinePacketizer


# Asked for first, where this paramiko has them (since paramiko 3.5): authenticated encryption, one
# call into the cryptography library a packet, where paramiko's first choice (aes128-ctr with hmac-sha2-256)
# adds an HMAC object and a byte-by-byte comparison in Python to each packet. Every message of the login and
# every batch of camera timestamps after it pays that: ~0.1 ms less CPU a login (benchmarks/README.md, ninth
# round). A server without GCM (dropbear) agrees on paramiko's next choice as before. OpenSSH's own client
# prefers chacha20-poly1305, which paramiko does not have.
AEAD_CIPHERS: tuple[str, ...] = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def prefer_aead(ciphers: tuple[str, ...]) -> tuple[str, ...]:
    """paramiko's cipher order with the AEAD_CIPHERS it knows put first."""
    first = tuple(name for name in AEAD_CIPHERS if name in ciphers)
    return (*first, *(name for name in ciphers if name not in first))


def new_transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """SSHClient.connect's `transport_factory`: paramiko's Transport with `_deadline_packetizer`'s packets,
    asking for AES-GCM first (AEAD_CIPHERS)."""
    import paramiko

    transport = paramiko.Transport(sock, packetizer_class=_deadline_packetizer(), **kwargs)
    options = transport.get_security_options()
    options.ciphers = prefer_aead(tuple(options.ciphers))
    return transport


def _dial(target: SshTarget, jump: bool, timeout: float, opened: _Opened) -> socket.socket:
    """A TCP connection to the target's sshd, trying each address its name has (IPv6 and IPv4)."""
    who = _named(target, jump)
    fix = JUMP_FIX if jump else LINK_FIX
    try:
        addresses = socket.getaddrinfo(target.hostname, target.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectError(f"cannot reach {who} ({failure_reason(exc, timeout)})", fix) from None
    failure: OSError | None = None
    for family, kind, proto, _, address in addresses:
        sock = opened.add(PromptSocket(family, kind, proto))
        with contextlib.suppress(OSError):  # only the timing is lost without it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            failure = exc
            sock.close()  # the next address is tried; this one is done with (closing it again is harmless)
    raise ConnectError(f"cannot reach {who} ({failure_reason(failure, timeout)})", fix)


def dial(target: SshTarget, timeout: float) -> socket.socket:
    """A TCP connection straight to the target's sshd (its jump hosts left aside), as prompt as every login's
    (PromptSocket): for a login that paramiko runs on it itself, such as bootstrap's password login."""
    opened = _Opened()
    try:
        return _dial(target, False, timeout, opened)
    except BaseException:
        opened.close()
        raise


def _tunnel(via: tuple[paramiko.SSHClient, str], target: SshTarget, jump: bool, timeout: float,
            opened: _Opened) -> paramiko.Channel:
    """A connection to the target's sshd opened by the jump host `via` (what `ssh -W` does)."""
    import paramiko

    client, via_who = via
    who = _named(target, jump)
    transport = client.get_transport()
    assert transport is not None
    try:
        channel = transport.open_channel("direct-tcpip", (target.hostname, target.port), ("127.0.0.1", 0),
                                         timeout=timeout)
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise ConnectError(f"{via_who} cannot connect on to {who} ({failure_reason(exc, timeout)})",
                           "check that address from the jump host, and that its sshd allows TCP forwarding "
                           "(AllowTcpForwarding)") from None
    return opened.add(channel)


def _reach(target: SshTarget, settings: SshSettings, opened: _Opened, jump: bool, depth: int = 0) -> Any:
    """A stream to the target's sshd: a TCP socket, a ProxyCommand, or a channel through the last jump host.

    `ProxyJump a,b` goes as `ssh -J a,b` does: `a` is reached as its own config says (it may have a
    ProxyJump of its own), `b` through `a` and the target through `b`, whatever their own configs say.
    """
    hops = target.jump_hops
    if hops:
        if depth + len(hops) > MAX_HOPS:
            raise ConnectError(f"more than {MAX_HOPS} jump hosts on the way to {target.alias}",
                               "check ProxyJump in the SSH config: a `Host *` entry with a ProxyJump loops unless "
                               "it leaves the jump host out (`Host * !jumphost`)")
        first = resolve_target(hops[0], settings.ssh_config)
        via = _login(first, settings, opened, _reach(first, settings, opened, True, depth + len(hops)), jump=True)
        for name in hops[1:]:
            hop = replace(resolve_target(name, settings.ssh_config), proxy_jump=None, proxy_command=None)
            via = _login(hop, settings, opened, _tunnel(via, hop, True, settings.connect_timeout, opened), jump=True)
        return _tunnel(via, target, jump, settings.connect_timeout, opened)
    if target.proxy_command:
        try:
            return opened.add(ProxyProcess(target.proxy_command))
        except OSError as exc:
            raise ConnectError(f"cannot start the ProxyCommand for {target.alias} ({exc.strerror or exc})",
                               "check ProxyCommand in the SSH config") from None
    return _dial(target, jump, settings.connect_timeout, opened)


def _proxy_ended(sock: Any, who: str) -> ConnectError | None:
    """A ProxyCommand that ended under the handshake, in its own words, whatever paramiko made of it."""
    if isinstance(sock, ProxyProcess) and (ended := sock.ended()) is not None:
        return ConnectError(f"cannot reach {who}: its ProxyCommand ended ({ended})",
                            "check ProxyCommand in the SSH config; `ssh -v` with that config shows more")
    return None


def _login(target: SshTarget, settings: SshSettings, opened: _Opened, sock: Any,
           jump: bool) -> tuple[paramiko.SSHClient, str]:
    """SSH over `sock`: handshake, host key, login. Every failure becomes a ConnectError or HostKeyError
    with its fix; the paramiko exception stays on `__context__` (login.is_login_refused reads it)."""
    import paramiko

    who = _named(target, jump)
    timeout = settings.connect_timeout
    client = opened.add(kept_keys_client()())
    read_known_hosts(target.known_hosts, target.known_hosts_name, client.get_host_keys())
    # Only the Pi's key is recorded on request; a jump host's key is vouched for by the user's own known_hosts.
    client.set_missing_host_key_policy(_make_policy(target, settings.accept_new_host_key and not jump, jump))
    keys = [str(p) for p in target.identity_files if p.is_file()]
    try:
        client.connect(
            target.hostname, port=target.port, username=login_name(target), key_filename=keys or None,  # type: ignore[arg-type]
            look_for_keys=not target.identities_only, allow_agent=not target.identities_only,
            timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, sock=sock,
            transport_factory=new_transport,
        )
    except HostKeyError:
        raise
    except paramiko.BadHostKeyException as exc:
        raise HostKeyError(
            f"the host key of {who} has CHANGED (now {fingerprint(exc.key)}); refusing to connect",
            f"if it was re-flashed, remove the old key with `ssh-keygen -R '{target.known_hosts_name}' "
            f"-f {shlex.quote(str(target.known_hosts[0]))}` and run `piorch trust {target.alias}`",
        ) from None
    except paramiko.AuthenticationException:
        raise ConnectError(f"{who} refused the login",
                           "install your key there with `ssh-copy-id` (or `piorch bootstrap`)") from None
    except (OSError, EOFError, paramiko.SSHException) as exc:
        if (ended := _proxy_ended(sock, who)) is not None:
            raise ended from None
        raise ConnectError(f"cannot reach {who} ({failure_reason(exc, timeout)})",
                           JUMP_FIX if jump else LINK_FIX) from None
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(KEEPALIVE_S)
    # Logged in: the handshake's deadline (read at each wake-up) is behind it.
    transport.sock.settimeout(IDLE_WAKE_S)
    return client, who


def _log_in(target: SshTarget, settings: SshSettings, opened: _Opened) -> SshHost:
    """The connection and the login, on the calling thread; whatever it opened is closed when it fails."""
    login_name(target)  # no user to log in as: said before anything is reached (a jump host's at its own turn)
    try:
        client, _ = _login(target, settings, opened, _reach(target, settings, opened, jump=False), jump=False)
        return SshHost(client, target, opened)
    except BaseException:
        opened.close()
        raise


def _interrupted(target: SshTarget) -> Interrupted:
    return Interrupted(f"interrupted while connecting to {_named(target, jump=False)}", "nothing was started on the Pi")


def open_host(target: SshTarget, settings: SshSettings, stop: threading.Event | None = None) -> SshHost:
    """Connect and log in to the target (through its jump hosts); raises ConnectError or HostKeyError with
    the fix, or Interrupted when `stop` is set first. Ctrl+C (KeyboardInterrupt) ends the wait as well.

    Whatever way it ends without a host, every connection it opened (jump hosts included) is closed.
    """
    opened = _Opened()
    outcome: list[SshHost | BaseException] = []

    def work() -> None:
        try:
            outcome.append(_log_in(target, settings, opened))
        except BaseException as exc:  # handed over to the caller's thread, which raises it
            outcome.append(exc)

    worker = threading.Thread(target=work, name=f"piorch-connect-{target.alias}", daemon=True)
    try:
        worker.start()
        while worker.is_alive() and not (stop is not None and stop.is_set()):
            worker.join(STOP_POLL_S)
        if stop is not None and stop.is_set():
            raise _interrupted(target)
    except BaseException:
        opened.close()
        worker.join(ABORT_JOIN_S)
        raise
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


class SshHost:
    """A Pi reached over one SSH connection; every command is a new channel on it."""

    def __init__(self, client: paramiko.SSHClient, target: SshTarget, opened: _Opened | None = None) -> None:
        self._client = client
        # Jump host connections and the like, closed with the client.
        self._opened = opened
        self.target = target
        self.name = target.alias

    @classmethod
    def connect(cls, settings: SshSettings, stop: threading.Event | None = None) -> SshHost:
        """`open_host` for the settings' target: Interrupted when `stop` is set before the login is done."""
        return open_host(resolve_target(settings.target, settings.ssh_config), settings, stop)

    def host_key_fingerprint(self) -> str:
        transport = self._client.get_transport()
        assert transport is not None
        return fingerprint(transport.get_remote_server_key())

    def identity(self) -> str:
        """Who and where this Pi is, for what piorch keeps about it (pi/probe_memory.py): the login, the
        address, the port, the hops and the host key. Another Pi on the same address has another key."""
        target = self.target
        hops = target.proxy_jump or target.proxy_command or ""
        return f"{target.user or ''}@{target.hostname}:{target.port} via {hops} key {self.host_key_fingerprint()}"

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
        return ChannelProcess(channel)

    def run(self, command: str, timeout: float, stop: threading.Event | None = None) -> CommandResult:
        return run_to_end(self, command, timeout, stop)

    def _socket(self) -> socket.socket | None:
        transport = self._client.get_transport()
        sock = transport.sock if transport is not None else None
        # Through a jump host or a ProxyCommand the link's ends are not ours to see.
        return sock if isinstance(sock, socket.socket) else None

    def local_address(self) -> str | None:
        sock = self._socket()
        return None if sock is None else str(sock.getsockname()[0])

    def peer_address(self) -> str | None:
        """The Pi's address as this laptop sees it: the only peer the receiver accepts."""
        sock = self._socket()
        return None if sock is None else str(sock.getpeername()[0])

    def close(self) -> None:
        self._client.close()
        if self._opened is not None:
            self._opened.close()


def check_host_key_on_the_way(target: SshTarget, settings: SshSettings) -> tuple[HostKeyCheck, paramiko.PKey]:
    """hostkey.check_host_key, reaching the Pi's sshd as a connection does: through its jump hosts (each
    one's own key checked, as for a login) or its ProxyCommand, directly otherwise. Everything it opened is
    closed again before it returns."""
    if not (target.jump_hops or target.proxy_command):
        return check_host_key(target, settings.connect_timeout)
    opened = _Opened()
    try:
        stream = _reach(target, settings, opened, jump=False)
        try:
            return check_host_key(target, settings.connect_timeout, stream)
        except ConnectError:
            if (ended := _proxy_ended(stream, target.display)) is not None:
                raise ended from None
            raise
    finally:
        opened.close()


def connect_pi(settings: SshSettings, stop: threading.Event | None = None, verify: bool = False) -> Host:
    """The Pi: through the user's own open OpenSSH ControlMaster when the ssh_config names one for it
    (pi/mux.py: no connection to open, no paramiko), else over a connection of piorch's own. `verify`
    (reconnecting after a link loss): the master only if a command gets through it."""
    master = open_master_host(settings, verify)
    return master if master is not None else SshHost.connect(settings, stop)


class PendingHost:
    """A connection begun now on a thread of its own, so the caller can do other work (imports, the display)
    while the Pi answers; `result()` waits for the host or raises what connecting raised (a bad ssh_config
    too: nothing raises before `result()`).

    The ssh_config lookup (and with it paramiko's import) happens first, in the caller's thread: it is CPU
    work, which a thread would only share with the caller's imports under the GIL, delaying the connection
    by as much. Started right after it, the connection's waits (TCP, key exchange, authentication) then
    overlap the caller's imports: about 70 ms sooner to the first byte here (benchmarks/startup.py). The
    thread logs in itself (one thread a Pi, not a second one to watch it, as open_host has): whoever waits
    in `result()` watches the stop event and, when it is set, closes what the login opened, which ends its
    waits. Where the config may name a ControlMaster, the thread asks `ssh -G` for it (a process to wait
    for) and connects as connect_pi does."""

    def __init__(self, settings: SshSettings, stop: threading.Event | None = None,
                 master_possible: bool | None = None, hold: bool = False, learn_addresses: bool = True) -> None:
        """`master_possible`: mux.may_have_master(settings), when the caller already knows it (several Pis
        of one ssh_config share the answer: it reads files, not the target). `hold`: after the login the
        thread waits (up to HOLD_S) for the work continue_with will give it, instead of ending.
        `learn_addresses`: through a master, ask the link's addresses right away (the caller will need them:
        RecordSettings.needs_link_addresses)."""
        self._outcome: list[Host | BaseException] = []
        self._thread: threading.Thread | None = None
        self._stop = stop
        # The login's own sockets and clients (None through a ControlMaster, where connect_pi watches `stop`).
        self._opened: _Opened | None = None
        self._target: SshTarget | None = None
        self._abandoned = False
        # Set once the login has ended, with its outcome in `_outcome`.
        self._done = threading.Event()
        # continue_with: the work this thread runs after the login, whether the thread will still take it,
        # and the wake-up of a held thread (given work, or abandoned).
        self._lock = threading.Lock()
        self._then: Callable[[], None] | None = None
        self._takes_work = True
        self._hold = hold
        self._learn_addresses = learn_addresses
        self._given = threading.Event()
        work: Callable[[], Host]
        if may_have_master(settings) if master_possible is None else master_possible:
            work = functools.partial(connect_pi, settings, stop)
        else:
            try:
                self._target = resolve_target(settings.target, settings.ssh_config)
            except Exception as exc:  # said by result(), where one Pi's failure is that Pi's alone
                self._outcome.append(exc)
                self._done.set()
                return
            self._opened = _Opened()
            work = functools.partial(_log_in, self._target, settings, self._opened)
        self._thread = threading.Thread(target=self._connect, args=(work,), daemon=True,
                                        name=f"piorch-pending-{settings.target}")
        self._thread.start()

    def _connect(self, work: Callable[[], Host]) -> None:
        try:
            self._outcome.append(work())
        except BaseException as exc:  # raised in the caller's thread by result()
            self._outcome.append(exc)
        self._done.set()
        host = self._outcome[0]
        stopped = self._stop is not None and self._stop.is_set()
        if self._learn_addresses and isinstance(host, MuxHost) and not self._abandoned and not stopped:
            # Through a master, this laptop's address as the Pi sees it (what record's receiver binds and nc
            # dials) is one more command, `ssh -S` and a shell on the Pi: ~17 ms here. Asked now, it overlaps
            # the caller's imports; the caller asking meanwhile waits for this one answer (MuxHost._ends).
            # Not an answer this thread needs: a failure keeps nothing, so the caller asks again and meets it there.
            with contextlib.suppress(Exception):
                host.learn_addresses(self._stop)
        if self._hold:
            self._given.wait(HOLD_S)
        with self._lock:
            self._takes_work = False
            then, self._then = self._then, None
        if then is not None:
            then()

    def continue_with(self, then: Callable[[], None], name: str) -> threading.Thread:
        """Run `then` (which takes the host with result()) on the login's own thread once the login has
        ended, or on a new thread named `name` where that thread has gone: the thread to join either way.

        One thread a Pi instead of two, and no hand-over between them: a fleet's Pis start at once and
        their Python shares one core (the GIL), so each Pi's threads and wake-ups delay the others. A login
        is often done before its work is given (the caller imports the recorder meanwhile): `hold` keeps the
        thread for it. Nobody waits in result() during the login, so whoever sees the stop event calls
        interrupt_login()."""
        with self._lock:
            if self._thread is not None and self._takes_work:
                self._then = then
                self._given.set()
                return self._thread
        thread = threading.Thread(target=then, name=name, daemon=True)
        thread.start()
        return thread

    def interrupt_login(self) -> None:
        """The stop event is set: a login still under way is cut short (what it opened is closed), and
        result() then says Interrupted. A host already logged in is left to its user, who sees the event."""
        if not self._done.is_set() and self._opened is not None:
            self._opened.close()

    def _stopped(self) -> bool:
        return self._opened is not None and self._stop is not None and self._stop.is_set()

    def _on_own_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def result(self) -> Host:
        """The host; Interrupted (everything the login opened closed) when the stop event is set first, even
        if the login had just succeeded: nothing has been started on the Pi yet either way."""
        # Short waits: Ctrl+C reaches the waiting thread between them, and a stop is seen within one.
        while not self._done.is_set() and not self._stopped():
            self._done.wait(STOP_POLL_S)
        if self._stopped():
            self.abandon()
            assert self._target is not None
            raise _interrupted(self._target)
        outcome = self._outcome[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def abandon(self) -> None:
        """The caller gave up first: the stop event is set (it ends a ControlMaster lookup's waits), what the
        login opened is closed (it ends the handshake's), and the connection is closed once it is there."""
        if self._abandoned:
            return  # result() gave up already; the caller's own clean-up need not wait a second time
        self._abandoned = True
        if self._stop is not None:
            self._stop.set()
        if self._opened is not None:
            self._opened.close()
        self._given.set()  # a held thread has no work coming
        if self._thread is not None and not self._on_own_thread():
            self._thread.join(ABORT_JOIN_S)
        if self._outcome and not isinstance(self._outcome[0], BaseException):
            self._outcome[0].close()
