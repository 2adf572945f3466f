"""The laptop half of the recipe: every connection becomes `OUT/<uuid><suffix>`, `.tmp` until it ends.

Data path: socket (or the local nc's stdout) -> `FileWriter`, which owns the file and counts bytes. The
SHA-256 is computed by a thread that follows the file as it grows: at ~400 MB/s on a CPU without SHA
instructions, hashing inline would be the slowest step of a fast transfer. The dashboard only reads counters.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.errors import ReceiverError
from orchestrator.events import EventSink, FileStarted, Notice
from orchestrator.netcat import NetcatFlavour, build_nc_listen_argv, parse_nc_flavour
from orchestrator.settings import Backend, ReceiveSettings
from orchestrator.stream.manifest import reserve_manifest, utc_at, utc_now
from orchestrator.stream.sinks import FramesSink, StreamSink, Tap, WriteFailed

if TYPE_CHECKING:
    from orchestrator.stream.h264 import SegmentStats

CHUNK = 1 << 20
SYNC_EVERY = 64 << 20
# How often blocking calls wake up to notice a stop request.
POLL_S = 0.25


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
    # "eof" (the sender closed), "segment" (cut there, the stream goes on in the next file), "stopped"
    # (piorch stopped receiving) or "error: ..." (why it failed).
    ended_by: str
    # From the H.264 parser when the stream is parsed; None otherwise.
    frames: int | None = None
    iframes: int | None = None
    # 1 for the first file of a connection, 2 for the next segment, ...
    segment: int = 1
    # MJPEG split into frames: one entry per frame file (index, file, arrival_utc, bytes, complete).
    frame_list: tuple[dict[str, object], ...] = ()


class _FollowHasher(threading.Thread):
    """Hashes the file behind the writer, reading only bytes the writer has finished writing."""

    def __init__(self, path: Path, writer: FileWriter) -> None:
        super().__init__(daemon=True, name="piorch-hasher")
        self._handle = open(path, "rb")  # noqa: SIM115 - owned by the thread, closed in run()
        self._writer = writer
        self._more = threading.Event()
        self._digest = hashlib.sha256()
        self.hashed = 0

    def poke(self) -> None:
        self._more.set()

    def run(self) -> None:
        try:
            while True:
                target = self._writer.bytes_written
                if self.hashed < target:
                    chunk = self._handle.read(min(CHUNK, target - self.hashed))
                    if not chunk:  # the file shrank under us: nothing more can be read
                        break
                    self._digest.update(chunk)
                    self.hashed += len(chunk)
                    if self.hashed % SYNC_EVERY < len(chunk):
                        # Push what was hashed to the disk as we go, off the socket's thread: a long
                        # recording is durable minute by minute and the final fsync has little left.
                        os.fdatasync(self._handle.fileno())
                elif self._writer.closed:
                    break
                else:
                    self._more.wait(POLL_S)
                    self._more.clear()
        finally:
            self._handle.close()

    def hexdigest(self, timeout: float) -> str:
        self.poke()
        self.join(timeout)
        if self.is_alive():
            raise ReceiverError("hashing a received file did not finish in time", "check the disk")
        return self._digest.hexdigest()


class FileWriter:
    """Owns one `<uuid><suffix>.tmp` file: writes, counts, and renames it when the connection ends."""

    def __init__(self, out_dir: Path, suffix: str, peer: str) -> None:
        self.id = str(uuid.uuid4())
        self.peer = peer
        self.final_path = out_dir / f"{self.id}{suffix}"
        self.tmp_path = out_dir / f"{self.id}{suffix}.tmp"
        self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        # Held until the file is finished: `recover` (or a second piorch) never touches a file in use.
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        reserve_manifest(out_dir / f"{self.id}.json", self.id, self.tmp_path.name)
        self.bytes_written = 0
        self.closed = False
        self.started_utc = utc_now()
        self.started = time.monotonic()
        self.last_write = time.time()
        self._hasher = _FollowHasher(self.tmp_path, self)
        self._hasher.start()

    def write(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError as exc:
                reason = "disk full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
                raise WriteFailed(reason) from None
            view = view[written:]
            self.bytes_written += written
        self.last_write = time.time()
        # Wake the hasher for a whole chunk only: fewer, larger SHA-256 updates cost less (it also looks
        # by itself every POLL_S, and finish() wakes it for the tail).
        if self.bytes_written - self._hasher.hashed >= CHUNK:
            self._hasher.poke()

    def finish(self, ended_by: str) -> ReceivedFile:
        """fsync, close, rename to the final name; the hash is complete when this returns."""
        try:
            os.fsync(self._fd)
        except OSError:
            pass  # a full disk can fail fsync too; every byte written so far is still in the file
        os.close(self._fd)
        self.closed = True
        duration = time.monotonic() - self.started
        # The hash reads back what was written (from the page cache): allow 20 MB/s at the slowest.
        digest = self._hasher.hexdigest(timeout=30 + self.bytes_written / 20e6)
        os.replace(self.tmp_path, self.final_path)
        # A file cut by a lost link ended when its last byte came, not when the loss was noticed.
        ended = utc_at(self.last_write) if ended_by == "stalled" else utc_now()
        return ReceivedFile(self.id, self.final_path, self.bytes_written, digest, self.peer,
                            self.started_utc, ended, duration, ended_by)


FileSink = Callable[[ReceivedFile], None]


def check_out_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReceiverError(f"cannot create the output folder {out_dir} ({exc.strerror})",
                            "pick another folder with --out") from None
    if not os.access(out_dir, os.W_OK):
        raise ReceiverError(f"the output folder {out_dir} is not writable", "pick another folder with --out")


def bind_listener(bind: str | None, port: int) -> socket.socket:
    """A listening socket, or a ReceiverError that says why not and what to do."""
    host = bind or "0.0.0.0"  # noqa: S104 - binding every address is the user's explicit choice here
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Without it a restart right after a recording would fail for a minute (TIME_WAIT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(8)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ReceiverError(f"port {port} is busy on this laptop (another piorch or nc listens there)",
                                "stop that program or pick another --port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ReceiverError(f"{host} is not an address of this laptop",
                                "pass --laptop-ip with the laptop's address on the Pi link") from None
        if exc.errno == errno.EACCES:
            raise ReceiverError(f"port {port} needs root", "use a port above 1023") from None
        raise ReceiverError(f"cannot listen on {host}:{port} ({exc.strerror})", "pick another --port") from None
    return sock


class Receiver:
    """Common bookkeeping of both backends: active writers, counters, stop and wait."""

    def __init__(self, settings: ReceiveSettings, on_file: FileSink, on_event: EventSink,
                 suffix: str = ".h264") -> None:
        self.settings = settings
        self._on_file = on_file
        self._on_event = on_event
        self._suffix = suffix
        self._lock = threading.Lock()
        # Everything that counts bytes right now (a FileWriter, or a frame splitter's folder).
        self._writers: set[Any] = set()
        # Open H.264 connections, for the frame count; frames of finished ones are added up.
        self._sinks: set[StreamSink] = set()
        self._frames_done = 0
        self._finished_bytes = 0
        self.connections_done = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = settings.port
        # Sees every byte as it arrives (the live view); must never block.
        self.tap: Tap | None = None
        # Why writing failed ("disk full"), so the recording can stop the camera at once.
        self.failure: str | None = None
        self._cut_reason: str | None = None

    # Counters the dashboard reads on its own clock.
    @property
    def bytes_total(self) -> int:
        with self._lock:
            return self._finished_bytes + sum(int(w.bytes_written) for w in self._writers)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._writers)

    def _open_writer(self, peer: str) -> FileWriter:
        writer = FileWriter(self.settings.out_dir, self._suffix, peer)
        with self._lock:
            self._writers.add(writer)
        self._on_event(FileStarted(writer.tmp_path, peer))
        return writer

    def _close_writer(self, writer: FileWriter, ended_by: str, stats: SegmentStats | None = None,
                      segment: int = 1) -> None:
        received = writer.finish(ended_by)
        if stats is not None:
            received = replace(received, frames=stats.frames, iframes=stats.iframes)
        self._done(writer, replace(received, segment=segment))

    @property
    def frames_total(self) -> int:
        with self._lock:
            return self._frames_done + sum(sink.frames for sink in self._sinks)

    def _sink_done(self, sink: StreamSink) -> None:
        with self._lock:
            if sink in self._sinks:
                self._sinks.discard(sink)
                self._frames_done += sink.frames

    def _track(self, counted: Any) -> None:
        with self._lock:
            self._writers.add(counted)

    def _done(self, counted: Any, received: ReceivedFile) -> None:
        with self._lock:
            self._writers.discard(counted)
            self._finished_bytes += received.bytes
            self.connections_done += 1
        self._on_file(received)

    def _new_sink(self, peer: str) -> StreamSink | FramesSink:
        return FramesSink(self, peer) if self.settings.split_jpeg else StreamSink(self, peer)

    def start(self) -> None:
        raise NotImplementedError

    def cut_connections(self, reason: str) -> None:
        """End every open connection now (a lost link never sends its FIN); files end as `reason`."""
        self._cut_reason = reason
        self._interrupt_connections()
        self.wait_idle(5.0)
        self._cut_reason = None

    def _interrupt_connections(self) -> None:
        """Backend hook: make open connections end."""

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection is open (the sender closed); False at the deadline."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.active

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening; open connections end as "stopped" with every byte kept."""
        self._stopping.set()
        self._interrupt()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def _interrupt(self) -> None:
        """Backend hook: wake whatever blocks (close the listener, stop nc)."""

    @property
    def finished(self) -> bool:
        """True once a `--once` receiver has had its one connection."""
        return self._stopping.is_set()

    def wait_finished(self, timeout: float) -> bool:
        return self._stopping.wait(timeout)


