"""One received file on disk: `FileWriter` owns `<uuid><suffix>.tmp`, writes it and counts its bytes.

The receiving thread only calls `write` and, when the connection or segment ends, `end` (no I/O). The slow
part, `finalize` (fsync, the hash's last bytes, the rename), runs on the receiver's closer thread, so a slow
disk never stalls the socket. The SHA-256 is computed by a thread that follows the file as it grows: at
~400 MB/s on a CPU without SHA instructions, hashing inline would be the slowest step of a fast transfer.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.events import Ending
from orchestrator.stream.frame_times import CameraRun
from orchestrator.stream.manifest import reserve_manifest, utc_at, utc_now

CHUNK = 1 << 20
SYNC_EVERY = 64 << 20
# How often blocking calls wake up to notice a stop request.
POLL_S = 0.25
# The hash reads back what was written (from the page cache): allow 20 MB/s at the slowest, plus a margin.
HASH_MIN_BPS = 20e6
HASH_GRACE_S = 30.0


class WriteFailed(Exception):
    """Writing the received bytes failed (disk full, folder gone): the connection ends, bytes kept."""


def describe_os_error(exc: OSError) -> str:
    return "disk full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)


class FileLock:
    """An exclusive flock held on a received file (or frame folder) from its first byte until its manifest is
    final: `recover`, in this piorch or another, never finalises a file that a live run will still finish.
    The lock lives on the inode, so it holds across the rename to the final name."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._guard = threading.Lock()

    @classmethod
    def take(cls, path: Path) -> FileLock:
        """Lock a folder (or a file) that is already there; raises BlockingIOError when someone holds it."""
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        return cls(fd)

    def release(self) -> None:
        with self._guard:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing the descriptor drops the flock

    def __del__(self) -> None:
        self.release()  # a file nobody finalised (the run is ending): never keep its descriptor


@dataclass(frozen=True)
class ReceivedFile:
    id: str
    path: Path
    bytes: int
    sha256: str
    peer: str
    started_utc: str
    ended_utc: str
    duration_s: float
    # DONE (the sender closed), SEGMENT (cut there, the stream goes on), STOPPED (piorch stopped receiving),
    # STALLED (the link was lost) or FAILED (then `error` says why).
    ended_by: Ending
    # From the H.264 parser when the stream is parsed; None otherwise. For split MJPEG: whole frames.
    frames: int | None = None
    iframes: int | None = None
    # 1 for the first file of a connection, 2 for the next segment, ...
    segment: int = 1
    # MJPEG split into frames: one entry per frame file (index, file, arrival_utc, bytes, complete).
    frame_list: tuple[dict[str, object], ...] = ()
    # Held until the manifest is written (`release`): see FileLock.
    lock: FileLock | None = field(default=None, compare=False, repr=False)
    error: str = ""
    # The camera run whose timestamps belong to this file's frames (None: the camera sends none), and the
    # run's number of the file's first frame (frames of earlier segments of the same connection come first).
    camera_run: CameraRun | None = field(default=None, compare=False, repr=False)
    first_frame: int = 0

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()


class _HashFollower(threading.Thread):
    """Hashes the file behind the writer, reading only bytes the writer has finished writing. The thread
    starts at the first poke (a whole CHUNK written, or the file's end): a recording's start (several Pis'
    at once) has one thread less to start a Pi, and a file's first MiB is hashed all the same. The file is
    opened here, so the hash follows this file whatever happens to its name meanwhile; one `os.open`, where
    a buffered `open()` adds its stat, tty check and seek before the Pi's first byte."""

    def __init__(self, path: Path, writer: FileWriter) -> None:
        super().__init__(daemon=True, name="piorch-hasher")
        self._descriptor = os.open(path, os.O_RDONLY)  # owned by the thread, closed at the end of run()
        self._writer = writer
        self._more = threading.Event()
        # The receiving thread (a chunk, the end) and the closer (hexdigest) may both poke first.
        self._starting = threading.Lock()
        self._digest = hashlib.sha256()
        self.hashed = 0
        self.error: str | None = None

    def poke(self) -> None:
        if self.ident is None:
            with self._starting:
                if self.ident is None:
                    self.start()
        self._more.set()

    def run(self) -> None:
        descriptor = self._descriptor
        try:
            while True:
                target = self._writer.bytes_written
                if self.hashed < target:
                    chunk = os.read(descriptor, min(CHUNK, target - self.hashed))
                    if not chunk:
                        self.error = f"the file shrank to {self.hashed} bytes while it was received"
                        break
                    self._digest.update(chunk)
                    self.hashed += len(chunk)
                    if self.hashed % SYNC_EVERY < len(chunk):
                        # Push what was hashed to the disk as we go, off the socket's thread: a long
                        # recording is durable minute by minute and the final fsync has little left.
                        os.fdatasync(descriptor)
                elif self._writer.closed:
                    break
                else:
                    self._more.wait(POLL_S)
                    self._more.clear()
        except OSError as exc:
            self.error = f"reading it back for the hash failed ({exc.strerror or exc})"
        finally:
            os.close(descriptor)

    def hexdigest(self, timeout: float) -> str:
        """The SHA-256 of every byte written; raises OSError when it cannot be had by the deadline."""
        self.poke()
        self.join(timeout)
        if self.is_alive():
            raise OSError(f"hashing did not finish within {timeout:.0f} s (a slow disk?)")
        if self.error:
            raise OSError(self.error)
        return self._digest.hexdigest()


