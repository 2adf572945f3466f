"""`piorch trust HOST`: show the Pi's host key fingerprint and record it in known_hosts."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.commands.common import load
from orchestrator.commands.options import CONFIG_HELP
from orchestrator.errors import HostKeyError, UsageError


def trust(
    pi: str = typer.Argument(None, help="[user@]host[:port] or an ~/.ssh/config alias (default: config pi)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; record the key shown."),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Fetch the Pi's SSH host key, show its fingerprint, and record it after you confirm.

    Compare the fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the Pi. A key
    that differs from the recorded one is never replaced here: remove the old line first.
    """
    from orchestrator.pi.hostkey import HostKeyState, host_key_fix, record_host_key
    from orchestrator.pi.ssh import check_host_key_on_the_way
    from orchestrator.pi.target import resolve_target
    from orchestrator.resolve import build_ssh_settings

    values = load({"pi": pi}, config)
    if not values["pi"]:
        raise UsageError("no Pi given", "pass the host, e.g. `piorch trust pi@192.168.50.2`")
    ssh = build_ssh_settings(values, accept_new_host_key=False)
    target = resolve_target(ssh.target, ssh.ssh_config)
    # Through its jump hosts, as record reaches it: a Pi behind one is trusted the same way.
    check, key = check_host_key_on_the_way(target, ssh)
    shown = f"{check.key_type} {check.fingerprint}"
    if check.state is HostKeyState.KNOWN:
        print(f"{target.display} is already trusted ({shown})")
        return
    if check.state is HostKeyState.CHANGED:
        raise HostKeyError(f"{target.display} now shows a DIFFERENT host key ({check.fingerprint}) than the one "
                           "recorded", host_key_fix(target, check))
    print(f"{target.display} presents {shown}")
    if not yes and not typer.confirm("Record this key as your Pi's?", default=False):
        raise typer.Exit(1)
    record_host_key(check.known_hosts, check.name, key)
    print(f"recorded in {check.known_hosts}")
