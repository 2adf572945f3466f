"""Fleet benchmark: N simulated Pis recorded at once by piorch, against N plain `nc -l`, on 127.0.0.1.

Run: `.venv/bin/python benchmarks/fleet.py [--pis 8] [--seconds 20] [--bitrate 25000000] [--rounds 1]
[--no-mp4] [--terminal pty|devnull] [--json]`.

Target (from the issue): 8 Pis at 25 Mbit/s each, no byte lost, the piorch process under 20% of one core
including the dashboard. Modes, each with fresh simulated Pis, interleaved round after round:

- nc: the baseline. Per Pi, the camera simulator piped into `nc -v -N` (the sender piorch's pipeline runs)
  and a plain `nc.openbsd -l 127.0.0.1 PORT > file` receiving it. CPU: the 8 listeners' own (wait4).
- piorch, no dashboard: `run_fleet` in this process with LocalHost "Pis" (each its own stand-in camera,
  lock file and log), container h264, events to a subscriber that only marks the streaming window.
- piorch + dashboard: the same with the FleetDashboard drawing at its own 4 Hz into a pseudo-terminal
  (drained by a `wc -c` child, so the drain costs this process nothing) or /dev/null.
- piorch + dashboard, mp4: the default container; --keep-raw so the raw stream can still be checked.

piorch's CPU is getrusage(RUSAGE_SELF): every thread of this process (receiver, hashers, progress clocks,
dashboard), not its children. The simulators, their nc senders and the shells LocalHost starts are child
processes and are excluded; they are shown apart as "Pi side". This benchmark's own code is idle in that
window (the main thread waits in join). "% of one core" is CPU seconds over wall seconds of the streaming
window: from the moment every Pi reports `recording` to the first Pi that stops. The whole run (probe, start,
finish, fsync, remux) is shown too. Over SSH a real run also pays paramiko for the control channel; the
video itself goes through nc, not SSH, so that is small, but LocalHost does not measure it.

No byte lost: each received stream (every segment file, in order) is hashed here and compared with the
bytes and SHA-256 the simulator logged for what the kernel accepted from it (runs.jsonl). The simulators
are Python and share the machine's cores: the achieved Mbit/s per Pi (bytes the simulator sent over the
requested time) is printed next to the request, so a machine that cannot keep pace is seen, not hidden.

Targets are reported, not asserted (machines are noisy): exit 0 when every mode was measured and every
byte arrived, 1 on a lost byte, a failed Pi or a deadline, 130 on Ctrl+C.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.events import State, StateChanged
from orchestrator.jobs.fleet import FleetResult, FromPi, run_fleet
from orchestrator.netcat import NetcatFlavour, build_nc_send_argv
from orchestrator.pi.camera import build_camera_argv
from orchestrator.pi.host import LocalHost
from orchestrator.resolve import plan_fleet
from orchestrator.settings import CameraSettings, CameraTool, ReceiveSettings, RecordSettings
from orchestrator.sim.camera import RUNNING_PREFIX, RUNS_FILE
from orchestrator.sim.stand_in import install_stand_ins

HOST = "127.0.0.1"
MIB = 1 << 20
# The shipped clip is 640x360 at 25 fps; the simulator checks the options like the real tool.
WIDTH, HEIGHT, FPS = 640, 360, 25
TARGET_PERCENT = 20.0
# A Pi sending less than this share of its requested bytes did not keep pace (the machine, not piorch).
PACE_SHARE = 0.98
# Waits, each with its reason: nc listens within milliseconds, 10 s means it is broken; 8 Python simulators
# start within a few seconds even on 2 busy cores, 30 s covers that and nc's tail; piorch's own run has
# deadlines of 15 s overrun + 10 s drain per Pi and up to 120 s of remux, so 200 s bounds a stuck thread.
LISTEN_DEADLINE_S = 10.0
NC_GRACE_S = 30.0
FLEET_GRACE_S = 200.0
# After Ctrl+C or a deadline: the recordings stop within their own 3 s drain + 15 s kill script.
STOP_GRACE_S = 60.0
KILL_GRACE_S = 5.0
TERMINAL_COLUMNS, TERMINAL_ROWS = 160, 40
MODES = ("nc", "piorch-null-h264", "piorch-dash-h264", "piorch-dash-mp4")


class MeasurementFailed(Exception):
    """A mode could not be measured (a Pi failed, a deadline passed): the benchmark fails."""


# --- measuring ------------------------------------------------------------------------------------------
def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sha256_mb_s(size_mb: int = 64) -> float:
    """This CPU's SHA-256 speed (MB = 10^6 bytes): piorch hashes every received byte, so its share of the
    CPU figure depends on it (about 4x faster on CPUs with SHA extensions than on ones without)."""
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    started = time.process_time()
    for _ in range(size_mb):
        digest.update(block)
    return size_mb * MIB / 1e6 / max(time.process_time() - started, 1e-9)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat: how loaded the whole machine was."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user time
    return total - idle, total


def busy_share(start: tuple[int, int], end: tuple[int, int]) -> float:
    """Share of all cores busy between two machine_ticks() readings (1.0 = every core all the time)."""
    total = end[1] - start[1]
    return (end[0] - start[0]) / total if total > 0 else 0.0


@dataclass(frozen=True)
class Snapshot:
    at: float
    cpu_s: float
    ticks: tuple[int, int]


def snapshot() -> Snapshot:
    return Snapshot(time.monotonic(), self_cpu_s(), machine_ticks())


class StreamingWindow:
    """A fleet subscriber that marks the steady part of a run: from every Pi recording to the first stop.

    Only StateChanged events do anything (a few per Pi per run), so it adds nothing measurable to the data
    path; getrusage covers every thread of the process wherever it is called from.
    """

    def __init__(self, pis: int) -> None:
        self._pis = pis
        self._recording: set[str] = set()
        self._lock = threading.Lock()
        self.start: Snapshot | None = None
        self.end: Snapshot | None = None

    def __call__(self, tagged: FromPi) -> None:
        event = tagged.event
        if not isinstance(event, StateChanged):
            return
        with self._lock:
            if event.state is State.RECORDING:
                self._recording.add(tagged.pi)
                if len(self._recording) == self._pis and self.start is None:
                    self.start = snapshot()
            elif tagged.pi in self._recording and self.start is not None and self.end is None:
                self.end = snapshot()


def fan_out(*sinks: Callable[[FromPi], None]) -> Callable[[FromPi], None]:
    def send(tagged: FromPi) -> None:
        for sink in sinks:
            sink(tagged)

    return send


# --- simulated Pis --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimPi:
    name: str
    bin_dir: Path
    log_dir: Path

    @property
    def camera(self) -> Path:
        return self.bin_dir / CameraTool.RASPIVID.value


def make_sim_pis(folder: Path, count: int) -> list[SimPi]:
    """One stand-in camera each, with its own lock (a shared lock would make all but one "busy") and log."""
    pis = []
    for index in range(1, count + 1):
        root = folder / f"pi-{index}"
        pi = SimPi(f"sim-pi-{index}", root / "bin", root / "log")
        install_stand_ins(pi.bin_dir, (CameraTool.RASPIVID.value,),
                          extra_env={"PIORCH_SIM_LOG": str(pi.log_dir), "PIORCH_SIM_LOCK": str(root / "camera.lock")})
        pis.append(pi)
    return pis


def read_sim_runs(pi: SimPi) -> list[dict[str, Any]]:
    path = pi.log_dir / RUNS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def kill_leftover_simulators(pis: list[SimPi]) -> None:
    """A simulator still running (its `running-<pid>` marker exists) after a failed run: kill it by pid."""
    for pi in pis:
        for marker in pi.log_dir.glob(f"{RUNNING_PREFIX}*") if pi.log_dir.exists() else ():
            pid = int(marker.name.removeprefix(RUNNING_PREFIX))
            try:
                # The pid may have been reused since: only a process that is this simulator is killed.
                if b"orchestrator.sim.camera" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass  # it ended on its own meanwhile


def camera_settings(bitrate: int, seconds: float) -> CameraSettings:
    return CameraSettings(bitrate=bitrate, width=WIDTH, height=HEIGHT, fps=FPS, duration_ms=round(seconds * 1000))


# --- results --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PiRun:
    pi: str
    requested_bps: int
    sent_bytes: int
    sent_frames: int
    expected_frames: int
    achieved_bps: float  # what the simulator sent over the requested time
    received_bytes: int
    lost: str  # "" when every byte arrived, else what differs


@dataclass(frozen=True)
class ModeRun:
    key: str
    label: str
    round: int
    cpu_s: float  # the receiver's CPU in the streaming window
    window_s: float
    whole_cpu_s: float  # the receiver's CPU from start to finish (piorch: probe, start, finish, remux)
    whole_s: float
    pi_side_cpu_s: float  # simulators + their senders (+ LocalHost's shells), the whole run
    machine_busy: float  # share of all cores busy in the window
    terminal_bytes: int | None  # what the dashboard wrote to the pseudo-terminal
    pis: list[PiRun] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return 100 * self.cpu_s / self.window_s if self.window_s > 0 else 0.0

    @property
    def whole_percent(self) -> float:
        return 100 * self.whole_cpu_s / self.whole_s if self.whole_s > 0 else 0.0

    @property
    def lost(self) -> list[str]:
        return [f"{pi.pi}: {pi.lost}" for pi in self.pis if pi.lost]


def sha256_files(paths: list[Path]) -> tuple[int, str]:
    """Bytes and SHA-256 of the files read one after the other (the segments of one stream, in order)."""
    digest = hashlib.sha256()
    size = 0
    for path in paths:
        with open(path, "rb") as source:
            while chunk := source.read(4 * MIB):
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


def check_stream(pi: SimPi, files: list[Path], bitrate: int, seconds: float, reported_sha: str | None) -> PiRun:
    """Compare what arrived with what this Pi's simulator says the kernel accepted from it."""
    runs = [run for run in read_sim_runs(pi) if run["reason"] != "usage"]
    received, sha = sha256_files(files) if files and all(path.exists() for path in files) else (0, "")
    if len(runs) != 1:
        lost = f"expected one simulator run in {pi.log_dir / RUNS_FILE}, found {len(runs)}"
        return PiRun(pi.name, bitrate, 0, 0, 0, 0.0, received, lost)
    run = runs[0]
    lost = ""
    if not files:
        lost = "no file received"
    elif received != run["bytes"] or sha != run["sha256"]:
        lost = (f"received {received} bytes (sha256 {sha[:12]}), "
                f"the simulator sent {run['bytes']} ({run['sha256'][:12]})")
    elif reported_sha is not None and reported_sha != sha:
        lost = f"piorch's own sha256 {reported_sha[:12]} differs from the file's {sha[:12]}"
    elif run["exit_code"] != 0 or run["reason"] != "timeout":
        lost = f"the simulator ended with {run['reason']} (exit {run['exit_code']})"
    return PiRun(pi.name, bitrate, run["bytes"], run["frames"], round(seconds * FPS), run["bytes"] * 8 / seconds,
                 received, lost)


