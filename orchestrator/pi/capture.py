"""The one capture runner: probe the Pi, choose its tool, start `tool | nc` in a process group of its own,
follow its status marks, stop it, and explain how it ended. `record`, `snap` and `doctor` all use it.

A run is one `Pipeline`: `start()` learns the process group id (the first status line), `poll()` reads one
status line at a time (so the caller can watch its own clocks between lines), `stop()` kills the whole
group and confirms it is gone, `finish()` collects the exit statuses and the camera's stderr.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from orchestrator.errors import PiorchError, RemoteError
from orchestrator.events import EventSink, Notice, State, StateChanged
from orchestrator.netcat import NetcatFlavour, parse_nc_failure
from orchestrator.pi.camera import TOOL_PACKAGE, TOOL_PREFERENCE, CameraProblem
from orchestrator.pi.host import Host, Process
from orchestrator.pi.probe_memory import forget_probe, keep_probe, recall_probe
from orchestrator.pi.scripts import (
    CAMERA_EXIT_MARK,
    NC_EXIT_MARK,
    PGID_MARK,
    STALE_MARK,
    PiProbe,
    build_guarded_script,
    build_kill_script,
    build_probe_script,
    parse_probe_output,
    parse_pts_line,
    parse_status_line,
)
from orchestrator.pi.stack import CameraStack, describe_stack
from orchestrator.pi.still import STILL_TOOL_PREFERENCE
from orchestrator.settings import CameraTool, StillTool

# The pipeline prints its process group id first thing; a Pi that takes longer is not answering.
START_TIMEOUT_S = 15.0
# After the camera ends, how long the sender's nc may take to deliver the tail and close.
DRAIN_S = 10.0
# Lines taken in one poll once the first has come: a camera at 120 fps sends 120 timestamp lines a second,
# and the caller's loop should not turn once per line; bounded so that its own clocks are still looked at.
POLL_LINES = 256
# read_rest's reads at most: every line of minutes of a camera's timestamps, if they all wait.
REST_READS = 256

T = TypeVar("T")
E = TypeVar("E")  # the events a job emits (record's, snap's)


def describe_tools(wanted: CameraTool | StillTool) -> tuple[str, ...]:
    """Which libcamera tool the probe asks about itself: the one asked for, else the ones `auto` would pick
    from, in the same order (TOOL_PREFERENCE, STILL_TOOL_PREFERENCE). raspivid/raspistill: none."""
    if wanted is CameraTool.AUTO:
        return tuple(tool.value for tool in TOOL_PREFERENCE if not tool.is_legacy)
    if wanted is StillTool.AUTO:
        return tuple(tool.value for tool in STILL_TOOL_PREFERENCE if not tool.is_legacy)
    return () if wanted.is_legacy else (wanted.value,)


def probe_pi(host: Host, describe: Sequence[str] = (), stop: threading.Event | None = None,
             keep: bool = False) -> PiProbe:
    """What the Pi has (camera tools and what the libcamera ones say of themselves, nc, setsid, the board),
    asked now; Interrupted when `stop` is set first. `keep`: kept for the next run (pi/probe_memory.py)."""
    result = host.run(build_probe_script(describe), timeout=20, stop=stop)
    probe = parse_probe_output(result.stdout)
    if not probe.complete:
        detail = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.exit_code}"]
        raise RemoteError(f"could not inspect {host.name} ({detail[0]})", "check that its shell is sh-compatible")
    if keep:
        keep_probe(host, describe, result.stdout)
    return probe


class StaleProbe(Exception):
    """A guarded start found the Pi changed since its probe was kept: nothing was started there."""


@dataclass
class ProbeGuard:
    """The check a remembered probe owes: its stamp, until the first start on the Pi has confirmed it."""

    stamp: str | None = None
    # A start was sent with it: from here on an error is the Pi's answer, never one to retry.
    tried: bool = False
    passed: bool = False

    @property
    def pending(self) -> bool:
        return self.stamp is not None and not self.passed


class _SaidOnce(Generic[E]):
    """Passes every event on and notes the notices, so that a second try does not say them twice."""

    def __init__(self, on_event: Callable[[E], None]) -> None:
        self._on_event = on_event
        self.said: set[tuple[str, str]] = set()

    def __call__(self, event: E) -> None:
        if isinstance(event, Notice):
            self.said.add((event.level, event.message))
        self._on_event(event)

    def not_again(self) -> Callable[[E], None]:
        def sink(event: E) -> None:
            if not (isinstance(event, Notice) and (event.level, event.message) in self.said):
                self._on_event(event)

        return sink


def run_with_probe(host: Host, describe: Sequence[str], stop: threading.Event, on_event: Callable[[E], None],
                   remember: bool, run: Callable[[PiProbe, ProbeGuard, Callable[[E], None]], T]) -> T:
    """`run(probe, guard, on_event)`: a job that decides from what the Pi has and starts its camera.

    With `remember`, the probe kept from an earlier run is used when there is one, and no round trip is
    spent asking: `run` passes `guard` to its first Pipeline, which starts only if the Pi is unchanged.
    When it has changed (StaleProbe), or when the kept answer led to a refusal before anything started,
    the Pi is probed afresh and `run` runs again, without repeating the notices it already gave. A fresh
    probe is kept for the next run.
    """
    if remember:
        kept = recall_probe(host, describe)
        if kept is not None:
            guard = ProbeGuard(kept.stamp)
            said = _SaidOnce(on_event)
            try:
                return run(kept, guard, said)
            except StaleProbe:
                pass
            except PiorchError:
                # Sent to the Pi (its start may have run), or stopped by the user: the error is the answer.
                # Before that it was a decision taken from the kept answer, which a fresh one must confirm.
                if guard.tried or stop.is_set():
                    raise
            forget_probe(host, describe)
            on_event = said.not_again()
            on_event(StateChanged(State.PROBING, host.name))  # type: ignore[arg-type]
    return run(probe_pi(host, describe, stop, keep=remember), ProbeGuard(), on_event)


def choose_tool(probe: PiProbe, wanted: CameraTool) -> CameraTool:
    if wanted is not CameraTool.AUTO:
        if wanted not in probe.tools:
            raise RemoteError(f"{wanted.value} is not installed on the Pi",
                              f"install {TOOL_PACKAGE[wanted]} there, or use --camera-tool auto "
                              "(`piorch bootstrap` checks the camera stack)")
        return wanted
    for tool in TOOL_PREFERENCE:
        if tool in probe.tools:
            return tool
    raise RemoteError("no camera tool (rpicam-vid, libcamera-vid, raspivid) on the Pi",
                      "install rpicam-apps there (sudo apt install rpicam-apps); `piorch bootstrap` checks the stack")


def camera_stack(probe: PiProbe, tool: CameraTool | StillTool) -> CameraStack:
    """The board, what the chosen tool said about itself (when it was the one described) and its H.264 encoder."""
    facts = probe.tool_facts if probe.tool_facts is not None and probe.tool_facts.tool == tool.value else None
    return describe_stack(tool.is_legacy, probe.board, facts)


def check_pi_netcat(probe: PiProbe) -> NetcatFlavour:
    if probe.nc_flavour is None:
        raise RemoteError("nc is not installed on the Pi",
                          "install it there: sudo apt install netcat-openbsd (or run `piorch bootstrap`)")
    if probe.nc_flavour is NetcatFlavour.UNKNOWN:
        raise RemoteError("the Pi's nc is neither OpenBSD nor traditional netcat",
                          "install netcat-openbsd there: sudo apt install netcat-openbsd")
    if not probe.has_setsid:
        raise RemoteError("setsid is missing on the Pi", "install util-linux there: sudo apt install util-linux")
    return probe.nc_flavour


def resolve_laptop_ip(wanted: str | None, host: Host) -> str:
    """Where the Pi sends: the address asked for, else this end of the SSH connection."""
    laptop_ip = wanted or host.local_address()
    if not laptop_ip:
        raise RemoteError("cannot tell which laptop address the Pi should send to",
                          "pass --laptop-ip with the laptop's address on the Pi link")
    return laptop_ip


def stop_remote(host: Host, pgid: int, on_event: EventSink) -> bool:
    """Kill the pipeline's process group and confirm it is gone (the camera is then free)."""
    try:
        result = host.run(build_kill_script(pgid), timeout=15)
    except Exception as exc:  # the link may be the very thing that failed; report, do not mask the cause
        on_event(Notice("error", f"could not stop the camera on the Pi ({exc}); it stops at its time limit"))
        return False
    if "piorch-gone" in result.stdout:
        return True
    on_event(Notice("error", f"the camera pipeline on the Pi (process group {pgid}) would not stop: "
                             f"ssh in and run `kill -9 -- -{pgid}`"))
    return False