class BuiltinReceiver(Receiver):
    """A Python socket server: no gap between connections, large reads, no extra process."""

    def start(self) -> None:
        check_out_dir(self.settings.out_dir)
        self._listener = bind_listener(self.settings.bind, self.settings.port)
        self.port = self._listener.getsockname()[1]
        self._listener.settimeout(POLL_S)
        self._live: set[socket.socket] = set()
        thread = threading.Thread(target=self._accept_loop, daemon=True, name="piorch-accept")
        self._threads.append(thread)
        thread.start()

    def _interrupt(self) -> None:
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break  # the listener was closed by stop()
            peer = f"{address[0]}:{address[1]}"
            allowed = self.settings.allowed_peer
            if allowed is not None and address[0] != allowed:
                # Someone else on the link: refused and logged, the recording goes on undisturbed.
                conn.close()
                self._on_event(Notice("warning", f"refused a connection from {peer}: only the Pi ({allowed}) "
                                                 "may send here"))
                continue
            thread = threading.Thread(target=self._serve, args=(conn, peer), daemon=True, name="piorch-conn")
            self._threads.append(thread)
            thread.start()
            if self.settings.once:
                break  # `--once`: one connection, no more accepted

    def _interrupt_connections(self) -> None:
        with self._lock:
            live = list(self._live)
        for conn in live:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its own thread

    def _serve(self, conn: socket.socket, peer: str) -> None:
        with self._lock:
            self._live.add(conn)
        writer = self._new_sink(peer)
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        ended_by = "eof"
        conn.settimeout(POLL_S)
        try:
            while True:
                if self._stopping.is_set():
                    # Take what the kernel already holds, then stop: bytes that reached the laptop are kept.
                    ended_by = "stopped"
                    self._drain(conn, writer, view)
                    break
                try:
                    count = conn.recv_into(buffer)
                except TimeoutError:
                    continue
                except OSError as exc:
                    ended_by = f"error: {exc.strerror or exc}"
                    break
                if count == 0:
                    ended_by = self._cut_reason or "eof"
                    break
                writer.write(view[:count])
        except (WriteFailed, OSError) as exc:
            ended_by = f"error: {exc}"
            self.failure = str(exc)
        finally:
            with self._lock:
                self._live.discard(conn)
            conn.close()
            writer.finish(ended_by)
            if self.settings.once:
                self._stopping.set()

    @staticmethod
    def _drain(conn: socket.socket, writer: StreamSink | FramesSink, view: memoryview) -> None:
        conn.setblocking(False)
        while True:
            try:
                count = conn.recv_into(view)
            except OSError:
                return
            if count == 0:
                return
            writer.write(view[:count])