# --- the baseline: plain nc -----------------------------------------------------------------------------
class Child:
    """A process in its own session, reaped with wait4 so its own CPU is known; killable as a group."""

    def __init__(self, argv: list[str], stdin: Any, stdout: Any, stderr: Any) -> None:
        self.popen = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True)
        self.argv = argv
        self.pid = self.popen.pid
        self.exit_code: int | None = None
        self.cpu_s = 0.0
        self.exited_at: float | None = None

    def poll(self) -> bool:
        """Reap it if it exited (WNOHANG); True once reaped."""
        if self.exit_code is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == 0:
                return False
            self.exited_at = time.monotonic()
            self.exit_code = self.popen.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_s = usage.ru_utime + usage.ru_stime
        return True

    def kill(self) -> None:
        if self.exit_code is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already gone
            deadline = time.monotonic() + KILL_GRACE_S
            while not self.poll() and time.monotonic() < deadline:
                time.sleep(0.02)


def is_listening(port: int) -> bool:
    """Some socket listens on 127.0.0.1:port (from /proc: no test connection to use up nc's one accept)."""
    with open("/proc/net/tcp") as table:
        next(table)
        return any(columns[3] == "0A" and int(columns[1].rsplit(":", 1)[1], 16) == port
                   for columns in (line.split() for line in table))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_all(children: list[Child], deadline: float, what: str) -> None:
    while not all(child.poll() for child in children):
        if time.monotonic() > deadline:
            raise MeasurementFailed(f"{what} did not finish in time")
        time.sleep(0.05)


