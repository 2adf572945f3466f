"""`piorch bootstrap --pi HOST`: laptop key, host key, key login, netcat and a camera check on a new Pi."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from orchestrator.commands.common import load
from orchestrator.commands.options import CONFIG_HELP
from orchestrator.errors import UsageError
from orchestrator.settings import SshSettings

# For automation (CI, provisioning scripts) only: any process of the same user can read another's
# environment. Interactive use asks on the terminal instead.
PASSWORD_ENV = "PIORCH_BOOTSTRAP_PASSWORD"  # noqa: S105 - the variable name, not a password


def bootstrap(
    pi: str = typer.Option(None, "--pi", help="user@host[:port] or an ~/.ssh/config alias (config: pi)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Record an unknown host key without asking (it is still "
                                                        "shown); a changed key is always refused."),
    key: Path = typer.Option(None, "--key", help="Laptop key to install (default: the ssh config's IdentityFile, "
                                                 "else ~/.ssh/id_ed25519, created when missing)."),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Get a Pi ready for `piorch record`; safe to run again (then every step says `already`).

    Steps: create a laptop key if there is none; show the Pi's host key fingerprint and record it after
    you confirm; install the key on the Pi (asking for the Pi's password once if no key works yet; it
    is never stored); install netcat-openbsd with apt if nc is missing; check the camera stack and say
    what to enable. The Pi-side steps are the shell scripts in bootstrap/. For automation, the password
    can come from the PIORCH_BOOTSTRAP_PASSWORD environment variable.
    """
    from orchestrator.jobs.bootstrap import BootstrapPrompts, BootstrapSettings, Step, bootstrap_passed, run_bootstrap

    values = load({"pi": pi}, config)
    if not values["pi"]:
        raise UsageError("no Pi given", "pass --pi user@host, e.g. `piorch bootstrap --pi pi@192.168.50.2`")
    ssh = SshSettings(target=values["pi"],
                      ssh_config=Path(values["ssh_config"]).expanduser() if values["ssh_config"] else None,
                      connect_timeout=values["connect_timeout"])
    settings = BootstrapSettings(ssh=ssh, key_path=key.expanduser() if key is not None else None)

    def confirm_host_key(display: str, shown: str) -> bool:
        print(f"{display} presents host key {shown}", flush=True)
        if yes:
            return True
        answer = typer.confirm("Is that your Pi? Record its key", default=False)
        if not sys.stdin.isatty():
            print()  # an answer read from a pipe is not echoed: end the prompt's line here
        return answer

    def print_step(step: Step) -> None:
        print(f"{step.status.value:8} {step.name:14} {step.detail}", flush=True)
        if step.fix:
            print(f"{'':8} {'':14} fix: {step.fix}", flush=True)

    steps = run_bootstrap(settings, BootstrapPrompts(confirm_host_key, ask_password), print_step)
    if not bootstrap_passed(steps):
        raise typer.Exit(1)
    print(f"ready: `piorch doctor --pi {values['pi']}` checks everything, `piorch record` records")


def ask_password(who: str) -> str:
    password = os.environ.get(PASSWORD_ENV)
    if password is not None:
        return password
    if not sys.stdin.isatty():
        raise UsageError(f"no key works on {who} yet and there is no terminal to ask for its password",
                         f"run bootstrap in a terminal, or set {PASSWORD_ENV} for automation")
    import getpass

    return getpass.getpass(f"password for {who} (used once to install your key, not stored): ")
