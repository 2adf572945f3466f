"""A real OpenSSH sshd on loopback that plays "the Pi" in end-to-end tests.

Everything lives in one temporary directory: host key, user key, authorized_keys, sshd_config, the
client-side ssh_config and known_hosts, the sshd log, a `bin/` directory that is first on PATH for every
remote command (tests drop camera stand-in scripts there) and a scratch `home/`. Nothing reads or writes
the real ~/.ssh or /etc/ssh, and the server listens on 127.0.0.1 only.

How the remote environment is pinned (verified on Debian 12, OpenSSH 9.2, bash 5.2, as root and as a user):
`SetEnv PATH=...` alone is NOT enough. sshd runs every command as `<login shell> -c CMD`, and Debian's
bash is built with SSH_SOURCE_BASHRC, so it sources ~/.bashrc for sshd-started commands; on the dev
machine root's ~/.bashrc prepends pyenv and cargo directories, giving
`/root/.cargo/bin:...:/root/.pyenv/bin:<bin_dir>:/usr/local/bin:/usr/bin:/bin` (and ~100 ms of
`pyenv init` per command). zsh users have the same problem with ~/.zshenv. So two things are done:
  1. SetEnv also sets HOME to the scratch home, so the login shell looks for its rc files there (there are
     none) instead of in the developer's real home.
  2. ForceCommand runs a small wrapper script that re-exports PATH, HOME and the extra variables AFTER
     whatever the login shell's startup files did, cd's to HOME and then execs
     `bash --norc -c "$SSH_ORIGINAL_COMMAND"`. The command string therefore runs exactly as given, in bash
     as on Raspberry Pi OS, with the same exit status and streams (exec, no extra process left).
The SFTP subsystem goes through the same wrapper, so it is configured as the external sftp-server binary
(ForceCommand would turn `internal-sftp` into a shell command that does not exist).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

LOOPBACK = "127.0.0.1"
DEFAULT_ALIAS = "testpi"
# The shell remote commands run in: the Pi's login shell is bash, so the tests use bash too.
SESSION_SHELL = "/bin/bash"
# sshd as root refuses to start without its compiled-in privilege separation directory (Debian: /run/sshd,
# normally created by the systemd unit, which does not run in containers or CI).
PRIVSEP_DIR = Path("/run/sshd")
SFTP_SERVER_CANDIDATES = (
    "/usr/lib/openssh/sftp-server",  # Debian, Ubuntu
    "/usr/libexec/openssh/sftp-server",  # Fedora, RHEL
    "/usr/lib/ssh/sftp-server",  # Arch
    "/usr/libexec/sftp-server",  # macOS, BSD
)

# 10 s covers a loaded 2-core CI machine; a healthy start takes well under 0.1 s.
START_TIMEOUT_S = 10.0
# sshd exits on SIGTERM at once; 5 s only matters if it is stopped (SIGSTOP) or the machine is swapping.
STOP_TIMEOUT_S = 5.0
# A random free port can be taken by someone else between our probe and sshd's bind; a few tries suffice.
BIND_ATTEMPTS = 5
# ssh-keygen for ed25519 is instant; the deadline only guards against a hung binary.
KEYGEN_TIMEOUT_S = 15.0

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Paths go into sshd_config / ssh_config unquoted; anything outside this set would need config quoting.
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./+-]+\Z")
_RESERVED_ENV = frozenset({"PATH", "HOME"})


class SshServerError(RuntimeError):
    """sshd could not be started, or was used in a state that does not allow it."""


@dataclass(frozen=True)
class SshServerInfo:
    """Everything a test needs to reach the fake Pi.

    host/port/user: where to connect; user is the current (effective) user, the only one an unprivileged
    sshd can log in. user_key: private ed25519 key without passphrase. known_hosts: holds the host key for
    `[127.0.0.1]:PORT`. ssh_config: OpenSSH client config with a `Host <alias>` entry (use `ssh -F`).
    bin_dir: first on PATH of every command run through this sshd. home: HOME and working directory of
    every remote command, a scratch directory for the test. host_key_fingerprint: `SHA256:...` as
    `ssh-keygen -lf` prints it.
    """

    host: str
    port: int
    user: str
    user_key: Path
    known_hosts: Path
    ssh_config: Path
    bin_dir: Path
    home: Path
    host_key_fingerprint: str
    alias: str = DEFAULT_ALIAS


class SshServerFactory(Protocol):
    """What the `sshd_factory` fixture returns: starts one more independent server per call."""

    def __call__(self, extra_env: Mapping[str, str] | None = None, *, alias: str = DEFAULT_ALIAS) -> SshServer: ...


def sshd_path() -> str | None:
    """Absolute path of the sshd binary, or None. sshd refuses to run from a relative path (it re-execs
    itself), and /usr/sbin is often missing from a normal user's PATH, so it is tried first."""
    default = Path("/usr/sbin/sshd")
    if os.access(default, os.X_OK):
        return str(default)
    found = shutil.which("sshd")
    return os.path.abspath(found) if found else None