@dataclass
class RemoteExit:
    """The exit statuses the pipeline reported (None: not reported)."""

    camera: int | None = None
    nc: int | None = None
    pipeline: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {"camera": self.camera, "nc": self.nc, "pipeline": self.pipeline}


@dataclass
class Pipeline:
    """One run of `tool | nc` on the Pi, from start to whatever ended it."""

    host: Host
    script: str
    pgid: int | None = None
    exits: RemoteExit = field(default_factory=RemoteExit)
    stderr: str = ""
    freed: bool = True
    # The lines of the camera's timestamps (`piorch-pts LINE`) each poll read, in order, on the caller's
    # thread; None when the pipeline was not asked for timestamps.
    on_timestamps: Callable[[list[str]], None] | None = None
    # The check a remembered probe still owes (run_with_probe): this start makes it, or raises StaleProbe.
    guard: ProbeGuard | None = None
    _process: Process | None = None

    def start(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Start it and read its process group id; False (with the pipeline's own words in `stderr`) when
        it never reported one. StaleProbe when its guard found the Pi changed (nothing started)."""
        guard = self.guard if self.guard is not None and self.guard.pending else None
        script = self.script if guard is None else build_guarded_script(self.script, str(guard.stamp))
        if guard is not None:
            guard.tried = True
        self._process = self.host.start(script)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._process.next_line(0.2)
            if line is None:
                break
            if guard is not None and line.strip() == STALE_MARK:
                self.finish()
                raise StaleProbe()
            status = parse_status_line(line) if line else None
            if status and status[0] == PGID_MARK:
                self.pgid = status[1]
                if guard is not None:
                    guard.passed = True
                return True
        self.finish()
        return False

    def last_words(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else "no output"

    def start_problem(self) -> CameraProblem:
        return CameraProblem(f"the camera pipeline did not start on {self.host.name} ({self.last_words()})",
                             "run `piorch doctor` to check the Pi")

    def poll(self, wait: float) -> bool:
        """Read the status lines there are (waiting up to `wait` for the first); False once the channel
        closed."""
        return self._take(wait)[0]

    def read_rest(self) -> None:
        """Every line still waiting, without waiting for more: the last timestamps (the Pi's reader sends what
        it holds as it is stopped) and status lines that came after the last poll."""
        # Bounded: a camera that could not be stopped goes on writing lines, and nothing waits for them here.
        for _ in range(REST_READS):
            open_still, taken = self._take(0.0)
            if not open_still or not taken:
                return

    def _take(self, wait: float) -> tuple[bool, int]:
        """poll's work: whether the channel is still open, and how many lines were taken."""
        assert self._process is not None, "start() first"
        line = self._process.next_line(wait)
        stamps: list[str] = []
        taken = 0
        while line:
            stamp = parse_pts_line(line)
            if stamp is None:
                self._read(line)
            else:
                stamps.append(stamp)
            taken += 1
            if taken == POLL_LINES:
                break
            line = self._process.next_line(0.0)
        if stamps and self.on_timestamps is not None:
            self.on_timestamps(stamps)
        return line is not None, taken

    def _read(self, line: str) -> None:
        status = parse_status_line(line)
        if status and status[0] == CAMERA_EXIT_MARK:
            self.exits.camera = status[1]
        elif status and status[0] == NC_EXIT_MARK:
            self.exits.nc = status[1]

    @property
    def camera_done(self) -> bool:
        return self.exits.camera is not None

    @property
    def reported_end(self) -> bool:
        """Both ends reported: the channel closing after this is the normal end, not a lost connection."""
        return self.exits.nc is not None

    def stop(self, on_event: EventSink) -> None:
        if self.pgid is not None:
            self.freed = stop_remote(self.host, self.pgid, on_event)

    def finish(self, wait_for_exit: bool = True) -> None:
        """Collect the pipeline's exit status (unless its connection is known broken) and its stderr."""
        if self._process is None:
            return
        if wait_for_exit:
            self.exits.pipeline = self._process.wait(5)
        self.read_rest()
        self.stderr = self._process.stderr_text()
        self._process.close()


def firewall_problem(stderr: str, laptop_ip: str, port: int) -> CameraProblem | None:
    """The Pi's nc could not reach the laptop: the connection is the cause to report, not the camera."""
    unreachable = parse_nc_failure(stderr)
    if not unreachable:
        return None
    return CameraProblem(
        f"the Pi could not send to the laptop at {laptop_ip}:{port} ({unreachable})",
        f"allow TCP port {port} in the laptop's firewall (e.g. sudo ufw allow {port}/tcp) "
        "and check --laptop-ip is the laptop's address on the Pi link",
    )


def explain_pipeline(pipeline: Pipeline, camera_failure: Callable[[str, int | None], CameraProblem],
                     laptop_ip: str, port: int) -> CameraProblem | None:
    """Why a finished pipeline failed, in words a user can act on; None when it reported success.

    `camera_failure(stderr, exit_code)` reads the tool's own messages (video and still tools differ).
    """
    if pipeline.pgid is None:
        return pipeline.start_problem()
    if pipeline.exits.nc not in (0, None) and (problem := firewall_problem(pipeline.stderr, laptop_ip, port)):
        return problem
    if pipeline.exits.camera not in (0, None):
        return camera_failure(pipeline.stderr, pipeline.exits.camera)
    if pipeline.exits.camera is None:
        return CameraProblem(f"the camera pipeline on {pipeline.host.name} ended without reporting "
                             f"({pipeline.last_words()})", "run `piorch doctor` to check the Pi")
    return None
