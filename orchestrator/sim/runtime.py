"""What every simulated camera tool does around its picture-taking: the shared effects.

One `run_tool` main for the video and the still simulators: the Pi profile from the environment, signal
handling, the JSON run log (PIORCH_SIM_LOG/runs.jsonl and a running-<pid> marker), the camera lock (an
flock on PIORCH_SIM_LOCK), injected faults (PIORCH_SIM_FAULT), the refusal of bad options as the real tool
refuses them, and an output that counts and hashes every byte the kernel accepted.

Exit codes: 0 done or help; 1 broken output pipe, injected crash, something not simulated (`simulator:`);
2 the simulator itself was misused (unknown tool, impossible Pi); 64 legacy usage error (EX_USAGE); 70 legacy
camera failure (EX_SOFTWARE); 127 a tool this Pi does not have; 255 rpicam error (main returns -1); 128+N
after signal N (SIGHUP 129, SIGINT 130, SIGTERM 143), logged first.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import TypeVar

from orchestrator.sim.options import Dialect
from orchestrator.sim.profile import LIBCAMERA_BUILD, PiProfile, profile_from_env
from orchestrator.sim.pts import DROP_FRAMES, parse_drop_frames
from orchestrator.sim.raspicli import RASPICAM_FAILED, SimUsageError

ENV_LOG = "PIORCH_SIM_LOG"
ENV_LOCK = "PIORCH_SIM_LOCK"
ENV_FAULT = "PIORCH_SIM_FAULT"
ENV_IGNORE_HUP_PIPE = "PIORCH_SIM_IGNORE_HUP_PIPE"
RUNS_FILE = "runs.jsonl"
RUNNING_PREFIX = "running-"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_MISUSED = 2
EXIT_LEGACY_USAGE = 64  # sysexits EX_USAGE, what RaspiVid.c exits with on a bad option
EXIT_LEGACY_SOFTWARE = 70  # sysexits EX_SOFTWARE, RaspiVid.c when the camera component fails
EXIT_NOT_FOUND = 127  # what a shell says for a command it cannot find
EXIT_RPICAM_ERROR = 255  # rpicam-vid's main() catches the exception and returns -1

LEGACY_BUSY_LINES = (
    "mmal: mmal_vc_component_enable: failed to enable component: ENOSPC",
    "mmal: camera component couldn't be enabled",
    "mmal: main: Failed to create camera component",
    *RASPICAM_FAILED,
)
LEGACY_NO_CAMERA_LINES = (
    "mmal: Cannot read camera info, keeping the defaults for OV5647",
    "mmal: mmal_vc_component_create: failed to create component 'vc.ril.camera' (1:ENOMEM)",
    "mmal: mmal_component_create_core: could not create component 'vc.ril.camera' (1)",
    "mmal: Failed to create camera component",
    "mmal: main: Failed to create camera component",
    "mmal: Camera is not detected. Please check carefully the camera module is installed correctly",
    "",
)
# A blocked write and every sleep wake up this often to notice a signal or the end of the run.
WAKE_INTERVAL_S = 0.05


class Reason(str, Enum):
    TIMEOUT = "timeout"  # -t elapsed, or rpicam's --frames count reached
    SIGNAL = "signal"
    EPIPE = "epipe"
    ERROR = "error"
    USAGE = "usage"  # bad option, or help/version/list-cameras (nothing recorded)


@dataclass(frozen=True)
class Fault:
    no_camera: bool = False
    crash_after: int | None = None
    ignore_term: bool = False  # the camera process ignores SIGTERM: only SIGKILL ends it


def parse_fault(text: str | None) -> Fault:
    """PIORCH_SIM_FAULT: "", or a comma-separated list of no-camera, crash-after=N, ignore-term."""
    fault = Fault()
    for word in (text or "").split(","):
        name, _, value = word.partition("=")
        if word == "no-camera":
            fault = Fault(True, fault.crash_after, fault.ignore_term)
        elif word == "ignore-term":
            fault = Fault(fault.no_camera, fault.crash_after, True)
        elif name == "crash-after" and value.isdigit():
            fault = Fault(fault.no_camera, int(value), fault.ignore_term)
        elif name == DROP_FRAMES:
            parse_drop_frames(value)  # played by pts.py; a bad spec is refused here with the others
        elif word:
            raise ValueError(f"{ENV_FAULT}={text!r}: expected no-camera, crash-after=N or ignore-term")
    return fault


def default_lock_path() -> Path:
    return Path(f"/tmp/piorch-sim-camera-{os.getuid()}.lock")


def lock_path_from_env() -> Path:
    return Path(os.environ.get(ENV_LOCK) or default_lock_path())


def camera_is_free(lock_path: Path | None = None) -> bool:
    """True when no simulated camera process holds the lock. It takes the lock for a moment and lets go:
    a simulator starting in that same moment fails as "busy", so probe a running camera, not a starting one."""
    path = lock_path or lock_path_from_env()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing also releases the lock if we got it
    return True


def say(*lines: str) -> None:
    """Diagnostics to stderr, unbuffered. stderr is often the same closed SSH channel that broke stdout;
    a lost diagnostic must not turn a clean exit into a traceback, the JSON log is the record."""
    try:
        os.write(2, "".join(line + "\n" for line in lines).encode())
    except OSError:
        return  # nowhere left to report it; the caller's exit code and the JSON log still say what happened


def print_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def libcamera_line(level: str, text: str) -> str:
    # libcamera's log prefix: [uptime] [pid] LEVEL ...
    uptime = time.monotonic()
    stamp = f"{int(uptime // 3600)}:{int(uptime % 3600 // 60):02d}:{uptime % 60:012.9f}"
    return f"[{stamp}] [{os.getpid()}] {level:>5} {text}"


def libcamera_started() -> str:
    return libcamera_line("INFO", f"Camera camera_manager.cpp:325 libcamera {LIBCAMERA_BUILD}")


class Stop:
    """Set by signal handlers; the stream loop polls it (handlers must not raise mid-write, or the byte
    count and hash in the log would miss a write that did happen)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = self.signum or signum

    def is_set(self) -> bool:
        return self.signum is not None


