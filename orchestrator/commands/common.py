"""Pieces every command shares: settings from the four config layers, the display, the summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from orchestrator.config import Config, load_config
from orchestrator.errors import UsageError
from orchestrator.events import EventSink


def load(flags: dict[str, Any], config_file: Path | None) -> Config:
    return load_config(flags, config_file)


def duration_ms(minutes: float | None, seconds: float | None) -> int:
    """--minutes or --seconds (not both); 0 or neither means until Ctrl+C."""
    if minutes is not None and seconds is not None:
        raise UsageError("--minutes and --seconds both given", "use one of them")
    value = minutes * 60 if minutes is not None else seconds if seconds is not None else 0.0
    if value < 0:
        raise UsageError(f"a negative duration ({value:g} s)", "give a positive time, or 0 for until Ctrl+C")
    if value > 7 * 24 * 3600:
        raise UsageError("a duration over a week", "record in several runs")
    return round(value * 1000)


def pick_display(title: str) -> Any:
    """The live dashboard on a terminal, the plain log otherwise (pipes, CI, systemd)."""
    from orchestrator.ui.display import Dashboard, PlainLog

    if sys.stderr.isatty():
        return Dashboard(title)
    return PlainLog()


def fleet_display(pis: list[str]) -> Any:
    from orchestrator.ui.display import FleetDashboard, FleetLog

    return FleetDashboard(pis) if sys.stderr.isatty() else FleetLog(pis)


def stdout_console() -> Any:
    from rich.console import Console

    return Console()


def subscribers(*sinks: EventSink) -> EventSink:
    def fan_out(event: Any) -> None:
        for sink in sinks:
            sink(event)

    return fan_out
