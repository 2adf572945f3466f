""""The Pi" as something that runs shell commands: one interface, an SSH and a local implementation.

Everything above this module is the same code for a real Pi, the demo's simulated Pi and the tests. A
started command is a `Process`: its stdout arrives as lines (status marks), its stderr is kept (the last
64 KiB) to explain failures, and every wait has a deadline.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator.errors import Interrupted, RemoteError

STDERR_KEEP = 64 * 1024
# How often a short command's wait looks at the stop event (Ctrl+C while probing the Pi).
STOP_POLL_S = 0.1


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None
    stdout: str
    stderr: str


def split_lines(pending: bytes, chunk: bytes) -> tuple[list[str], bytes]:
    """`pending` (an unfinished line) plus what was read: the whole lines in it, and the new unfinished
    rest. Blank lines carry nothing piorch reads, and "" is next_line's "nothing yet": they are left out."""
    *lines, rest = (pending + chunk).split(b"\n")
    return [line.decode("utf-8", "replace") for line in lines if line.strip()], rest


class Process:
    """A running command. Its stdout arrives as lines, its stderr is kept (the last STDERR_KEEP bytes) to
    explain failures, and every wait has a deadline. Both streams are drained even when nobody asks, so a
    chatty command never blocks on a full pipe or SSH window.

    Two kinds: PumpedProcess (a local command's pipes, read by two threads) and pi/channel.ChannelProcess
    (an SSH channel, read on the caller's thread).
    """

    def next_line(self, timeout: float) -> str | None:
        """The next stdout line; "" when none came within `timeout`; None at the end of stdout. One
        consumer thread only."""
        raise NotImplementedError

    @property
    def takes_input(self) -> bool:
        """Whether `send` can reach the command at all."""
        raise NotImplementedError

    def send(self, data: bytes) -> bool:
        """Write `data` to the command's standard input; False when it takes none or its input is closed."""
        raise NotImplementedError

    def stderr_text(self) -> str:
        raise NotImplementedError

    def wait(self, timeout: float) -> int | None:
        """Exit status once the command and its output are done; None if still running at the deadline."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class PumpedProcess(Process):
    """A running command whose output is pumped by two daemon threads.

    `read_out`/`read_err` return b"" at end of stream; `exit_status` waits up to its timeout and returns
    None while the command still runs. The pumps never block the caller. `write`, where given, sends bytes
    to the command's standard input (`send`).
    """

    def __init__(
        self,
        read_out: Callable[[int], bytes],
        read_err: Callable[[int], bytes],
        exit_status: Callable[[float], int | None],
        close: Callable[[], None],
        write: Callable[[bytes], None] | None = None,
    ) -> None:
        self._exit_status = exit_status
        self._close = close
        self._write = write
        # Lines go over in batches, one a read: a camera's timestamps are a line a frame, and a queue
        # operation a line would cost more than the line. `_ready` is the consumer's own.
        self._lines: queue.Queue[list[str] | None] = queue.Queue()
        self._ready: collections.deque[str] = collections.deque()
        self._ended = False
        self._stderr = bytearray()
        self._stderr_lock = threading.Lock()
        self._out_thread = threading.Thread(target=self._pump_out, args=(read_out,), daemon=True)
        self._err_thread = threading.Thread(target=self._pump_err, args=(read_err,), daemon=True)
        self._out_thread.start()
        self._err_thread.start()

    def _pump_out(self, read: Callable[[int], bytes]) -> None:
        pending = b""
        try:
            while chunk := read(4096):
                batch, pending = split_lines(pending, chunk)
                if batch:
                    self._lines.put(batch)
        except (OSError, ValueError):
            # The stream broke, or close() closed it under the read (a command cut short: Ctrl+C, a
            # deadline; the file then says ValueError): its end either way, the exit status tells the rest.
            pass
        finally:
            if pending.strip():
                self._lines.put([pending.decode("utf-8", "replace")])
            self._lines.put(None)

    def _pump_err(self, read: Callable[[int], bytes]) -> None:
        try:
            while chunk := read(4096):
                with self._stderr_lock:
                    self._stderr += chunk
                    del self._stderr[:-STDERR_KEEP]
        except (OSError, ValueError):
            pass  # as above: a broken or closed stderr stream just ends

    def next_line(self, timeout: float) -> str | None:
        if self._ready:
            return self._ready.popleft()
        if self._ended:
            return None
        try:
            batch = self._lines.get(timeout=timeout)
        except queue.Empty:
            return ""
        if batch is None:
            self._ended = True
            return None
        self._ready.extend(batch)
        return self._ready.popleft()

    @property
    def takes_input(self) -> bool:
        return self._write is not None

    def send(self, data: bytes) -> bool:
        if self._write is None:
            return False
        try:
            self._write(data)
        except OSError:
            return False
        return True

    def stderr_text(self) -> str:
        with self._stderr_lock:
            return self._stderr.decode("utf-8", "replace")

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        status = self._exit_status(timeout)
        # The pumps finish as soon as the streams close; the join bounds a stream held open by a child.
        for thread in (self._out_thread, self._err_thread):
            thread.join(max(0.0, deadline - time.monotonic()))
        return status

    def close(self) -> None:
        self._close()


class Host(Protocol):
    """Where the camera lives."""

    name: str

    def start(self, command: str) -> Process: ...

    def run(self, command: str, timeout: float, stop: threading.Event | None = None) -> CommandResult: ...

    def local_address(self) -> str | None:
        """The laptop's address as the Pi sees it, when known."""
        ...

    def peer_address(self) -> str | None:
        """The Pi's address as the laptop sees it, when known (None through a jump host)."""
        ...

    def close(self) -> None: ...


