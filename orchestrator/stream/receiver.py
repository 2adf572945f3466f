"""The laptop half of the recipe: every connection becomes `OUT/<uuid><suffix>`, `.tmp` until it ends.

Data path: socket (or the local nc's stdout) -> a sink (sinks.py) -> `FileWriter` (writer.py), which owns
the file and counts bytes. The receiving thread only reads and writes; everything slow after a file ends
runs on the receiver's closer thread (closer.py). The dashboard only reads counters.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import ReceiverError
from orchestrator.events import Ending, Event, EventSink, Notice
from orchestrator.netcat import NetcatFlavour, build_nc_listen_argv, parse_nc_flavour
from orchestrator.settings import Backend, ReceiveSettings
from orchestrator.stream.closer import Closer
from orchestrator.stream.frame_times import FrameTimes
from orchestrator.stream.sinks import Sink, Tap, make_sink
from orchestrator.stream.writer import CHUNK, POLL_S, ReceivedFile, WriteFailed

POLL_MS = round(POLL_S * 1000)
# While nothing reads the video live (no tap), a connection's reads wait for this much (the socket's low-water
# mark) or for POLL_S, whichever comes first, instead of waking once a frame: a 4 Mbit/s stream is read ~8
# times a second, not 25-30. The file on disk and the counters are at most that far behind; the end of the
# stream and an error wake the read at once.
GATHER_BYTES = 64 * 1024

FileSink = Callable[[ReceivedFile], None]


def check_out_dir(out_dir: Path) -> None:
    # A writable folder that is there already (a folder used before; the receiver's check after record's): one
    # system call, each a let-go of the GIL while a fleet's other Pis want it, where mkdir, its stat and the
    # access check make three.
    # `DIR/`: a file of that name is no folder, and goes on to mkdir's own error.
    if os.access(os.path.join(out_dir, ""), os.W_OK):
        return
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
    """Common bookkeeping of both backends: open sinks, counters, the closer thread, stop and wait.

    It is the sinks' `Outlet`: they reach it through `report` and `hand_over` only.
    """

    def __init__(self, settings: ReceiveSettings, on_file: FileSink, on_event: EventSink,
                 suffix: str = ".h264") -> None:
        self.settings = settings
        self._on_file = on_file
        self._on_event = on_event
        self._suffix = suffix
        # Guards the set of sinks, the counters, the thread list and the live connections.
        self._lock = threading.Lock()
        # The sinks of open connections (their counters are read by the dashboard).
        self._sinks: set[Sink] = set()
        self._done_bytes = 0
        self._done_frames = 0
        # Files handed over to the closer and not yet given to `on_file`.
        self._finishing = 0
        self.files_done = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._closer = Closer(lambda message: on_event(Notice("error", message)))
        self.port = settings.port
        # Sees every byte as it arrives (the live view); must never block.
        self.tap: Tap | None = None
        # The camera's timestamps, when it sends them: each connection's sink takes the run current when
        # it opens.
        self.frame_times: FrameTimes | None = None
        # Why writing failed ("disk full"), so the recording can stop the camera at once.
        self.failure: str | None = None
        self._cut_reason: Ending | None = None

    # Counters the dashboard reads on its own clock.
    @property
    def bytes_total(self) -> int:
        with self._lock:
            return self._done_bytes + sum(sink.bytes_received for sink in self._sinks)

    @property
    def frames_total(self) -> int:
        with self._lock:
            return self._done_frames + sum(sink.frames for sink in self._sinks)

    @property
    def active(self) -> int:
        """Connections open plus files that ended but are not handed to `on_file` yet."""
        with self._lock:
            return len(self._sinks) + self._finishing

    # The Outlet protocol, for the sinks.
    def report(self, event: Event) -> None:
        self._closer.put(lambda: self._on_event(event))

    def hand_over(self, finalize: Callable[[], ReceivedFile]) -> None:
        with self._lock:
            self._finishing += 1
        self._closer.put(lambda: self._deliver(finalize))

    def _deliver(self, finalize: Callable[[], ReceivedFile]) -> None:
        try:
            self._on_file(finalize())
        finally:
            with self._lock:
                self._finishing -= 1
                self.files_done += 1

    def _open_sink(self, peer: str) -> Sink:
        run = self.frame_times.current if self.frame_times is not None else None
        sink = make_sink(self, self.settings, peer, self._suffix, self.tap, run)
        with self._lock:
            self._sinks.add(sink)
        return sink

    def _end_sink(self, sink: Sink, ended_by: Ending, error: str = "") -> None:
        """On the receiving thread: the sink writes what it held and hands its last file over."""
        try:
            sink.finish(ended_by, error)
        except Exception as exc:  # said as a line; the counters below must still be settled
            self.report(Notice("error", f"ending a connection failed ({type(exc).__name__}: {exc})"))
        finally:
            with self._lock:
                self._sinks.discard(sink)
                self._done_bytes += sink.bytes_received
                self._done_frames += sink.frames

    def _spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=name)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def start(self) -> None:
        raise NotImplementedError

    def cut_connections(self, reason: Ending) -> None:
        """End every open connection now (a lost link never sends its FIN); files end as `reason`."""
        self._cut_reason = reason
        self._interrupt_connections()
        self.wait_idle(5.0)
        self._cut_reason = None

    def _interrupt_connections(self) -> None:
        """Backend hook: make open connections end."""

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection is open and every ended file was handed on; False at the deadline."""
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.active

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop listening; open connections end as "stopped" with every byte kept, and their files are
        finished. Returns the threads still running at the deadline (also said as a warning): their files
        are finished when they end, or by `piorch recover` if piorch exits first."""
        self._stopping.set()
        self._interrupt()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        stuck = [thread.name for thread in threads if thread.is_alive()]
        if not self._closer.close(max(0.1, deadline - time.monotonic())):
            stuck.append(f"{self._closer.thread.name} (finishing {self.active} file(s))")
        if stuck:
            self._on_event(Notice("warning", f"still running {timeout:g} s after stop: {', '.join(stuck)}; "
                                             "what they hold is finished when they end"))
        return stuck

    def _interrupt(self) -> None:
        """Backend hook: wake whatever blocks (close the listener, stop nc)."""

    def wait_finished(self, timeout: float) -> bool:
        """True once a `--once` receiver has had its one connection (or the receiver was stopped)."""
        return self._stopping.wait(timeout)


class BuiltinReceiver(Receiver):
    """A Python socket server: no gap between connections, large reads, no extra process."""

    def start(self) -> None:
        check_out_dir(self.settings.out_dir)
        self._listener = bind_listener(self.settings.bind, self.settings.port)
        self.port = self._listener.getsockname()[1]
        self._listener.settimeout(POLL_S)
        self._live: set[socket.socket] = set()
        self._spawn(self._accept_loop, name="piorch-accept")

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
                self.report(Notice("warning", f"refused a connection from {peer}: only the Pi ({allowed}) "
                                              "may send here"))
                continue
            # Served on this thread (named for it meanwhile: stop's warning says which connection holds it),
            # the listener watched meanwhile: a next connection (a resume while this one hangs, a second
            # sender) hands the accepting to a new thread. One thread a connection, not two: a fleet's Pis
            # start at once and share one core's Python, so each thread start of one Pi delays the others.
            this = threading.current_thread()
            this.name = f"piorch-conn {peer}"
            if self.settings.once:
                self._serve(conn, peer)
                break  # `--once`: one connection, no more accepted
            if self._serve(conn, peer, watch_listener=True):
                return
            this.name = "piorch-accept"

    def _interrupt_connections(self) -> None:
        with self._lock:
            live = list(self._live)
        for conn in live:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its own thread

    def _serve(self, conn: socket.socket, peer: str, watch_listener: bool = False) -> bool:
        """Read one connection to its end. `watch_listener`: meanwhile, when the listener has a connection
        waiting, start a new accepting thread for it; True when one was started (the caller stops accepting).
        """
        with self._lock:
            self._live.add(conn)
        sink = self._open_sink(peer)
        # Anonymous memory, not bytearray(CHUNK): that zeroes all of it at once, 256 page faults in a new
        # thread (~0.4 ms a connection, which each Pi of a fleet pays during its start); here only the
        # pages a read reaches are ever touched. A slice a sink still holds keeps it mapped.
        buffer = mmap.mmap(-1, CHUNK)
        view = memoryview(buffer)
        ended_by, error = Ending.DONE, ""
        # One wait for both: the connection's bytes and, where watched, the listener's next connection.
        # POLL_S bounds it so that a stop is seen.
        conn.setblocking(False)
        reading = conn.fileno()
        waiting = select.poll()
        waiting.register(reading, select.POLLIN)
        listener = self._listener.fileno() if watch_listener else -1
        if listener >= 0:
            waiting.register(listener, select.POLLIN)
        handed_over = False
        # Gathering (GATHER_BYTES), where nothing reads live, is asked for once, after the first read: the
        # first byte is written as it comes.
        ask_gather, gathering = self.tap is None, False
        try:
            while True:
                if self._stopping.is_set():
                    # Take what the kernel already holds, then stop: bytes that reached the laptop are kept.
                    ended_by = Ending.STOPPED
                    self._drain(conn, sink, view)
                    break
                ready = dict(waiting.poll(POLL_MS))
                if listener >= 0 and listener in ready:
                    waiting.unregister(listener)
                    if not ready[listener] & (select.POLLNVAL | select.POLLERR) and not self._stopping.is_set():
                        self._spawn(self._accept_loop, name="piorch-accept")
                        handed_over = True
                    listener = -1  # closed by stop(), or handed over: no longer this thread's to watch
                if reading not in ready and not gathering:
                    continue  # (gathering, what came, less than GATHER_BYTES, is read at the timeout)
                try:
                    count = conn.recv_into(buffer)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    ended_by, error = Ending.FAILED, str(exc.strerror or exc)
                    break
                if count == 0:
                    ended_by = self._cut_reason or Ending.DONE
                    break
                sink.write(view[:count])
                if ask_gather:
                    ask_gather = False
                    with contextlib.suppress(OSError):  # where it cannot be set, each arrival wakes the read
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, GATHER_BYTES)
                        gathering = True
        except (WriteFailed, OSError) as exc:
            ended_by, error = Ending.FAILED, str(exc)
            self.failure = str(exc)
        finally:
            with self._lock:
                self._live.discard(conn)
            conn.close()
            self._end_sink(sink, ended_by, error)
            if self.settings.once:
                self._stopping.set()
        return handed_over

    @staticmethod
    def _drain(conn: socket.socket, sink: Sink, view: memoryview) -> None:
        conn.setblocking(False)
        while True:
            try:
                count = conn.recv_into(view)
            except OSError:
                return
            if count == 0:
                return
            sink.write(view[:count])


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
    """The recipe's `nc -l` loop, run through `sh`; nc's stdout goes through the same sinks.

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
        self._sink: Sink | None = None
        self._write_error: str | None = None
        self._spawn(self._loop, name="piorch-nc")
        # The Pi's nc must not connect before this one listens, or the camera's pipe breaks at once.
        def already_served() -> bool:
            # A quick sender may have come and gone before the probe looked: nc was listening then.
            return self._sink is not None or self.files_done > 0 or self._stopping.is_set()

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
            if self._sink is None:
                self._sink = self._open_sink("nc")
            self._sink.write(chunk)
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
                if self._stopping.is_set():
                    # stop() came between the loop's check and this start: its kill found the old nc, so
                    # this one is ended here (else it would listen on, orphaned, after piorch exits).
                    self._kill_nc()
                # A stdin at end-of-file makes both flavours exit as soon as the sender closes.
                try:
                    self._proc.wait()
                except sh.SignalException:
                    pass  # stopped by us: what arrived is finished below
            sink, self._sink = self._sink, None
            stderr = bytes(self._proc.stderr or b"").decode("utf-8", "replace").strip()
            if sink is not None:
                if self._write_error:
                    self._end_sink(sink, Ending.FAILED, self._write_error)
                else:
                    self._end_sink(sink, self._cut_reason or (Ending.STOPPED if self._stopping.is_set()
                                                              else Ending.DONE))
                if self.settings.once:
                    self._stopping.set()
            elif stderr and not self._stopping.is_set():
                self.report(Notice("error", f"nc failed: {stderr.splitlines()[-1]}"))
                self._stopping.set()


def make_receiver(settings: ReceiveSettings, on_file: FileSink, on_event: EventSink,
                  suffix: str = ".h264") -> Receiver:
    cls = BuiltinReceiver if settings.backend is Backend.BUILTIN else NcReceiver
    return cls(settings, on_file, on_event, suffix)
