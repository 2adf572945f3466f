"""`piorch doctor [--pi HOST]`: check the laptop, the SSH login and the Pi; exit 0 unless a check fails."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from orchestrator.commands.common import load
from orchestrator.commands.options import CONFIG_HELP
from orchestrator.settings import Backend, CameraTool, SshSettings


def doctor(
    pi: str = typer.Option(None, "--pi", help="[user@]host[:port] or an ~/.ssh/config alias (config: pi); "
                                              "without one only the laptop is checked."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as one JSON object on stdout."),
    strict: bool = typer.Option(False, "--strict", help="Warnings fail too (exit 1), e.g. for CI."),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Check everything a recording needs, each with pass/warn/fail and a one-line fix.

    Laptop: nc and its flavour, the receiver port, the output folder and its free space in minutes of
    recording, the link address (laptop_ip). SSH: reachable, host key known, login. Pi: camera tool and
    stack, camera detected, nc, setsid, free memory, temperature, throttling, clock skew. Nothing is
    changed anywhere. Exit 0 unless a check fails: a warning is advice (a Pi used without setup-link is
    healthy); with --strict warnings fail too. Exit 1 otherwise.
    """
    from orchestrator.jobs.doctor import DoctorSettings, doctor_passed, run_doctor, summarize

    values = load({"pi": pi}, config)
    ssh = None
    if values["pi"]:
        ssh = SshSettings(target=values["pi"],
                          ssh_config=Path(values["ssh_config"]).expanduser() if values["ssh_config"] else None,
                          connect_timeout=values["connect_timeout"])
    settings = DoctorSettings(ssh=ssh, port=values["port"], out_dir=Path(values["out"]).expanduser(),
                              bitrate=values["bitrate"], laptop_ip=values["laptop_ip"] or None,
                              backend=Backend(values["backend"]), camera_tool=CameraTool(values["camera_tool"]))
    if as_json:
        checks = run_doctor(settings, lambda check: None)
        print(json.dumps({"ok": doctor_passed(checks, strict),
                          "checks": [{"name": c.name, "status": c.status.value, "detail": c.detail, "fix": c.fix}
                                     for c in checks]}, indent=2))
    elif sys.stdout.isatty():
        checks = _run_with_table(settings)
    else:
        checks = run_doctor(settings, _print_line)
        print(summarize(checks))
    raise typer.Exit(0 if doctor_passed(checks, strict) else 1)


def _print_line(check: Any) -> None:
    """One line a check, printed as soon as it is known (a slow link shows where it is)."""
    print(f"{check.status.value.upper():4}  {check.name:16} {check.detail}", flush=True)
    if check.fix and check.status.value != "pass":
        print(f"{'':6}{'':16} fix: {check.fix}", flush=True)


STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def _run_with_table(settings: Any) -> Any:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from orchestrator.jobs.doctor import run_doctor, summarize

    console = Console()
    with console.status("checking...") as status:
        checks = run_doctor(settings, lambda check: status.update(f"checking... (last: {check.name})"))
    table = Table(title="piorch doctor", show_lines=False)
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        # Text, not markup: details hold brackets ("[127.0.0.1]:2222", "dtoverlay=<sensor>").
        table.add_row(check.name, Text(check.status.value, style=STYLES[check.status.value]), Text(check.detail),
                      Text(check.fix if check.status.value != "pass" else ""))
    console.print(table)
    console.print(Text(summarize(checks)))
    return checks
