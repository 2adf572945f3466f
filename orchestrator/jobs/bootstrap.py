"""`bootstrap`: get a Pi ready. Laptop key, host key, key login, netcat, camera check, in that order.

The laptop steps are here; the Pi steps are the plain shell scripts in `orchestrator/pi/sh/` (`bootstrap/`
at the top of the project), readable and runnable on their own (`ssh PI sh -s < bootstrap/install-netcat.sh`).
piorch sends each one as `sh -c SCRIPT` over the SSH connection, so nothing is left behind on the Pi. Every script
prints `piorch-step NAME done|already|failed DETAIL`, and every step is idempotent: a second run reports
`already` everywhere.

Prompts (confirm the host key, the password) go through callbacks the CLI provides; the core never
prints and never reads the terminal. The password is used for one login and not kept.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.errors import ConnectError, PiorchError, UsageError
from orchestrator.pi.host import Host
from orchestrator.pi.hostkey import HostKeyState, check_host_key, host_key_fix
from orchestrator.pi.login import ensure_laptop_key, is_login_refused, open_password_client, pick_key_path
from orchestrator.pi.target import login_name
from orchestrator.settings import SshSettings

SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "pi" / "sh"
STEP_MARK = "piorch-step"
STEPS = ("laptop-key", "host-key", "authorize-key", "netcat", "camera")
PI_SCRIPTS = {"authorize-key": "authorize-key.sh", "netcat": "install-netcat.sh", "camera": "check-camera.sh"}
# apt-get update + install on a Pi 3 with a slow mirror takes a few minutes; the others are instant.
SCRIPT_TIMEOUT_S = {"authorize-key": 30.0, "netcat": 600.0, "camera": 60.0}


class StepStatus(str, enum.Enum):
    DONE = "done"
    ALREADY = "already"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Step:
    name: str
    status: StepStatus
    detail: str
    fix: str = ""


StepSink = Callable[[Step], None]


@dataclass(frozen=True)
class BootstrapSettings:
    ssh: SshSettings
    # None: the ssh config's IdentityFile, else an existing ~/.ssh/id_*, else a new ~/.ssh/id_ed25519.
    key_path: Path | None = None
    # None: ~/.ssh of the user running piorch (HOME).
    ssh_dir: Path | None = None
    scripts_dir: Path = SCRIPTS_DIR


@dataclass(frozen=True)
class BootstrapPrompts:
    # (the Pi as shown, "ssh-ed25519 SHA256:...") -> record it?
    confirm_host_key: Callable[[str, str], bool]
    # ("user@host") -> the password, asked once.
    password: Callable[[str], str]


def bootstrap_passed(steps: Sequence[Step]) -> bool:
    return all(step.status is not StepStatus.FAILED for step in steps)


def build_script_command(script: str, name: str, args: Sequence[str]) -> str:
    """`sh -c SCRIPT NAME ARGS...`: the script text travels in the command itself, quoted, and runs in the
    Pi's sh whatever the login shell is. NAME becomes $0 (it shows in `ps` and in sh's own errors)."""
    return " ".join(["sh", "-c", shlex.quote(script), shlex.quote(name), *(shlex.quote(arg) for arg in args)])


def parse_steps(text: str) -> list[Step]:
    """Every `piorch-step NAME STATUS DETAIL` line; other lines (and unknown statuses) are ignored."""
    steps: list[Step] = []
    for line in text.splitlines():
        parts = line.strip().split(" ", 3)
        if len(parts) >= 3 and parts[0] == STEP_MARK:
            try:
                status = StepStatus(parts[2])
            except ValueError:
                continue
            steps.append(Step(parts[1], status, parts[3] if len(parts) == 4 else ""))
    return steps


def run_pi_script(host: Host, scripts_dir: Path, step: str, args: Sequence[str] = ()) -> list[Step]:
    """Run one bootstrap script on the Pi; a script that says nothing about its step has failed."""
    path = scripts_dir / PI_SCRIPTS[step]
    try:
        script = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [Step(step, StepStatus.FAILED, f"cannot read {path} ({exc.strerror})",
                     "reinstall piorch: the bootstrap scripts belong beside it")]
    try:
        result = host.run(build_script_command(script, f"piorch-{step}", args), timeout=SCRIPT_TIMEOUT_S[step])
    except PiorchError as exc:
        return [Step(step, StepStatus.FAILED, exc.message, exc.fix)]
    steps = [item for item in parse_steps(result.stdout) if item.name == step]
    if not steps:
        last = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.exit_code}"]
        return [Step(step, StepStatus.FAILED, f"{path.name} ended without a status ({last[0][:200]})")]
    return steps


def run_bootstrap(settings: BootstrapSettings, prompts: BootstrapPrompts, on_step: StepSink) -> list[Step]:
    """Every step in order; a failed laptop-key, host-key or login step skips the rest (they need it)."""
    from orchestrator.pi.hostkey import record_host_key
    from orchestrator.pi.ssh import SshHost, open_host
    from orchestrator.pi.target import resolve_target

    steps: list[Step] = []

    def emit(step: Step) -> None:
        steps.append(step)
        on_step(step)

    def skip_rest(failed: str) -> list[Step]:
        for name in STEPS:
            if all(step.name != name for step in steps):
                emit(Step(name, StepStatus.SKIPPED, f"skipped: {failed} failed"))
        return steps

    def stop_after(failed: Step) -> list[Step]:
        emit(failed)
        return skip_rest(failed.name)

    target = resolve_target(settings.ssh.target, settings.ssh.ssh_config)
    if target.proxy_jump or target.proxy_command:
        raise UsageError(f"bootstrap talks to {target.alias} directly; ProxyJump/ProxyCommand are not supported",
                         f"install the key with `ssh-copy-id {target.alias}`, then `piorch doctor --pi {target.alias}`")

    ssh_dir = settings.ssh_dir or Path.home() / ".ssh"
    try:
        key = ensure_laptop_key(pick_key_path(settings.key_path, target, ssh_dir))
    except PiorchError as exc:
        return stop_after(Step("laptop-key", StepStatus.FAILED, exc.message, exc.fix))
    emit(Step("laptop-key", StepStatus.DONE if key.created else StepStatus.ALREADY,
              f"{'created' if key.created else 'using'} {key.private} ({key.public_line.split()[0]})"))

    try:
        known, host_key = check_host_key(target, settings.ssh.connect_timeout)
    except PiorchError as exc:
        return stop_after(Step("host-key", StepStatus.FAILED, exc.message, exc.fix))
    shown = f"{known.key_type} {known.fingerprint}"
    if known.state is HostKeyState.CHANGED:
        return stop_after(Step("host-key", StepStatus.FAILED, f"the host key has CHANGED (now {shown})",
                               host_key_fix(target, known)))
    if known.state is HostKeyState.UNKNOWN:
        if not prompts.confirm_host_key(target.display, shown):
            return stop_after(Step("host-key", StepStatus.FAILED, f"{shown} not recorded: not confirmed",
                                   "compare it with the Pi's own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) "
                                   "and run bootstrap again, or pass --yes"))
        record_host_key(known.known_hosts, known.name, host_key)
        emit(Step("host-key", StepStatus.DONE, f"recorded {shown} in {known.known_hosts}"))
    else:
        emit(Step("host-key", StepStatus.ALREADY, f"{shown} in {known.known_hosts}"))

    ssh = replace(settings.ssh, accept_new_host_key=False)
    via_password = False
    try:
        host = open_host(target, ssh)
    except ConnectError as exc:
        if not is_login_refused(exc):
            return stop_after(Step("authorize-key", StepStatus.FAILED, exc.message, exc.fix))
        # No key works yet: one password login, only to add the key.
        try:
            client = open_password_client(target, ssh, prompts.password(f"{login_name(target)}@{target.hostname}"))
        except PiorchError as password_exc:
            return stop_after(Step("authorize-key", StepStatus.FAILED, password_exc.message, password_exc.fix))
        host = SshHost(client, target)
        via_password = True
    try:
        for step in run_pi_script(host, settings.scripts_dir, "authorize-key", [key.public_line]):
            emit(step)
    finally:
        if via_password:
            host.close()
    if not bootstrap_passed(steps):
        return skip_rest("authorize-key")
    if via_password:
        # The proof: the same login piorch record will make, with the key alone.
        try:
            host = open_host(target, ssh)
        except PiorchError as exc:
            return stop_after(Step("authorize-key", StepStatus.FAILED, f"the key was added, but {exc.message}",
                                   "check that the Pi's sshd reads ~/.ssh/authorized_keys and that the home "
                                   "folder is not writable by others (sshd's StrictModes)"))
    try:
        for name in ("netcat", "camera"):
            for step in run_pi_script(host, settings.scripts_dir, name):
                emit(step)
    finally:
        host.close()
    return steps