class PipeBroken(Exception):
    pass


class InjectedCrash(Exception):
    pass


class Output:
    """Owns the output fd, counts and hashes every byte the kernel accepted. Pipes and sockets are switched
    to non-blocking so that a reader that stopped reading cannot keep us from seeing a signal."""

    def __init__(self, fd: int | None, owns_fd: bool, crash_after: int | None) -> None:
        self.fd = fd
        self.owns_fd = owns_fd
        self.crash_after = crash_after
        self.hasher = hashlib.sha256()
        self.written = 0
        self.discarding = fd is None
        self._saved_flags: int | None = None
        mode = os.fstat(fd).st_mode if fd is not None else 0
        if fd is not None and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            self._saved_flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, self._saved_flags | os.O_NONBLOCK)

    def write(self, data: bytes, should_stop: Callable[[], bool]) -> None:
        if self.discarding or self.fd is None:
            return
        view = memoryview(data)
        crash = self.crash_after is not None and self.written + len(view) >= self.crash_after
        if crash and self.crash_after is not None:
            view = view[: self.crash_after - self.written]
        while view and not should_stop():
            try:
                count = os.write(self.fd, view)
            except BlockingIOError:
                poller = select.poll()
                poller.register(self.fd, select.POLLOUT)
                poller.poll(WAKE_INTERVAL_S * 1000)
                continue
            except (BrokenPipeError, ConnectionResetError) as error:
                raise PipeBroken from error
            self.hasher.update(view[:count])
            self.written += count
            view = view[count:]
        if crash and not view:
            raise InjectedCrash

    def close(self) -> None:
        if self.fd is None:
            return
        if self._saved_flags is not None:
            try:
                # The open file description is shared with whoever gave us the pipe; leave it as we found it.
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self._saved_flags)
            except OSError:
                pass  # the other end is gone; nobody is left to care about the flags
        if self.owns_fd:
            os.close(self.fd)
        self.fd = None


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int
    reason: Reason
    bytes: int = 0
    sha256: str = hashlib.sha256(b"").hexdigest()
    frames: int = 0
    pipe_broken: bool = False
    signal: int | None = None


def sleep_until(deadline: float, should_stop: Callable[[], bool]) -> None:
    while not should_stop():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(remaining, WAKE_INTERVAL_S))


def camera_failure(dialect: Dialect, legacy_lines: Sequence[str], rpicam_message: str) -> RunOutcome:
    if dialect is Dialect.LEGACY:
        say(*legacy_lines)
        return RunOutcome(EXIT_LEGACY_SOFTWARE, Reason.ERROR)
    say(f"ERROR: *** {rpicam_message} ***")
    return RunOutcome(EXIT_RPICAM_ERROR, Reason.ERROR)