def wait_until_listening(bind: str | None, port: int, timeout: float,
                         already: Callable[[], bool] = lambda: False) -> bool:
    """True once some process listens on the port (nc gives no other sign that it is ready).

    A bind with SO_REUSEADDR fails with EADDRINUSE only while a socket *listens* there (TIME_WAIT leftovers
    do not count), and unlike a test connection it does not use up nc's single accept.
    """
    host = bind or "0.0.0.0"  # noqa: S104 - probing the same address nc was told to bind
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if already():
            return True
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
                raise
        time.sleep(0.02)
    return False


def find_free_port(bind: str | None, start: int, tries: int = 100) -> int:
    """`--port auto`: the first port from `start` upward that can be listened on."""
    for port in range(max(start, 1024), min(65536, max(start, 1024) + tries)):
        try:
            bind_listener(bind, port).close()
        except ReceiverError:
            continue
        return port
    raise ReceiverError(f"no free port from {start} to {start + tries - 1}", "free one or give --port")


def detect_local_nc() -> tuple[str, NetcatFlavour]:
    """Find the laptop's nc and its flavour (through `sh`, like every local tool)."""
    import sh

    try:
        nc = sh.Command("nc")
    except sh.CommandNotFound:
        raise ReceiverError("nc is not installed on this laptop",
                            "install it (sudo apt install netcat-openbsd) or use --backend builtin") from None
    output = nc("-h", _ok_code=list(range(256)), _err_to_out=True, _tty_out=False, _timeout=5)
    flavour = parse_nc_flavour(str(output))
    if flavour is NetcatFlavour.UNKNOWN:
        raise ReceiverError("the laptop's nc is neither OpenBSD nor traditional netcat",
                            "install netcat-openbsd or use --backend builtin")
    return str(nc), flavour


