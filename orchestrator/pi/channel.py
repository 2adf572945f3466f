"""A command on the Pi's SSH connection as a `Process`, read on the caller's own thread.

paramiko's transport thread already receives the channel's bytes into two buffers (stdout, stderr). Two
pump threads a command (host.PumpedProcess) would only move them on, at the cost of two threads, and of
waking two more threads for every line, in every Pi's start: a fleet's Pis start at once and their Python
shares one core (the GIL), so each thread and each wake-up of one Pi delays the others. Here whoever asks
for a line reads the buffers itself and waits on the channel's own signal, `Channel.fileno()`: a pipe that
paramiko makes readable while either buffer holds data and once the channel has ended.

Both streams are drained at every call (a line, the exit status, stderr), so a command that writes a lot
to one of them never fills the SSH window and blocks. Between calls, paramiko's buffers hold what comes:
the window (2 MiB) is what the Pi may send before someone reads, minutes of a camera's per-frame lines.
"""

from __future__ import annotations

import collections
import math
import select
import threading
import time
from typing import TYPE_CHECKING

from orchestrator.pi.host import STDERR_KEEP, Process, split_lines

if TYPE_CHECKING:
    import paramiko

# How much a read takes from a buffer: everything there usually is.
READ_SIZE = 64 * 1024


class ChannelProcess(Process):
    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        # Readable while stdout or stderr holds data, or the channel has ended (EOF, close). poll, not
        # select: select cannot watch a descriptor numbered 1024 or more (a long-lived process has them).
        self._signal = select.poll()
        self._signal.register(channel.fileno(), select.POLLIN)
        # Guards the reads and what they fill: next_line's consumer and stderr_text's caller may differ.
        self._lock = threading.Lock()
        self._ready: collections.deque[str] = collections.deque()
        self._pending = b""
        self._stderr = bytearray()
        self._out_ended = False
        self._closed = False

    def _drain(self) -> None:
        """Take everything both buffers hold; note the end of stdout once it is all taken."""
        channel = self._channel
        with self._lock:
            if self._out_ended:
                return
            # Read before draining: all data comes before the EOF, so once seen, this drain takes the rest.
            ended = channel.eof_received or channel.closed
            while channel.recv_stderr_ready():
                self._stderr += channel.recv_stderr(READ_SIZE)
                del self._stderr[:-STDERR_KEEP]
            while channel.recv_ready():
                batch, self._pending = split_lines(self._pending, channel.recv(READ_SIZE))
                self._ready.extend(batch)
            if ended:
                if self._pending.strip():
                    self._ready.append(self._pending.decode("utf-8", "replace"))
                self._pending = b""
                self._out_ended = True

    def _wait_for_data(self, timeout: float) -> None:
        if self._closed:
            return  # close() closed the pipe too: the drain reads what is left and the end
        # A pipe closed by another thread meanwhile answers at once (POLLNVAL): the drain sees the end.
        self._signal.poll(max(1, math.ceil(timeout * 1000)))

    def next_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._out_ended:
                return None
            self._drain()
            if self._ready or self._out_ended:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return ""
            self._wait_for_data(left)

    @property
    def takes_input(self) -> bool:
        return True

    def send(self, data: bytes) -> bool:
        import paramiko

        try:
            self._channel.sendall(data)
        except (paramiko.SSHException, EOFError, OSError):  # the channel is closed
            return False
        return True

    def stderr_text(self) -> str:
        self._drain()
        with self._lock:
            return self._stderr.decode("utf-8", "replace")

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        channel = self._channel
        while True:
            self._drain()
            left = deadline - time.monotonic()
            if self._out_ended:
                # Nothing more can come to drain: the status has its own event.
                if not channel.status_event.wait(max(0.0, left)):
                    return None
                return channel.exit_status
            if left <= 0:
                # A child of the command holds its output open: the status, where there is one, is the answer.
                return channel.exit_status if channel.exit_status_ready() else None
            self._wait_for_data(left)

    def close(self) -> None:
        self._closed = True
        self._channel.close()