def with_camera(dialect: Dialect, pi: PiProfile, fault: Fault, work: Callable[[], RunOutcome]) -> RunOutcome:
    """Run `work` holding the camera, or fail as the tool does when there is none or another process has it."""
    if fault.no_camera:
        return camera_failure(dialect, LEGACY_NO_CAMERA_LINES, "no cameras available")
    lock_fd = os.open(lock_path_from_env(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if dialect is Dialect.RPICAM:
                say(libcamera_line("ERROR", "Pipeline pipeline_handler.cpp:199 "
                                            "Pipeline handler in use by another process"))
            return camera_failure(dialect, LEGACY_BUSY_LINES, f"failed to acquire camera {pi.sensor_id}")
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, f"{os.getpid()}\n".encode())  # who holds the camera, for a human debugging a test
        return work()
    finally:
        os.close(lock_fd)  # releases the camera


_Options = TypeVar("_Options")


def parse_or_refuse(dialect: Dialect, parse: Callable[[], _Options], env: dict[str, str]
                    ) -> tuple[_Options, Fault] | RunOutcome:
    """Options and the injected fault, or the outcome of refusing them as the real tool would."""
    try:
        options = parse()
    except SimUsageError as error:
        if dialect is Dialect.LEGACY:
            say(error.message)
            return RunOutcome(EXIT_LEGACY_USAGE, Reason.USAGE)
        say(f"ERROR: *** {error.message} ***")
        return RunOutcome(EXIT_RPICAM_ERROR, Reason.USAGE)
    try:
        fault = parse_fault(env.get(ENV_FAULT))
    except ValueError as error:
        say(f"simulator: {error}")
        return RunOutcome(EXIT_FAILED, Reason.ERROR)
    return options, fault


@dataclass(frozen=True)
class RunRecord:
    """The JSON line appended to $PIORCH_SIM_LOG/runs.jsonl at the end of every run."""

    tool: str
    argv: list[str]
    pid: int
    pgid: int
    sid: int
    bytes: int
    sha256: str
    exit_code: int
    reason: str
    frames: int
    pipe_broken: bool
    signal: int | None
    started: float
    ended: float


def append_record(log_dir: Path, record: RunRecord) -> None:
    line = (json.dumps(asdict(record), sort_keys=True) + "\n").encode()
    # O_APPEND + one write: concurrent runs append whole lines, never interleaved pieces.
    fd = os.open(log_dir / RUNS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


# run(tool, args, env, stop, pi) -> what happened
RunTool = Callable[[str, Sequence[str], dict[str, str], Stop, PiProfile], RunOutcome]


def run_tool(argv: list[str], module: str, check_tool: Callable[[str], object], run: RunTool,
             hup_bug: bool = False) -> int:
    """The whole life of one simulated tool process: argv[0] is the tool name, the rest its arguments.
    `hup_bug`: the tool may play old raspivid's bug (PIORCH_SIM_IGNORE_HUP_PIPE=1, userland#268) and ignore
    SIGHUP."""
    if not argv:
        say(f"usage: python -m {module} TOOL [ARGS...]")
        return EXIT_MISUSED
    tool = os.path.basename(argv[0])
    env = dict(os.environ)
    try:
        check_tool(tool)
        pi = profile_from_env(env)
    except ValueError as error:
        say(f"simulator: {error}")
        return EXIT_MISUSED
    if not pi.has_tool(tool):
        # install_stand_ins leaves such a tool out; this is someone running the module by hand
        say(f"simulator: this Pi has no {tool} ({pi.describe()})")
        return EXIT_NOT_FOUND
    stop = Stop()
    ignore_term = "ignore-term" in env.get(ENV_FAULT, "").split(",")
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_term else stop.handle)
    signal.signal(signal.SIGINT, stop.handle)
    ignore_hup = hup_bug and env.get(ENV_IGNORE_HUP_PIPE) == "1"
    signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hup else stop.handle)

    log_dir = Path(env[ENV_LOG]) if env.get(ENV_LOG) else None
    marker: Path | None = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        marker = log_dir / f"{RUNNING_PREFIX}{os.getpid()}"
        marker.write_text(json.dumps({"tool": tool, "argv": argv, "pid": os.getpid()}) + "\n")
    started = time.time()
    outcome = RunOutcome(EXIT_FAILED, Reason.ERROR)
    try:
        outcome = run(tool, argv[1:], env, stop, pi)
    finally:
        if log_dir is not None:
            append_record(log_dir, RunRecord(
                tool=tool, argv=list(argv), pid=os.getpid(), pgid=os.getpgid(0), sid=os.getsid(0),
                bytes=outcome.bytes, sha256=outcome.sha256, exit_code=outcome.exit_code,
                reason=outcome.reason.value, frames=outcome.frames, pipe_broken=outcome.pipe_broken,
                signal=outcome.signal, started=started, ended=time.time(),
            ))
        if marker is not None:
            marker.unlink(missing_ok=True)
    return outcome.exit_code