def run_nc_baseline(folder: Path, count: int, bitrate: int, seconds: float, round_index: int) -> ModeRun:
    nc = shutil.which("nc.openbsd")
    if nc is None:
        raise MeasurementFailed("nc.openbsd not found: sudo apt install netcat-openbsd")
    pis = make_sim_pis(folder, count)
    camera = camera_settings(bitrate, seconds)
    listeners: list[Child] = []
    senders: list[Child] = []
    files: list[Path] = []
    with ExitStack() as logs:
        try:
            first = snapshot()
            for pi in pis:
                port = free_port()
                files.append(pi.log_dir.parent / "received.bin")
                received = logs.enter_context(open(files[-1], "wb"))
                listen_log = logs.enter_context(open(pi.log_dir.parent / "listen.log", "wb"))
                listeners.append(Child([nc, "-l", HOST, str(port)], subprocess.DEVNULL, received, listen_log))
                deadline = time.monotonic() + LISTEN_DEADLINE_S
                while not is_listening(port):
                    if listeners[-1].poll() or time.monotonic() > deadline:
                        raise MeasurementFailed(f"nc -l did not listen on port {port}")
                    time.sleep(0.01)
                camera_argv = [str(pi.camera), *build_camera_argv(camera, CameraTool.RASPIVID)[1:]]
                send_log = logs.enter_context(open(pi.log_dir.parent / "send.log", "wb"))
                # The pipeline piorch runs on a Pi: camera -> pipe -> `nc -v -N` (closes when the camera ends).
                sim = Child(camera_argv, subprocess.DEVNULL, subprocess.PIPE, send_log)
                assert sim.popen.stdout is not None
                sender = Child(build_nc_send_argv(NetcatFlavour.OPENBSD, HOST, port, nc), sim.popen.stdout,
                               subprocess.DEVNULL, send_log)
                sim.popen.stdout.close()  # the pipe's read end belongs to the sender now
                senders += [sim, sender]
            wait_all(listeners, time.monotonic() + seconds + NC_GRACE_S, "plain nc -l")
            end_ticks = machine_ticks()
            wait_all(senders, time.monotonic() + NC_GRACE_S, "the simulators and their nc senders")
            for child in (*listeners, *senders):
                if child.exit_code != 0:
                    raise MeasurementFailed(f"{shlex.join(child.argv)} exited with {child.exit_code}")
        finally:
            for child in (*senders, *listeners):
                child.kill()
    # The window runs from the first listener's start (nc idles until data comes) to the last one's exit.
    ended = max(child.exited_at or first.at for child in listeners)
    cpu = sum(child.cpu_s for child in listeners)
    checked = [check_stream(pi, [path], bitrate, seconds, None) for pi, path in zip(pis, files, strict=True)]
    return ModeRun("nc", f"plain nc -l x{count} (baseline)", round_index, cpu, ended - first.at, cpu,
                   ended - first.at, sum(child.cpu_s for child in senders), busy_share(first.ticks, end_ticks),
                   None, checked)