class FileWriter:
    """Owns one `<uuid><suffix>.tmp` file: writes and counts on the receiving thread, finalised on another."""

    def __init__(self, out_dir: Path, suffix: str, peer: str, camera_run: CameraRun | None = None,
                 raw: Mapping[str, object] | None = None) -> None:
        self.id = str(uuid.uuid4())
        self.peer = peer
        self.camera_run = camera_run
        self.final_path = out_dir / f"{self.id}{suffix}"
        self.tmp_path = out_dir / f"{self.id}{suffix}.tmp"
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        # Held until the file's manifest is final: `recover` (or a second piorch) never touches a file in use.
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.lock = FileLock(self._fd)
        self.started_utc = utc_now()
        reserve_manifest(out_dir / f"{self.id}.json", self.id, self.tmp_path.name, self.started_utc, peer, raw)
        self.bytes_written = 0
        self.closed = False
        self.started = time.monotonic()
        self.last_write = time.time()
        self._ended_by = Ending.DONE
        self._error = ""
        self._ended_at = (0.0, 0.0)  # monotonic, wall clock
        self._stats: dict[str, int | None] = {}
        self._hasher = _HashFollower(self.tmp_path, self)

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError as exc:
                raise WriteFailed(describe_os_error(exc)) from None
            view = view[written:]
            self.bytes_written += written
        self.last_write = time.time()
        # Wake the hasher for a whole chunk only: fewer, larger SHA-256 updates cost less (the first wake starts
        # it; from then on it also looks by itself every POLL_S, and end() wakes it for the tail).
        if self.bytes_written - self._hasher.hashed >= CHUNK:
            self._hasher.poke()

    def end(self, ended_by: Ending, frames: int | None = None, iframes: int | None = None, segment: int = 1,
            error: str = "", first_frame: int = 0) -> None:
        """The connection or segment ended: called on the receiving thread, does no I/O."""
        self._ended_by, self._error = ended_by, error
        self._ended_at = (time.monotonic(), time.time())
        self._stats = {"frames": frames, "iframes": iframes, "segment": segment, "first_frame": first_frame}
        self.closed = True
        self._hasher.poke()

    def finalize(self) -> ReceivedFile:
        """fsync, the complete hash, the rename to the final name. Never raises: what went wrong becomes the
        file's `error` (ended by FAILED), and the file keeps the name its bytes are under."""
        if not self.closed:
            self.end(Ending.DONE)
        ended_by, error = self._ended_by, self._error
        try:
            os.fsync(self._fd)
        except OSError:
            pass  # a full disk can fail fsync too; every byte written so far is still in the file
        path, digest = self.tmp_path, ""
        try:
            digest = self._hasher.hexdigest(timeout=HASH_GRACE_S + self.bytes_written / HASH_MIN_BPS)
        except OSError as exc:
            ended_by, error = Ending.FAILED, f"{self.tmp_path.name} was received but not hashed: {exc}"
        try:
            os.replace(self.tmp_path, self.final_path)
            path = self.final_path
        except OSError as exc:
            ended_by, error = Ending.FAILED, f"{self.tmp_path.name} could not be renamed to " \
                f"{self.final_path.name} ({exc.strerror or exc}); its bytes are kept under the .tmp name"
        monotonic_end, wall_end = self._ended_at
        # A file cut by a lost link ended when its last byte came, not when the loss was noticed.
        ended = utc_at(self.last_write if self._ended_by is Ending.STALLED else wall_end)
        frames, iframes, segment = self._stats["frames"], self._stats["iframes"], self._stats["segment"] or 1
        return ReceivedFile(self.id, path, self.bytes_written, digest, self.peer, self.started_utc, ended,
                            monotonic_end - self.started, ended_by, frames=frames, iframes=iframes,
                            segment=segment, lock=self.lock, error=error, camera_run=self.camera_run,
                            first_frame=self._stats.get("first_frame") or 0)
