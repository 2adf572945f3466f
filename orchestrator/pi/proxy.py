"""A ProxyCommand from ~/.ssh/config as the socket paramiko talks SSH through.

paramiko has its own ProxyCommand class, but it never sees the command end: its recv keeps polling a closed
pipe until the handshake times out, so a ProxyCommand that fails at once (`ssh -W` to a host that does not
resolve) would look like a Pi that never answers, 10 s later. This one reports the end of the stream at once
and keeps the command's stderr, so the failure is told in the command's own words.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import tempfile

# Long enough for `ssh -W` to close its own connection on SIGTERM; after that it is killed.
STOP_S = 2.0
# What a failure message quotes of the command's stderr.
STDERR_QUOTE = 300
# The command's stdout ends a moment before the command has exited and can be reaped.
ENDED_WAIT_S = 0.5


class ProxyProcess:
    """The command runs as OpenSSH runs it (`sh -c "exec COMMAND"`), in a session of its own: Ctrl+C in
    piorch's terminal must not reach it before piorch has closed the connection through it."""

    def __init__(self, command: str) -> None:
        self.command = command
        # A file, not a pipe: a chatty command (ssh -v) must never block on a full stderr pipe. Closed in close().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, bufsize=0, start_new_session=True,
            )
        except OSError:
            self._stderr.close()
            raise
        assert self._process.stdin is not None and self._process.stdout is not None
        self._in = self._process.stdin.fileno()
        self._out = self._process.stdout.fileno()
        self._timeout: float | None = None
        # paramiko's Transport reads `_closed` of whatever it talks through.
        self._closed = False
        # The last line of its stderr, kept when it is closed (paramiko closes it before piorch explains).
        self._last_words: str | None = None

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def send(self, data: bytes) -> int:
        return os.write(self._in, data)

    def recv(self, size: int) -> bytes:
        """Up to `size` bytes; b"" when the command closed its stdout (paramiko's end of stream)."""
        ready, _, _ = select.select([self._out], [], [], self._timeout)
        if not ready:
            raise TimeoutError("timed out")
        return os.read(self._out, size)

    def ended(self) -> str | None:
        """How the command ended (exit status and the last line of its stderr), or None while it runs."""
        try:
            code = self._process.wait(ENDED_WAIT_S)
        except subprocess.TimeoutExpired:
            return None
        said = f": {words}" if (words := self._read_last_words()) else ""
        return f"exit status {code}{said}" if code >= 0 else f"killed by signal {-code}{said}"

    def _read_last_words(self) -> str:
        if self._last_words is None:
            self._stderr.seek(0)
            lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
            return lines[-1][:STDERR_QUOTE] if lines else ""
        return self._last_words

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(STOP_S)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._last_words = self._read_last_words()
        self._stderr.close()