# --- piorch ---------------------------------------------------------------------------------------------
@contextmanager
def dashboard_terminal(kind: str) -> Iterator[tuple[Any, Callable[[], int | None]]]:
    """A rich Console that is a real terminal to rich, and a function giving the bytes it wrote (pty only).

    pty: a pseudo-terminal whose master side is read by a `wc -c` child, so drawing costs the kernel's tty
    work in this process, as on a real terminal, while draining costs this process nothing.
    """
    from rich.console import Console

    if os.environ.get("TERM", "dumb") in ("", "dumb", "unknown"):
        os.environ["TERM"] = "xterm-256color"  # rich draws nothing live on a dumb terminal
    if kind == "devnull":
        with open(os.devnull, "w") as sink:
            yield Console(file=sink, force_terminal=True, width=TERMINAL_COLUMNS, height=TERMINAL_ROWS,
                          color_system="truecolor"), lambda: None
        return
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", TERMINAL_ROWS, TERMINAL_COLUMNS, 0, 0))
    drain = subprocess.Popen(["wc", "-c"], stdin=master, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    os.close(master)
    written: list[int] = []
    try:
        with open(slave, "w", encoding="utf-8", closefd=True) as terminal:
            yield Console(file=terminal, force_terminal=True, width=TERMINAL_COLUMNS, height=TERMINAL_ROWS,
                          color_system="truecolor"), lambda: written[0] if written else None
    finally:
        try:
            # The slave is closed: wc reads what is left, gets EIO and prints its count (exit 1 for the EIO).
            out, _ = drain.communicate(timeout=KILL_GRACE_S)
            written.append(int(out.split()[0]) if out.split() else 0)
        except subprocess.TimeoutExpired:
            drain.kill()
            drain.wait(KILL_GRACE_S)


def run_fleet_with_deadline(plan: list[tuple[str, RecordSettings]], connect: Callable[[str], LocalHost],
                            on_event: Callable[[FromPi], None], deadline_s: float) -> tuple[FleetResult, Snapshot,
                                                                                            Snapshot]:
    """run_fleet on a worker thread, so this thread can keep a deadline and turn Ctrl+C into a stop.

    It waits on an Event, not Thread.join: a join interrupted by Ctrl+C marks a still running thread as
    stopped on Python 3.11 (the bpo-45274 fix releases the lock the running thread holds), and the next join
    would then return at once while the recordings still run.
    """
    stop = threading.Event()
    done = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        box["start"] = snapshot()
        try:
            box["result"] = run_fleet(plan, connect, on_event, stop)
        except BaseException as exc:  # handed to the main thread, which raises it
            box["error"] = exc
        box["end"] = snapshot()
        done.set()

    threading.Thread(target=work, name="bench-fleet", daemon=True).start()
    deadline = time.monotonic() + deadline_s
    try:
        while not done.wait(0.5):
            if time.monotonic() > deadline:
                stop.set()
                done.wait(STOP_GRACE_S)
                raise MeasurementFailed(f"run_fleet did not finish within {deadline_s:.0f} s")
    except KeyboardInterrupt:
        stop.set()  # Ctrl+C: the recordings stop and keep what arrived, within their own deadlines
        if not done.wait(STOP_GRACE_S):
            progress(f"the recordings did not stop within {STOP_GRACE_S:.0f} s")
        raise
    if "error" in box:
        raise MeasurementFailed(f"run_fleet raised {type(box['error']).__name__}: {box['error']}")
    return box["result"], box["start"], box["end"]


def run_piorch(folder: Path, count: int, bitrate: int, seconds: float, container: str, dashboard: bool,
               terminal: str, round_index: int) -> ModeRun:
    from orchestrator.ui.dashboard import FleetDashboard

    pis = make_sim_pis(folder, count)
    by_name = {pi.name: pi for pi in pis}
    base = RecordSettings(
        camera=camera_settings(bitrate, seconds),
        receive=ReceiveSettings(port=0, out_dir=folder / "out", bind=HOST),
        camera_tool=CameraTool.RASPIVID, laptop_ip=HOST, container=container,
        # The remux replaces the raw stream; keeping it is the only way to check its bytes against the Pi's.
        keep_raw=container != "h264",
    )
    plan = plan_fleet([pi.name for pi in pis], base)

    def connect(name: str) -> LocalHost:
        return LocalHost(name, path_prepend=by_name[name].bin_dir)

    window = StreamingWindow(count)
    children_before = children_cpu_s()
    try:
        if dashboard:
            with dashboard_terminal(terminal) as (console, terminal_bytes):
                display = FleetDashboard([pi.name for pi in pis], console=console)
                with display.running():
                    result, first, last = run_fleet_with_deadline(plan, connect, fan_out(window, display),
                                                                  seconds + FLEET_GRACE_S)
            written = terminal_bytes()
        else:
            result, first, last = run_fleet_with_deadline(plan, connect, window, seconds + FLEET_GRACE_S)
            written = None
    finally:
        kill_leftover_simulators(pis)
    pi_side = children_cpu_s() - children_before
    failed = [f"{o.pi}: {o.state.value} "
              f"{o.error or (o.result.problem.message if o.result and o.result.problem else '')}"
              for o in result.outcomes if o.state is not State.DONE]
    if failed:
        raise MeasurementFailed("a Pi did not finish: " + "; ".join(failed))
    if window.start is None or window.end is None:
        raise MeasurementFailed("no streaming window: the Pis never all recorded at once")
    checked = []
    for outcome in result.outcomes:
        assert outcome.result is not None  # DONE has a result
        files = list(outcome.result.files)
        # mp4/mkv: the manifest names the remuxed file; the raw stream kept beside it is what was received.
        raws = [f.path if f.path.suffix == ".h264" else f.path.with_suffix(".h264") for f in files]
        reported = files[0].sha256 if len(files) == 1 else None
        pi_run = check_stream(by_name[outcome.pi], raws, bitrate, seconds, reported)
        if container != "h264" and any(f.path.suffix != f".{container}" for f in files) and not pi_run.lost:
            pi_run = PiRun(**{**asdict(pi_run), "lost": f"no .{container} file: the remux failed"})
        checked.append(pi_run)
    label = f"piorch {'+ dashboard' if dashboard else 'no dashboard'} ({container})"
    key = f"piorch-{'dash' if dashboard else 'null'}-{container}"
    return ModeRun(key, label, round_index, window.end.cpu_s - window.start.cpu_s, window.end.at - window.start.at,
                   last.cpu_s - first.cpu_s, last.at - first.at, pi_side, busy_share(window.start.ticks,
                                                                                      window.end.ticks),
                   written, checked)


# --- summary --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    key: str
    label: str
    percent: float  # median over rounds, % of one core in the streaming window
    ratio: float | None  # over the nc baseline, median of per-round ratios
    whole_percent: float
    pi_side_percent: float
    machine_busy: float
    achieved_min_mbps: float
    achieved_median_mbps: float
    frames_share_min: float
    terminal_bytes_per_s: float | None
    lost: list[str]
    target: str
    passed: bool | None


def summarise(runs: list[ModeRun], keys: list[str]) -> list[Row]:
    rows = []
    baseline = {run.round: run for run in runs if run.key == "nc"}
    for key in keys:
        mine = [run for run in runs if run.key == key]
        ratios = [run.percent / baseline[run.round].percent for run in mine
                  if key != "nc" and run.round in baseline and baseline[run.round].percent > 0]
        achieved = [pi.achieved_bps / 1e6 for run in mine for pi in run.pis]
        frames = [pi.sent_frames / pi.expected_frames for run in mine for pi in run.pis if pi.expected_frames]
        written = [run.terminal_bytes / run.window_s for run in mine if run.terminal_bytes is not None]
        percent = statistics.median(run.percent for run in mine)
        dashboard = key.startswith("piorch-dash")
        rows.append(Row(
            key, mine[0].label, percent, statistics.median(ratios) if ratios else None,
            statistics.median(run.whole_percent for run in mine),
            statistics.median(100 * run.pi_side_cpu_s / run.whole_s for run in mine),
            statistics.median(run.machine_busy for run in mine),
            min(achieved, default=0.0), statistics.median(achieved) if achieved else 0.0, min(frames, default=0.0),
            statistics.median(written) if written else None,
            [f"round {run.round + 1}: {item}" for run in mine for item in run.lost],
            f"< {TARGET_PERCENT:g}% of one core" if dashboard else "", percent < TARGET_PERCENT if dashboard else None,
        ))
    return rows


def render_table(rows: list[Row], args: argparse.Namespace, cpus: int, sha_mb_s: float) -> str:
    stream_mb_s = args.pis * args.bitrate / 8 / 1e6
    lines = [
        f"{args.pis} simulated Pis x {args.bitrate / 1e6:g} Mbit/s for {args.seconds:g} s each, over {HOST}; "
        f"{cpus} CPUs; median of {args.rounds} round(s); dashboard into a {args.terminal}",
        f"this CPU hashes SHA-256 at {sha_mb_s:.0f} MB/s: the {stream_mb_s:.3g} MB/s piorch hashes cost at least "
        f"{100 * stream_mb_s / sha_mb_s:.1f}% of one core of the figures below",
        f"{'mode':<32} {'CPU %':>6} {'ratio':>6} {'whole %':>7} {'Pi side %':>9} {'machine':>7} "
        f"{'Mbit/s/Pi min/med':>17} {'frames':>6} {'term KB/s':>9} {'bytes':>5}  {'target':<19} result",
    ]
    for row in rows:
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        term = f"{row.terminal_bytes_per_s / 1000:.1f}" if row.terminal_bytes_per_s is not None else "-"
        result = "-" if row.passed is None else ("PASS" if row.passed else "FAIL")
        lines.append(
            f"{row.label:<32} {row.percent:>6.1f} {ratio:>6} {row.whole_percent:>7.1f} {row.pi_side_percent:>9.0f} "
            f"{row.machine_busy * 100:>6.0f}% {row.achieved_min_mbps:>8.2f}/{row.achieved_median_mbps:<8.2f} "
            f"{row.frames_share_min * 100:>5.0f}% {term:>9} {'LOST' if row.lost else 'ok':>5}  {row.target or '-':<19} "
            f"{result}")
    by_key = {row.key: row for row in rows}
    if "piorch-dash-h264" in by_key and "piorch-null-h264" in by_key:
        cost = by_key["piorch-dash-h264"].percent - by_key["piorch-null-h264"].percent
        lines.append(f"the dashboard's own cost: {cost:+.1f}% of one core (h264 with it minus h264 without it)")
    slow = [row for row in rows if row.achieved_min_mbps * 1e6 < PACE_SHARE * args.bitrate]
    if slow:
        lines.append(f"NOTE: simulators did not keep pace in {', '.join(row.label for row in slow)}: the slowest Pi "
                     f"sent {min(row.achieved_min_mbps for row in slow):.2f} of {args.bitrate / 1e6:g} Mbit/s; "
                     "the CPU figures are for what was achieved")
    lines += [
        "CPU %: user+sys of the receiving process(es) over wall time in the streaming window, in % of ONE core;",
        "  piorch: getrusage(RUSAGE_SELF) of this process, every thread, children (simulators, nc senders, shells)",
        "  excluded; window = all Pis recording -> first Pi stops. nc: the listeners' own CPU (wait4), their life.",
        "ratio: CPU % over the baseline's in the same round. whole %: the whole run_fleet call (probe, start, fsync,",
        "  remux, manifests) over its wall time. Pi side %: simulators + senders (+ LocalHost shells), of one core.",
        "machine: share of all cores busy in the window. Mbit/s/Pi: what each simulator sent over the requested",
        "  time (min and median over Pis); frames: the slowest Pi's frames sent of fps x seconds.",
        "bytes: every received stream hashed here == bytes and SHA-256 the simulator logged (runs.jsonl).",
    ]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pis", type=int, default=8, help="simulated Pis [8]")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each recording [20]")
    parser.add_argument("--bitrate", type=int, default=25_000_000, help="bit/s each Pi sends [25000000]")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every mode, interleaved [1]")
    parser.add_argument("--no-mp4", action="store_true", help="skip the run with the default mp4 container")
    parser.add_argument("--modes", default="", help=f"only these modes, comma-separated (of {', '.join(MODES)}; "
                                                    "to profile one) [all]")
    parser.add_argument("--terminal", choices=("pty", "devnull"), default="pty",
                        help="where the dashboard draws: a pseudo-terminal or /dev/null [pty]")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp folder goes [system temp]")
    args = parser.parse_args(argv)
    if args.pis < 1 or args.rounds < 1 or not 1 <= args.seconds <= 3600:
        parser.error("--pis and --rounds must be at least 1, --seconds 1 to 3600")
    unknown = set(filter(None, args.modes.split(","))) - set(MODES)
    if unknown:
        parser.error(f"unknown --modes {', '.join(sorted(unknown))}: pick from {', '.join(MODES)}")
    if not 100_000 <= args.bitrate <= 25_000_000:
        parser.error("--bitrate must be 100000 to 25000000 (raspivid's limit at H.264 level 4)")
    return args


