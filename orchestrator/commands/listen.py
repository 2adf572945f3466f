"""`piorch listen`: the receiver alone (the laptop half of the recipe, for a Pi started by other means)."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.commands.common import load, pick_display, stdout_console
from orchestrator.commands.options import CONFIG_HELP
from orchestrator.settings import Backend, ReceiveSettings


def listen(
    port: int = typer.Option(None, "--port", help="TCP port to listen on [10401]."),
    out: Path = typer.Option(None, "--out", help="Folder for the files [./recv]."),
    backend: str = typer.Option(None, "--backend",
                                help="builtin (Python, no gap between connections) or nc (local netcat, one "
                                     "connection at a time; it cannot refuse other peers) [builtin]."),
    bind: str = typer.Option(None, "--bind", help="Address to listen on [every address]."),
    once: bool = typer.Option(False, "--once", help="Exit after the first connection ends."),
    discard_partial: bool = typer.Option(False, "--discard-partial",
                                         help="Delete a file whose connection was cut by Ctrl+C."),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Receive every connection into OUT/<uuid>.h264 (.tmp until it ends) with a JSON manifest.

    Ctrl+C stops listening; files already complete are never touched, an open one is kept as
    `interrupted`.
    """
    from orchestrator.commands.common import stop_on_signals
    from orchestrator.config import check_ip
    from orchestrator.errors import UsageError
    from orchestrator.jobs.listen import run_listen

    values = load({"port": port, "out": None if out is None else str(out), "backend": backend}, config)
    if bind is not None and check_ip(bind):
        raise UsageError(f"--bind {bind!r} is not an IP address", "give one of this laptop's addresses")
    settings = ReceiveSettings(port=values["port"], out_dir=Path(values["out"]).expanduser(),
                               backend=Backend(values["backend"]), bind=bind, once=once,
                               discard_partial=discard_partial)
    display = pick_display(f"piorch listen: port {settings.port}")
    with stop_on_signals() as stop, display.running():
        result = run_listen(settings, display, stop)
    from orchestrator.events import State

    if result.files:
        from orchestrator.ui.summary import render_summary

        render_summary(result.files, stdout_console())
    if result.state is State.INTERRUPTED:
        raise typer.Exit(130)
