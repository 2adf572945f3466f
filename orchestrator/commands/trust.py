"""`piorch trust HOST`: show the Pi's host key fingerprint and record it in known_hosts."""

from __future__ import annotations

import shlex
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
    from orchestrator.pi.ssh import fetch_host_key, fingerprint, record_host_key, resolve_target

    values = load({"pi": pi}, config)
    if not values["pi"]:
        raise UsageError("no Pi given", "pass the host, e.g. `piorch trust pi@192.168.50.2`")
    ssh_config = Path(values["ssh_config"]).expanduser() if values["ssh_config"] else None
    target = resolve_target(values["pi"], ssh_config)
    key = fetch_host_key(target, timeout=values["connect_timeout"])
    known_file = target.known_hosts[0]
    import paramiko

    known = paramiko.HostKeys()
    for path in target.known_hosts:
        if path.is_file():
            known.load(str(path))
    entry = known.lookup(target.known_hosts_name)
    recorded = entry.get(key.get_name()) if entry is not None else None
    if recorded is not None and recorded.asbytes() == key.asbytes():
        print(f"{target.display} is already trusted ({key.get_name()} {fingerprint(key)})")
        return
    if recorded is not None:
        raise HostKeyError(
            f"{target.display} now shows a DIFFERENT host key ({fingerprint(key)}) than the one recorded",
            f"if the Pi was re-flashed, run `ssh-keygen -R '{target.known_hosts_name}' "
            f"-f {shlex.quote(str(known_file))}` first",
        )
    print(f"{target.display} presents {key.get_name()} {fingerprint(key)}")
    if not yes and not typer.confirm("Record this key as your Pi's?", default=False):
        raise typer.Exit(1)
    record_host_key(known_file, target.known_hosts_name, key)
    print(f"recorded in {known_file}")