def run_benchmark(args: argparse.Namespace) -> tuple[list[ModeRun], list[str]]:
    keys = [key for key in MODES if not (args.no_mp4 and key.endswith("mp4"))]
    if args.modes:
        keys = [key for key in keys if key in args.modes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="piorch-fleet-bench-", dir=args.dir))
    runs: list[ModeRun] = []
    try:
        for round_index in range(args.rounds):
            for key in keys:
                folder = work / f"{key}-{round_index}"
                # Dirty pages of the previous mode must not be written back during this one.
                os.sync()
                if key == "nc":
                    run = run_nc_baseline(folder, args.pis, args.bitrate, args.seconds, round_index)
                else:
                    _, kind, container = key.split("-")
                    run = run_piorch(folder, args.pis, args.bitrate, args.seconds, container, kind == "dash",
                                     args.terminal, round_index)
                progress(f"round {round_index + 1}/{args.rounds} {run.label}: {run.percent:.1f}% of one core "
                         f"({run.cpu_s:.2f} s CPU in {run.window_s:.1f} s), whole run {run.whole_percent:.1f}%, "
                         f"machine {run.machine_busy * 100:.0f}% busy, "
                         f"{'LOST: ' + '; '.join(run.lost) if run.lost else 'every byte arrived'}")
                runs.append(run)
                shutil.rmtree(folder, ignore_errors=True)
        return runs, keys
    finally:
        shutil.rmtree(work, ignore_errors=True)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        runs, keys = run_benchmark(args)
    except MeasurementFailed as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    rows = summarise(runs, keys)
    cpus = os.cpu_count() or 0
    sha_mb_s = sha256_mb_s()
    if args.json:
        print(json.dumps({
            "pis": args.pis, "seconds": args.seconds, "bitrate": args.bitrate, "rounds": args.rounds,
            "terminal": args.terminal, "cpus": cpus, "target_percent_of_one_core": TARGET_PERCENT,
            "sha256_mb_s": sha_mb_s,
            "modes": [asdict(row) for row in rows],
            "runs": [{**asdict(run), "percent": run.percent, "whole_percent": run.whole_percent} for run in runs],
        }, indent=2))
    else:
        print(render_table(rows, args, cpus, sha_mb_s))
    lost = [item for row in rows for item in row.lost]
    for item in lost:
        print(f"bench: LOST BYTES: {item}", file=sys.stderr)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