def run_to_end(host: Host, command: str, timeout: float, stop: threading.Event | None = None) -> CommandResult:
    """Run a short command and collect its output; a command still running at the deadline is an error.

    With `stop`: Interrupted as soon as it is set (the command is closed, not waited for). Only for commands
    that change nothing on the Pi, such as probes: the ones that stop the camera must run to their end.
    """
    process = host.start(command)
    try:
        deadline = time.monotonic() + timeout
        status = None
        while status is None and time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                raise Interrupted(f"interrupted while waiting for {host.name}", "nothing was started on the Pi")
            status = process.wait(min(STOP_POLL_S, max(0.0, deadline - time.monotonic())))
        if status is None:
            raise RemoteError(f"a command on {host.name} did not finish within {timeout:.0f} s",
                              "check the Pi's load and the link, then try again")
        # The status came first; the output streams end right after it (the pumps are joined here).
        process.wait(max(0.0, deadline - time.monotonic()))
        lines: list[str] = []
        # The pumps have finished (wait joined them), so the queue ends with its None; "" would mean a
        # stream still held open by a leftover child, and what came so far is all there is.
        while line := process.next_line(0.0):
            lines.append(line)
        return CommandResult(status, "\n".join(lines), process.stderr_text())
    finally:
        process.close()


def start_process(argv: list[str], env: Mapping[str, str] | None = None) -> Process:
    """A local process as a `Process`: a shell standing in for the Pi (LocalHost), or an `ssh` through the
    user's ControlMaster (pi/mux.py)."""
    proc = subprocess.Popen(
        argv,
        # stdin stays open and silent, like an SSH channel: the pipeline's watchdog reads it and frees
        # the camera when piorch goes away (the pipe closes when this process dies, however it dies).
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        # Its own session, like a command sshd starts: Ctrl+C in piorch's terminal must not reach it,
        # piorch stops it on purpose.
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    out, err, keep_open = proc.stdout, proc.stderr, proc.stdin

    def exit_status(timeout: float) -> int | None:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        with contextlib.suppress(OSError):  # a pipe the process closed
            keep_open.close()
        out.close()
        err.close()

    def write(data: bytes) -> None:
        # Past the buffer: a write that fails (the process has gone) must leave nothing for close() to flush.
        os.write(keep_open.fileno(), data)

    # read1 returns what is there instead of waiting to fill the buffer: status lines arrive at once.
    return PumpedProcess(out.read1, err.read1, exit_status, close, write)  # type: ignore[attr-defined]


class LocalHost:
    """The laptop itself standing in for the Pi (the demo's simulated Pi, and tests).

    `path_prepend` puts a folder of stand-in tools (the camera simulator) first on PATH.
    """

    def __init__(self, name: str = "simulated-pi", path_prepend: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self._env = dict(os.environ)
        self._env.update(env or {})
        if path_prepend is not None:
            self._env["PATH"] = f"{path_prepend}{os.pathsep}{self._env.get('PATH', '')}"

    def start(self, command: str) -> Process:
        return start_process(["sh", "-c", command], self._env)

    def run(self, command: str, timeout: float, stop: threading.Event | None = None) -> CommandResult:
        return run_to_end(self, command, timeout, stop)

    def local_address(self) -> str | None:
        return "127.0.0.1"

    def peer_address(self) -> str | None:
        return "127.0.0.1"

    def close(self) -> None:
        """Nothing to release: every process is closed by its own owner."""