def _require_sshd() -> str:
    sshd = sshd_path()
    if sshd is None:
        raise SshServerError("sshd not found: install openssh-server")
    return sshd


def find_sftp_server() -> str | None:
    for candidate in SFTP_SERVER_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def build_session_env(bin_dir: Path, home: Path, extra_env: Mapping[str, str]) -> dict[str, str]:
    """The environment every remote command sees (on top of what sshd sets itself: USER, SSH_*...)."""
    for name, value in extra_env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"extra_env: {name!r} is not a valid environment variable name")
        if name in _RESERVED_ENV:
            raise ValueError(f"extra_env: {name} is set by the fixture (put tools in bin_dir instead)")
        if "\n" in value or "\0" in value:
            raise ValueError(f"extra_env: the value of {name} must be a single line")
    env = {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home)}
    env.update(extra_env)
    return env


def _setenv_arg(name: str, value: str) -> str:
    # sshd splits SetEnv arguments like a shell-lite: double quotes group, backslash escapes " and \.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{name}={escaped}"'


def build_sshd_config(
    *,
    port: int,
    host_key: Path,
    pid_file: Path,
    authorized_keys: Path,
    session_env: Mapping[str, str],
    wrapper: Path,
    sftp_server: str | None,
    options: Mapping[str, str] | None = None,
) -> str:
    """`options`: more sshd_config keywords (e.g. AllowTcpForwarding), only ones not set here: sshd takes the
    first value of a keyword, so a repeated one would be silently ignored."""
    setenv = " ".join(_setenv_arg(name, value) for name, value in session_env.items())
    lines = [
        "# Generated by tests/sshd_server.py for one test; it reads nothing from /etc/ssh or ~/.ssh.",
        f"ListenAddress {LOOPBACK}:{port}",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        f"AuthorizedKeysFile {authorized_keys}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "UsePAM no",
        # The temp dir's owner/modes are not what StrictModes expects of a home directory.
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        # ~/.ssh/rc and ~/.ssh/environment would be read from the real home directory.
        "PermitUserRC no",
        "PermitUserEnvironment no",
        "X11Forwarding no",
        "PrintMotd no",
        "PrintLastLog no",
        "UseDNS no",
        # VERBOSE logs accepted keys by fingerprint: enough to debug an auth failure, no secrets.
        "LogLevel VERBOSE",
        # No AcceptEnv line: the client cannot change the remote environment.
        f"SetEnv {setenv}",
        # See the module docstring: the login shell's rc files may rewrite PATH after SetEnv.
        f"ForceCommand {shlex.quote(str(wrapper))}",
    ]
    if sftp_server is not None:
        lines.append(f"Subsystem sftp {sftp_server}")
    for keyword, value in (options or {}).items():
        if any(line.split(" ")[0].lower() == keyword.lower() for line in lines):
            raise ValueError(f"sshd option {keyword} is set by the fixture already")
        lines.append(f"{keyword} {value}")
    return "\n".join(lines) + "\n"


