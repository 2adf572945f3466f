"""Text from the user or the Pi is shown as it is: a folder named `[red]cam[/red]`, a Pi alias with a `[/]`,
a camera message with brackets. rich must never read them as markup: that would recolour or swallow them, and
a stray closing tag raises MarkupError on the dashboard's drawing thread (a traceback, then a frozen view).
"""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator.events import (
    FileFinished,
    FileStarted,
    FileStatus,
    Notice,
    PiHealthReport,
    Progress,
    SnapProgress,
    State,
    StateChanged,
)
from orchestrator.jobs.fleet import FromPi
from orchestrator.ui.dashboard import Dashboard, FleetDashboard
from orchestrator.ui.log import FleetLog, PlainLog
from orchestrator.ui.snap import SnapBar
from orchestrator.ui.summary import render_summary
from tests.e2e_helpers import piorch_argv, piorch_env

FOLDER = "[red]cam[/red]"
# A file name cannot hold "/": an opening tag alone (it would make the rest bold).
FILE = "[bold]clip.h264"
PI = "pi[/]one"
MESSAGE = "camera said: [ERROR] no sensor on [i2c@1] [/]"
# rich draws twice a second: this is a few frames.
DRAW_S = 1.2


def hostile_events(out: Path) -> list[Any]:
    path = out / FILE
    return [
        StateChanged(State.PROBING, PI),
        StateChanged(State.RECORDING, f"rpicam-vid -> [{PI}]:10401"),
        Progress(elapsed_s=3, duration_s=10, bytes_total=1_500_000, rate_bps=4e6, average_bps=4e6,
                 target_bps=4_000_000, active_connections=1, free_bytes=10**10, fps=25.0),
        FileStarted(path, "[::1]"),
        Notice("warning", MESSAGE),
        PiHealthReport(48.0, ("[under-voltage]",), 0.5, 300, True, ("[hot]",)),
        FileFinished(path, None, 1_500_000, "0" * 64, FileStatus.COMPLETE, 3.0),
        StateChanged(State.FAILED, MESSAGE),
    ]


@pytest.fixture
def thread_errors() -> Iterator[list[BaseException]]:
    """Exceptions that escape any thread (rich's refresh thread included) while the test runs."""
    seen: list[BaseException] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            seen.append(args.exc_value)

    threading.excepthook = hook
    try:
        yield seen
    finally:
        threading.excepthook = previous


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    # A terminal as rich sees it, wide enough that nothing is folded, without colour codes.
    return Console(file=out, force_terminal=True, width=300, color_system=None), out


def from_a_worker(sink: Any, events: list[Any]) -> None:
    """Events arrive from the core's threads, as in a recording."""
    worker = threading.Thread(target=lambda: [sink(event) for event in events])
    worker.start()
    worker.join(10)


def test_dashboard_shows_names_and_messages_literally(tmp_path: Path, thread_errors: list[BaseException]) -> None:
    console, out = terminal()
    dashboard = Dashboard(f"piorch record: {PI}", console=console)
    events = hostile_events(tmp_path / FOLDER)
    with dashboard.running():
        from_a_worker(dashboard, events[:-1])
        time.sleep(DRAW_S)
        from_a_worker(dashboard, events[-1:])
        time.sleep(DRAW_S)
    shown = out.getvalue()
    assert thread_errors == []
    assert f"piorch record: {PI}" in shown  # the panel's title
    assert f"recording rpicam-vid -> [{PI}]:10401" in shown  # the latest state when a frame was drawn
    assert MESSAGE in shown and f"failed {MESSAGE}" in shown
    assert "[under-voltage]" in shown


def test_fleet_dashboard_shows_names_literally(tmp_path: Path, thread_errors: list[BaseException]) -> None:
    console, out = terminal()
    dashboard = FleetDashboard([PI, FOLDER], console=console)
    with dashboard.running():
        from_a_worker(dashboard, [FromPi(PI, event) for event in hostile_events(tmp_path)])
        from_a_worker(dashboard, [FromPi(FOLDER, StateChanged(State.RECORDING, "x"))])
        time.sleep(DRAW_S)
    shown = out.getvalue()
    assert thread_errors == []
    assert f"{PI}: {MESSAGE}" in shown  # the notice, with its Pi
    rows = [line for line in shown.splitlines() if PI in line and "failed" in line]
    assert rows and MESSAGE in rows[-1] and "[under-voltage]" in rows[-1]
    assert any(FOLDER in line and "recording" in line for line in shown.splitlines())


def test_summary_table_names_folders_and_files_literally(tmp_path: Path) -> None:
    console, out = terminal()
    folder = tmp_path / FOLDER
    render_summary([FileFinished(folder / FILE, None, 2_000_000, "0" * 64, FileStatus.COMPLETE, 4.0)], console)
    shown = out.getvalue()
    assert f"received in {folder}" in shown
    row = next(line for line in shown.splitlines() if FILE in line)
    assert "2.0 MB" in row and "00:04" in row and "4.00" in row and "complete" in row


def test_snap_bar_shows_names_and_messages_literally(tmp_path: Path, thread_errors: list[BaseException]) -> None:
    console, out = terminal()
    bar = SnapBar(f"piorch snap: {PI}", 2, console=console)
    with bar.running():
        from_a_worker(bar, [SnapProgress(0, 2, 1), Notice("error", MESSAGE),
                            FileFinished(tmp_path / FILE, None, 10, "0" * 64, FileStatus.COMPLETE, 0.1),
                            SnapProgress(1, 2, 0, 5.0)])
        time.sleep(DRAW_S)
    shown = out.getvalue()
    assert thread_errors == []
    assert f"piorch snap: {PI}" in shown and MESSAGE in shown and f"{FILE}: complete" in shown


def test_plain_logs_write_every_name_as_it_is(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = PlainLog(stream, every_s=0)
    for event in hostile_events(tmp_path / FOLDER):
        log(event)
    lines = [line.split(" ", 1)[1] for line in stream.getvalue().splitlines()]  # without the time of day
    assert lines == [
        f"probing the Pi: {PI}",
        f"recording: rpicam-vid -> [{PI}]:10401",
        "00:03 elapsed, 00:07 left: 1.5 MB, 4.00 Mbit/s now, 4.00 average",
        f"receiving {FILE} from [::1]",
        f"warning: {MESSAGE}",
        f"{FILE}: 1.5 MB, complete",
        f"failed: {MESSAGE}",
    ]
    fleet_stream = io.StringIO()
    FleetLog([PI], fleet_stream)(FromPi(PI, Notice("error", MESSAGE)))
    assert fleet_stream.getvalue().split(" ", 1)[1] == f"[{PI}] error: {MESSAGE}\n"


@pytest.mark.e2e
def test_a_recording_into_a_bracketed_folder_on_a_terminal(tmp_path: Path) -> None:
    """The whole path a user takes: `piorch demo` on a terminal (the live dashboard), into `[red]cam[/red]`."""
    out = tmp_path / FOLDER
    env = piorch_env(tmp_path, tmp_path / "no_ssh_config")
    env.update(COLUMNS="400", LINES="50", TERM="xterm")
    leader, follower = pty.openpty()
    process = subprocess.Popen(piorch_argv("demo", "--seconds", "2", "--out", str(out)), env=env,
                               stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    seen = bytearray()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal's other end closed: piorch is done
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    text = seen.decode("utf-8", "replace")
    assert code == 0, text[-3000:]
    assert "Traceback" not in text and "MarkupError" not in text
    assert f"received in {out}" in text  # the summary table's title, as the folder is named
    assert list(out.glob("*.mp4")) or list(out.glob("*.h264"))
