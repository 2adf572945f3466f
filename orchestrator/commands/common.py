"""Pieces every command shares: settings from the four config layers, signals, the display, the summary."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import typer

from orchestrator.config import Config, load_config
from orchestrator.errors import PiorchError

if TYPE_CHECKING:
    # orchestrator.events (its dataclasses are ~15 ms) is imported where a result is read, after `record`
    # has begun to connect: a command's import is part of what its connection waits for.
    from orchestrator.events import EventSink, FileFinished, State
    from orchestrator.pi.camera import CameraProblem



def load(flags: dict[str, Any], config_file: Path | None) -> Config:
    return load_config(flags, config_file)


def resolve_port(values: Config, auto: bool) -> Config:
    """`--port auto`: the first port from the configured one upward that this laptop can listen on."""
    if not auto:
        return values
    from orchestrator.stream.receiver import find_free_port

    port = find_free_port(values["laptop_ip"] or None, values["port"] or 10401)
    return Config({**values.values, "port": port}, {**values.sources, "port": "--port auto"})


def pick_display(title: str) -> Any:
    """The live dashboard on a terminal, the plain log otherwise (pipes, CI, systemd). Each is imported only
    when chosen: the dashboard's rich is ~70 ms of CPU, made while the Pi's connection waits."""
    if sys.stderr.isatty():
        from orchestrator.ui.dashboard import Dashboard

        return Dashboard(title)
    from orchestrator.ui.log import PlainLog

    return PlainLog()


def fleet_display(pis: list[str]) -> Any:
    if sys.stderr.isatty():
        from orchestrator.ui.dashboard import FleetDashboard

        return FleetDashboard(pis)
    from orchestrator.ui.log import FleetLog

    return FleetLog(pis)


def stdout_console() -> Any:
    from rich.console import Console

    return Console()


def subscribers(*sinks: EventSink) -> EventSink:
    def fan_out(event: Any) -> None:
        for sink in sinks:
            sink(event)

    return fan_out


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl+C and SIGTERM set an event the core watches, so stopping runs the normal, orderly path.

    The handler only writes a byte to a pipe: it runs on the main thread between two bytecodes, which may be
    holding a lock that Event.set() or Thread.start() would take (inside stop.wait(), or while starting a
    fleet's threads), and a write to a pipe takes none. A watcher thread, started here, sets the event.
    """
    stop = threading.Event()
    wake_read, wake_write = os.pipe()

    def watch() -> None:
        while os.read(wake_read, 1) == b"s":
            stop.set()

    watcher = threading.Thread(target=watch, name="piorch-signals", daemon=True)
    watcher.start()

    def handler(signum: int, frame: Any) -> None:
        os.write(wake_write, b"s")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        os.write(wake_write, b"q")  # any other byte ends the watcher
        watcher.join(1.0)
        os.close(wake_read)
        os.close(wake_write)


class Outcome(Protocol):
    """What record, demo and snap end with (RecordResult, SnapResult)."""

    @property
    def files(self) -> tuple[FileFinished, ...]: ...
    @property
    def camera_freed(self) -> bool: ...
    @property
    def state(self) -> State: ...
    @property
    def problem(self) -> CameraProblem | None: ...


def finish(result: Outcome) -> None:
    """Summary table, then the exit code: 0 done, 130 interrupted, 1 failed (with the reason)."""
    from orchestrator.events import State
    from orchestrator.ui.summary import render_summary

    if result.files:
        render_summary(result.files, stdout_console())
    if not result.camera_freed:
        raise PiorchError("the camera on the Pi may still be held", "see the message above")
    if result.state is State.INTERRUPTED:
        raise typer.Exit(130)
    if result.state is State.FAILED and result.problem is not None:
        raise PiorchError(result.problem.message, result.problem.fix)
    unplayable = [file for file in result.files if file.remux_error]
    if unplayable:
        # The bytes are safe, but not in the container that was asked for: a script must not take this as done.
        raise PiorchError(f"{len(unplayable)} of {len(result.files)} files could not be made into the container "
                          f"asked for ({unplayable[0].remux_error})",
                          "the raw .h264 is kept beside each manifest; `--container h264` records it as such")