def build_session_wrapper(session_env: Mapping[str, str], shell: str = SESSION_SHELL) -> str:
    exports = "\n".join(f"{name}={shlex.quote(value)}; export {name}" for name, value in session_env.items())
    return f"""#!/bin/sh
# Generated by tests/sshd_server.py; sshd runs it (ForceCommand) for every session. It runs after the
# login shell's startup files, so the environment below wins over anything ~/.bashrc or ~/.zshenv did.
{exports}
# sshd started the login shell in the real home directory; the command must start in the scratch one.
cd "$HOME" || exit 125
unset OLDPWD
if [ -z "${{SSH_ORIGINAL_COMMAND+set}}" ]; then
    # No command: the client asked for a shell (ssh -t testpi).
    exec {shell} --norc
fi
# A real Pi has no SSH_ORIGINAL_COMMAND (it only exists under ForceCommand); hide it from the command.
command_line=$SSH_ORIGINAL_COMMAND
unset SSH_ORIGINAL_COMMAND
# --norc: bash also sources ~/.bashrc when it sees SSH_CLIENT and SHLVL < 2, as the login shell did.
exec {shell} --norc -c "$command_line"
"""


def build_client_config(*, alias: str, port: int, user: str, user_key: Path, known_hosts: Path) -> str:
    return f"""# Generated by tests/sshd_server.py. Use with `ssh -F THIS_FILE {alias}`; -F also stops ssh from
# reading /etc/ssh/ssh_config and ~/.ssh/config, so the developer's own settings cannot leak in.
Host {alias}
    HostName {LOOPBACK}
    Port {port}
    User {user}
    IdentityFile {user_key}
    IdentitiesOnly yes
    # The developer's ssh-agent must not take part: only the test key may log in.
    IdentityAgent none
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    # Keep known_hosts exactly as written (OpenSSH would otherwise add keys the server advertises).
    UpdateHostKeys no
    BatchMode yes
    ControlMaster no
    ControlPath none
    # A hung server must fail the test, not hang it.
    ConnectTimeout 5
"""


def _safe_config_path(path: Path) -> Path:
    if not _SAFE_PATH.match(str(path)):
        raise SshServerError(
            f"temporary directory {path} contains characters that sshd_config would need quoted; "
            "set TMPDIR to a plain path such as /tmp"
        )
    return path