class NcReceiver(Receiver):
    """The recipe's `nc -l` loop, run through `sh`; nc's stdout goes through the same FileWriter.

    nc cannot filter peers and exits after each connection, so the port is closed for a moment between
    connections; the builtin backend has neither limit.
    """

    def start(self) -> None:
        check_out_dir(self.settings.out_dir)
        # nc's own bind error is terse and comes late: check the port the same way as the builtin backend.
        bind_listener(self.settings.bind, self.settings.port).close()
        self._nc_path, flavour = detect_local_nc()
        self.argv = build_nc_listen_argv(flavour, self.settings.port, self.settings.bind)
        self._proc: Any = None
        self._writer: StreamSink | FramesSink | None = None
        self._write_error: str | None = None
        thread = threading.Thread(target=self._loop, daemon=True, name="piorch-nc")
        self._threads.append(thread)
        thread.start()
        # The Pi's nc must not connect before this one listens, or the camera's pipe breaks at once.
        def already_served() -> bool:
            # A quick sender may have come and gone before the probe looked: nc was listening then.
            return self._writer is not None or self.connections_done > 0 or self._stopping.is_set()

        if not wait_until_listening(self.settings.bind, self.settings.port, 10.0, already_served):
            self.stop(timeout=2.0)
            raise ReceiverError(f"the local nc did not start listening on port {self.settings.port}",
                                "check `nc -h` works here, or use --backend builtin")

    def write(self, chunk: bytes) -> None:
        """nc's stdout, chunk by chunk, from sh's reader thread.

        This object is handed to sh as a file (`_out=self`), not as a callback: sh decodes a callback's
        chunks to str whenever they happen to be valid UTF-8, which would corrupt a binary stream.
        """
        if self._write_error:
            return  # the disk failed: nc is being stopped, the rest is dropped
        try:
            if self._writer is None:
                self._writer = self._new_sink("nc")
            self._writer.write(chunk)
        except (WriteFailed, OSError) as exc:
            self._write_error = self.failure = str(exc)
            self._kill_nc()

    def _kill_nc(self) -> None:
        proc = self._proc
        if proc is not None:
            try:
                proc.terminate()
            except ProcessLookupError:
                pass  # already gone

    def _interrupt(self) -> None:
        self._kill_nc()

    def _interrupt_connections(self) -> None:
        self._kill_nc()  # nc serves one connection: ending it ends the connection; the loop starts a new nc

    def _loop(self) -> None:
        import sh

        while not self._stopping.is_set():
            self._write_error = None
            with open(os.devnull, "rb") as devnull:
                self._proc = sh.Command(self._nc_path)(
                    *self.argv[1:],
                    _bg=True, _bg_exc=False, _out=self, _out_bufsize=64 * 1024, _no_out=True,  # type: ignore[call-overload]
                    _tty_out=False, _in=devnull, _new_session=True, _ok_code=list(range(256)),
                )
                # A stdin at end-of-file makes both flavours exit as soon as the sender closes.
                try:
                    self._proc.wait()
                except sh.SignalException:
                    pass  # stopped by us: what arrived is finished below
            writer, self._writer = self._writer, None
            stderr = bytes(self._proc.stderr or b"").decode("utf-8", "replace").strip()
            if writer is not None:
                if self._write_error:
                    ended_by = f"error: {self._write_error}"
                elif self._cut_reason:
                    ended_by = self._cut_reason
                elif self._stopping.is_set():
                    ended_by = "stopped"
                else:
                    ended_by = "eof"
                writer.finish(ended_by)
                if self.settings.once:
                    self._stopping.set()
            elif stderr and not self._stopping.is_set():
                self._on_event(Notice("error", f"nc failed: {stderr.splitlines()[-1]}"))
                self._stopping.set()


def make_receiver(settings: ReceiveSettings, on_file: FileSink, on_event: EventSink,
                  suffix: str = ".h264") -> Receiver:
    cls = BuiltinReceiver if settings.backend is Backend.BUILTIN else NcReceiver
    return cls(settings, on_file, on_event, suffix)
