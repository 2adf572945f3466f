"""`--view`: the live picture in a local player, fed from the stream piorch is already receiving.

No second camera client: the receiver hands each chunk to `ViewFeeder.offer`, which only copies it into a
bounded queue (never waits); a thread of its own writes the queue into the player's stdin. A player that
is slow loses chunks (counted, the picture recovers at the next I-frame); a closed player just stops
the feeding. The recording is never slowed or put at risk by the view.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
from collections.abc import Sequence

from orchestrator.errors import UsageError
from orchestrator.events import EventSink, Notice

# Enough for a few seconds at 25 Mbit/s: a player that falls further behind than this drops chunks.
MAX_QUEUED_BYTES = 8 << 20


def build_player_argv(player: str, path: str, codec: str = "h264") -> list[str]:
    """Low-latency playback of a raw stream on stdin (pure)."""
    form = "h264" if codec == "h264" else "mjpeg"
    if player == "mpv":
        # --untimed: show frames as they come (raw H.264 has no timestamps); no cache: no added delay.
        return [path, "--no-terminal", "--untimed", "--cache=no", f"--demuxer-lavf-format={form}",
                "--title=piorch live view", "-"]
    if player == "ffplay":
        # -autoexit: close at the end of the stream like mpv does; nobuffer/low_delay: no added delay.
        return [path, "-loglevel", "error", "-autoexit", "-fflags", "nobuffer", "-flags", "low_delay",
                "-framedrop", "-f", form, "-window_title", "piorch live view", "-i", "-"]
    raise ValueError(f"unknown player {player!r}")


def find_player(codec: str = "h264") -> list[str] | None:
    """mpv, else ffplay, from PATH; None when neither is installed."""
    for player in ("mpv", "ffplay"):
        path = shutil.which(player)
        if path:
            return build_player_argv(player, path, codec)
    return None


def require_player(codec: str = "h264") -> list[str]:
    player = find_player(codec)
    if player is None:
        raise UsageError("--view needs a player", "install mpv (sudo apt install mpv) or ffplay (ffmpeg)")
    return player


class ViewFeeder:
    def __init__(self, argv: Sequence[str], on_event: EventSink) -> None:
        self._argv = list(argv)
        self._on_event = on_event
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._queued = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.dropped_bytes = 0
        self._thread = threading.Thread(target=self._feed, daemon=True, name="piorch-view")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(self._argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self._thread.start()

    def offer(self, data: bytes | memoryview) -> None:
        """Called on the receiving thread for every chunk: copy and queue, or drop; never blocks."""
        if self._closed.is_set():
            return
        size = len(data)
        with self._lock:
            if self._queued + size > MAX_QUEUED_BYTES:
                self.dropped_bytes += size
                return
            self._queued += size
        # A copy: the receiver reuses its buffer as soon as this returns.
        self._queue.put(bytes(data))

    def _feed(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        stdin = self._proc.stdin
        while (chunk := self._queue.get()) is not None:
            with self._lock:
                self._queued -= len(chunk)
            if self._closed.is_set():
                continue
            try:
                stdin.write(chunk)
                stdin.flush()
            except OSError:  # BrokenPipe: the window was closed
                self._closed.set()
                self._on_event(Notice("info", "the live view was closed; the recording goes on"))
                continue

    def stop(self, timeout: float = 3.0) -> None:
        """End of the stream: the player gets end-of-file and closes by itself, or is stopped."""
        proc = self._proc
        self._queue.put(None)
        self._thread.join(timeout)
        if proc is None:
            return
        if self._thread.is_alive():
            # The player stopped reading and the feeder is stuck in a write: only ending the player
            # frees it (closing the pipe under a blocked writer would deadlock on the file's lock).
            proc.kill()
            self._thread.join(timeout)
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass  # already broken: the player is gone
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