def _run_keygen(args: list[str]) -> str:
    try:
        result = subprocess.run(
            ["ssh-keygen", *args], capture_output=True, text=True, timeout=KEYGEN_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise SshServerError("ssh-keygen not found: install openssh-client") from exc
    if result.returncode != 0:
        raise SshServerError(f"ssh-keygen {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _generate_key(path: Path, comment: str) -> None:
    _run_keygen(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _fingerprint(public_key: Path) -> str:
    # `ssh-keygen -lf` prints "256 SHA256:xxxx comment (ED25519)".
    return _run_keygen(["-l", "-f", str(public_key)]).split()[1]


def _find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _has_ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            return sock.recv(64).startswith(b"SSH-2.0")
    except OSError:
        # Not listening yet (refused) or slow to answer: the caller polls again until its deadline.
        return False


def _parent_map() -> dict[int, int]:
    """pid -> ppid for every process, from /proc (Linux). Empty where /proc does not exist."""
    parents: dict[int, int] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return parents
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            # The process exited while we were scanning; it has no children to find any more.
            continue
        # Format: "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_map().items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        # Already gone, which is what we wanted.
        return


def _alive(pid: int) -> bool:
    # A dead session process is reparented to PID 1 and stays a zombie until PID 1 reaps it, which in some
    # containers takes over a second: count zombies as dead, or stop() would wait for that.
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir():
        try:
            state = stat.read_text()
        except OSError:
            return False
        return state[state.rfind(")") + 2 :][:1] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The pid was reused by another user's process: ours is gone.
        return False
    return True


class SshServer:
    """One sshd in its own temporary directory. Use as a context manager or call start()/stop()."""

    def __init__(self, extra_env: Mapping[str, str] | None = None, *, alias: str = DEFAULT_ALIAS,
                 sshd_options: Mapping[str, str] | None = None) -> None:
        self._extra_env = dict(extra_env or {})
        self._alias = alias
        # More sshd_config keywords, e.g. {"AllowTcpForwarding": "no"} for a jump host that refuses to forward.
        self._sshd_options = dict(sshd_options or {})
        self._tmp: Path | None = None
        self._config: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._info: SshServerInfo | None = None

    # -- public API -------------------------------------------------------------------------------------

    @property
    def info(self) -> SshServerInfo:
        if self._info is None:
            raise SshServerError("SshServer.info: the server has not been started")
        return self._info

    @property
    def log_path(self) -> Path:
        if self._tmp is None:
            raise SshServerError("SshServer.log_path: the server has not been started")
        return self._tmp / "sshd.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no sshd log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> SshServerInfo:
        if self._tmp is not None:
            raise SshServerError("SshServer.start: already started (use restart())")
        sshd = _require_sshd()
        self._tmp = Path(tempfile.mkdtemp(prefix="piorch-sshd-"))
        try:
            self._prepare_files()
            port = self._launch_until_ready(sshd, _find_free_port, BIND_ATTEMPTS)
            self._write_client_files(port)
        except BaseException:
            # Including KeyboardInterrupt: never leave an sshd or a temp dir with keys behind.
            self.stop()
            raise
        return self.info

    def stop(self) -> None:
        """Stop sshd and every session it spawned, then delete the temp dir. Safe to call twice."""
        self._stop_processes()
        if self._tmp is not None:
            shutil.rmtree(self._tmp)
            self._tmp = None
        self._info = None

    def kill(self) -> None:
        """SIGKILL sshd and all its sessions at once: a Pi that lost power. Clients see their TCP
        connections reset (this is a crash, not a silent network drop) and new connections refused.
        Keys, port and files stay, so restart() can bring the same "Pi" back."""
        if self._proc is None:
            return
        root = self._proc.pid
        # Freeze first so nothing forks or reparents while the tree is collected, then kill it all.
        _signal(root, signal.SIGSTOP)
        frozen = {root}
        for _ in range(20):  # each pass goes at least one generation deeper; 20 is far beyond real depth
            new = _descendants(root) - frozen
            if not new:
                break
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            frozen |= new
        for pid in frozen:
            _signal(pid, signal.SIGKILL)
        self._proc.wait(timeout=STOP_TIMEOUT_S)
        self._proc = None

    def restart(self) -> SshServerInfo:
        """Start sshd again on the same port with the same keys (stopping it first if it runs)."""
        if self._tmp is None or self._info is None:
            raise SshServerError("SshServer.restart: the server has not been started")
        self._stop_processes()
        port = self._info.port
        # The old listener's port can take a moment to be free again: retry it until the start deadline.
        self._launch_until_ready(_require_sshd(), lambda: port, attempts=100)
        return self._info

    def __enter__(self) -> SshServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------------------

    def _prepare_files(self) -> None:
        assert self._tmp is not None
        tmp = _safe_config_path(self._tmp.resolve())
        self._tmp = tmp
        for sub in ("keys", "bin", "home"):
            (tmp / sub).mkdir()
        _generate_key(tmp / "keys" / "host_ed25519", "piorch-test-host")
        _generate_key(tmp / "keys" / "user_ed25519", "piorch-test-user")
        shutil.copyfile(tmp / "keys" / "user_ed25519.pub", tmp / "authorized_keys")
        session_env = build_session_env(tmp / "bin", tmp / "home", self._extra_env)
        wrapper = tmp / "session-wrapper.sh"
        wrapper.write_text(build_session_wrapper(session_env))
        wrapper.chmod(0o755)
        if not os.access(SESSION_SHELL, os.X_OK):
            raise SshServerError(f"{SESSION_SHELL} not found: the fake Pi runs remote commands in bash")
        if os.geteuid() == 0 and not PRIVSEP_DIR.exists():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True)

    def _write_config(self, port: int) -> None:
        assert self._tmp is not None
        tmp = self._tmp
        session_env = build_session_env(tmp / "bin", tmp / "home", self._extra_env)
        self._config = tmp / "sshd_config"
        self._config.write_text(
            build_sshd_config(
                port=port,
                host_key=tmp / "keys" / "host_ed25519",
                pid_file=tmp / "sshd.pid",
                authorized_keys=tmp / "authorized_keys",
                session_env=session_env,
                wrapper=tmp / "session-wrapper.sh",
                sftp_server=find_sftp_server(),
                options=self._sshd_options,
            )
        )

    def _launch_until_ready(self, sshd: str, next_port: Callable[[], int], attempts: int) -> int:
        """Launch sshd on next_port() until it serves; returns the port. Only a lost race for the port is
        worth another attempt; any other failure would repeat, so it is raised at once."""
        deadline = time.monotonic() + START_TIMEOUT_S
        failure = "no attempt made"
        for _ in range(attempts):
            port = next_port()
            self._write_config(port)
            attempt_failure = self._launch(sshd, port, deadline)
            if attempt_failure is None:
                return port
            failure = attempt_failure
            if "bind" not in failure.lower() or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        raise SshServerError(f"sshd failed to start: {failure}")

    def _write_client_files(self, port: int) -> None:
        assert self._tmp is not None
        tmp = self._tmp
        host_pub = (tmp / "keys" / "host_ed25519.pub").read_text().split()
        known_hosts = tmp / "known_hosts"
        # OpenSSH writes non-22 ports as [host]:port; paramiko looks them up the same way.
        known_hosts.write_text(f"[{LOOPBACK}]:{port} {host_pub[0]} {host_pub[1]}\n")
        user = pwd.getpwuid(os.geteuid()).pw_name
        user_key = tmp / "keys" / "user_ed25519"
        ssh_config = tmp / "ssh_config"
        ssh_config.write_text(
            build_client_config(alias=self._alias, port=port, user=user, user_key=user_key, known_hosts=known_hosts)
        )
        self._info = SshServerInfo(
            host=LOOPBACK,
            port=port,
            user=user,
            user_key=user_key,
            known_hosts=known_hosts,
            ssh_config=ssh_config,
            bin_dir=tmp / "bin",
            home=tmp / "home",
            host_key_fingerprint=_fingerprint(tmp / "keys" / "host_ed25519.pub"),
            alias=self._alias,
        )

    def _launch(self, sshd: str, port: int, deadline: float) -> str | None:
        """Start sshd and wait until it serves an SSH banner. Returns None when ready, else why not
        (sshd is then stopped)."""
        assert self._config is not None
        log_path = self.log_path
        with log_path.open("ab") as log:
            log.write(f"--- tests/sshd_server.py: starting sshd on port {port} ---\n".encode())
            log.flush()
            # -D: stay in the foreground so we own the process; -e: log to stderr, i.e. our log file.
            # A new session keeps a terminal Ctrl+C away from sshd, so teardown stops it in order.
            self._proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(self._config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Both checks: the log line proves *our* sshd bound the port (another process could answer the
        # banner probe during a lost port race), the banner proves it accepts connections.
        listening = f"Server listening on {LOOPBACK} port {port}"
        while time.monotonic() < deadline:
            returncode = self._proc.poll()
            if returncode is not None:
                self._proc = None
                return f"sshd exited with status {returncode}; log:\n{self.log_tail()}"
            if listening in log_path.read_text(errors="replace") and _has_ssh_banner(port):
                return None
            time.sleep(0.02)
        self._stop_processes()
        return f"no SSH banner on port {port} within {START_TIMEOUT_S:.0f} s; log:\n{self.log_tail()}"

    def _stop_processes(self) -> None:
        """SIGTERM sshd and its sessions (a test may have left a remote command running), wait with a
        deadline, then SIGKILL whatever is left."""
        if self._proc is None:
            return
        proc = self._proc
        self._proc = None
        if proc.poll() is not None:
            return
        # Session processes called setsid(), so killing a process group would miss them: use the tree.
        sessions = _descendants(proc.pid)
        proc.terminate()
        for pid in sessions:
            _signal(pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(_alive(pid) for pid in sessions) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in sessions:
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
