"""The receiver on loopback sockets: real connections, real files, real local netcat."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.errors import ReceiverError
from orchestrator.events import Event, FileFinished, FileStarted, FileStatus
from orchestrator.jobs.listen import ListenResult, run_listen
from orchestrator.settings import Backend, ReceiveSettings
from orchestrator.stream.receiver import GATHER_BYTES, bind_listener, make_receiver
from orchestrator.stream.writer import POLL_S, FileWriter, ReceivedFile
from tests.e2e_helpers import piorch_argv
from tests.system_tools import require_tool

BACKENDS = [Backend.BUILTIN, Backend.NC]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def send(port: int, payload: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # the nc backend restarts nc between connections
    with sock:
        sock.sendall(payload)


class Listening:
    """run_listen in a thread, stopped at the end; events collected with list.append."""

    def __init__(self, settings: ReceiveSettings) -> None:
        self.events: list[Event] = []
        self.stop = threading.Event()
        self.result: ListenResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings,), daemon=True)

    def _run(self, settings: ReceiveSettings) -> None:
        try:
            self.result = run_listen(settings, self.events.append, self.stop)
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 20.0) -> ListenResult:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error
        assert self.result is not None
        return self.result

    def files(self) -> list[FileFinished]:
        return [e for e in self.events if isinstance(e, FileFinished)]

    def wait_started(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(isinstance(e, FileStarted) for e in self.events) < count:
            assert time.monotonic() < deadline, f"{count} files did not start"
            time.sleep(0.02)

    def wait_files(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.files()) < count:
            assert time.monotonic() < deadline, f"{count} files did not arrive"
            time.sleep(0.05)


@pytest.fixture
def listening(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Listening, ReceiveSettings]]:
    backend = request.param
    if backend is Backend.NC:
        require_tool("nc")  # the nc backend runs the laptop's own netcat
    settings = ReceiveSettings(port=free_port(), out_dir=tmp_path / "recv", backend=backend, bind="127.0.0.1")
    run = Listening(settings)
    run.thread.start()
    # Wait for the port: bind() happens before run_listen reports LISTENING.
    deadline = time.monotonic() + 10
    while not run.events and time.monotonic() < deadline:
        time.sleep(0.02)
    yield run, settings
    run.stop.set()
    run.thread.join(20)


@pytest.mark.parametrize("listening", BACKENDS, indirect=True)
def test_each_connection_becomes_a_complete_uuid_file(listening: tuple[Listening, ReceiveSettings]) -> None:
    run, settings = listening
    payloads = [os.urandom(3_000_000), b"x" * 7, os.urandom(100_000)]
    for index, payload in enumerate(payloads, 1):
        send(settings.port, payload)
        run.wait_files(index)  # the nc backend takes one connection at a time, like the recipe
    result = run.finish()
    assert [f.bytes for f in result.files] == [len(p) for p in payloads]
    for finished, payload in zip(result.files, payloads, strict=True):
        assert finished.status is FileStatus.COMPLETE
        assert finished.path.read_bytes() == payload
        assert finished.sha256 == hashlib.sha256(payload).hexdigest()
        manifest = json.loads(finished.path.with_suffix(".json").read_text())
        assert manifest["status"] == "complete" and manifest["sha256"] == finished.sha256
        assert manifest["bytes"] == len(payload) and manifest["id"] == finished.path.stem
    assert not list(settings.out_dir.glob("*.tmp"))
    assert sum(isinstance(e, FileStarted) for e in run.events) == 3


@pytest.mark.parametrize("listening", [Backend.BUILTIN], indirect=True)
def test_a_connection_that_comes_while_another_is_open_is_received_alongside_it(
        listening: tuple[Listening, ReceiveSettings]) -> None:
    # The first connection is read on the accepting thread, which watches the listener meanwhile: the second
    # (a resume while the first hangs, a second sender) is taken at once, not after the first ends, and a
    # third after both.
    run, settings = listening
    first, second, third = os.urandom(200_000), os.urandom(300_000), b"third"
    with socket.create_connection(("127.0.0.1", settings.port), timeout=10) as hanging:
        hanging.sendall(first[:100_000])
        run.wait_started(1)
        send(settings.port, second)
        run.wait_files(1)  # while the first is still open
        hanging.sendall(first[100_000:])
    run.wait_files(2)
    send(settings.port, third)
    run.wait_files(3)
    result = run.finish()
    assert [f.path.read_bytes() for f in result.files] == [second, first, third]
    assert all(f.status is FileStatus.COMPLETE for f in result.files)


@pytest.mark.parametrize("live", [False, True])
def test_reads_gather_after_the_first_byte_unless_a_tap_reads_live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   live: bool) -> None:
    # No tap: the first byte is written as it comes, then the reads wait for GATHER_BYTES or POLL_S instead of
    # waking for each small arrival; what is less than that still reaches the file, by the timeout. A tap
    # (the Python API, --view) sees each arrival as it comes. Either way every byte is kept, in order.
    writes: list[float] = []
    write = FileWriter.write

    def noted(self: FileWriter, data: memoryview | bytes) -> None:
        writes.append(time.monotonic())
        write(self, data)

    monkeypatch.setattr(FileWriter, "write", noted)
    settings = ReceiveSettings(port=0, out_dir=tmp_path / "recv", bind="127.0.0.1")
    files: list[ReceivedFile] = []
    tapped: list[bytes] = []
    receiver = make_receiver(settings, files.append, lambda event: None)
    receiver.tap = (lambda data: tapped.append(bytes(data))) if live else None
    receiver.start()
    pieces = [b"f"] + [os.urandom(2000) for _ in range(40)] + [b"t"]
    try:
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
            sock.sendall(pieces[0])
            wait_until(lambda: _on_disk(settings.out_dir) == 1)  # the first byte, alone, at once
            started = time.monotonic()
            for piece in pieces[1:-1]:
                sock.sendall(piece)
                time.sleep(0.005)  # spaced as a camera's frames come (only the pattern; nothing is timed)
            sock.sendall(pieces[-1])
            # Less than GATHER_BYTES waits for the timeout, not for more or the end.
            wait_until(lambda: _on_disk(settings.out_dir) == sum(map(len, pieces)))
            ended = time.monotonic()
    finally:
        receiver.wait_idle(10)
        receiver.stop()
    (finished,) = files
    assert finished.path.read_bytes() == b"".join(pieces)
    if live:
        assert b"".join(tapped) == b"".join(pieces)
    else:
        # An upper bound by construction (a read after the first needs GATHER_BYTES or a poll's timeout).
        later = [at for at in writes if at >= started]
        assert len(later) <= 2 + sum(map(len, pieces)) // GATHER_BYTES + (ended - started) / POLL_S


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the receiver did not get there"
        time.sleep(0.005)


def _on_disk(out: Path) -> int:
    return sum(p.stat().st_size for p in out.glob("*.tmp"))


@pytest.mark.parametrize("listening", BACKENDS, indirect=True)
def test_stop_keeps_every_byte_that_arrived(listening: tuple[Listening, ReceiveSettings]) -> None:
    run, settings = listening
    payload = os.urandom(500_000)
    sock = socket.create_connection(("127.0.0.1", settings.port), timeout=5)
    try:
        sock.sendall(payload)
        # builtin: everything reaches the file; nc: sh hands nc's output over in 64 KiB chunks.
        wanted = len(payload) if settings.backend is Backend.BUILTIN else 400_000
        deadline = time.monotonic() + 10
        while _on_disk(settings.out_dir) < wanted:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        before_stop = _on_disk(settings.out_dir)
        result = run.finish()
    finally:
        sock.close()
    (finished,) = result.files
    assert finished.status is FileStatus.INTERRUPTED
    data = finished.path.read_bytes()
    if settings.backend is Backend.BUILTIN:
        # The builtin receiver drains the socket before it stops: every byte that reached the laptop.
        assert data == payload
    else:
        # Stopping nc loses what still sits in its socket buffer (nc cannot be told to drain), never more.
        assert payload.startswith(data) and len(data) >= before_stop
    assert not list(settings.out_dir.glob("*.tmp"))


@pytest.mark.parametrize("listening", [Backend.BUILTIN], indirect=True)
def test_empty_connection_leaves_no_file(listening: tuple[Listening, ReceiveSettings]) -> None:
    run, settings = listening
    socket.create_connection(("127.0.0.1", settings.port), timeout=5).close()
    send(settings.port, b"real data")
    run.wait_files(1)
    result = run.finish()
    assert [f.bytes for f in result.files] == [9]
    assert len(list(settings.out_dir.iterdir())) == 2  # one data file and its manifest


@pytest.mark.parametrize("flavour", ["nc.openbsd", "nc.traditional"])
def test_nc_backend_with_each_local_flavour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flavour: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nc").symlink_to(require_tool(flavour))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    settings = ReceiveSettings(port=free_port(), out_dir=tmp_path / "recv", backend=Backend.NC,
                               bind="127.0.0.1", once=True)
    run = Listening(settings)
    run.thread.start()
    payload = os.urandom(2_000_000)
    send(settings.port, payload)
    run.thread.join(20)
    assert run.result is not None and run.error is None
    (finished,) = run.result.files
    assert finished.path.read_bytes() == payload and finished.status is FileStatus.COMPLETE


def test_port_busy_is_a_clear_error(tmp_path: Path) -> None:
    holder = bind_listener("127.0.0.1", 0)
    try:
        port = holder.getsockname()[1]
        for backend in BACKENDS:
            settings = ReceiveSettings(port=port, out_dir=tmp_path, backend=backend, bind="127.0.0.1")
            with pytest.raises(ReceiverError, match=f"port {port} is busy"):
                run_listen(settings, lambda event: None, threading.Event())
    finally:
        holder.close()


def test_foreign_bind_address_is_a_clear_error(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is never a local address; bind() fails locally and nothing is sent anywhere.
    with pytest.raises(ReceiverError, match="not an address of this laptop"):
        bind_listener("192.0.2.1", 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")
def test_disk_full_keeps_what_was_written_and_fails_the_file(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        settings = ReceiveSettings(port=free_port(), out_dir=mount, backend=Backend.BUILTIN, bind="127.0.0.1",
                                   once=True)
        run = Listening(settings)
        run.thread.start()
        payload = os.urandom(3_000_000)
        try:
            send(settings.port, payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the receiver gave up on a full disk and closed: expected
        run.thread.join(20)
        assert run.result is not None
        (finished,) = run.result.files
        assert finished.status is FileStatus.FAILED
        data = finished.path.read_bytes()
        assert 0 < len(data) < len(payload) and payload.startswith(data)
        assert finished.sha256 == hashlib.sha256(data).hexdigest()
        # The manifest still says so: its room was reserved when the file opened.
        manifest = json.loads(finished.path.with_suffix(".json").read_text())
        assert manifest["status"] == "failed" and manifest["reason"] == "disk full"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("backend", ["builtin", "nc"])
def test_listen_cli_once(tmp_path: Path, backend: str) -> None:
    if backend == "nc":
        require_tool("nc")
    port = free_port()
    out = tmp_path / "recv"
    env = dict(os.environ, PIORCH_CONFIG=str(tmp_path / "none.toml"))
    proc = subprocess.Popen(piorch_argv("listen", "--once", "--port", str(port), "--out", str(out),
                                        "--backend", backend, "--bind", "127.0.0.1"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    payload = os.urandom(1_000_000)
    try:
        send(port, payload)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    (data_file,) = out.glob("*.h264")
    assert data_file.read_bytes() == payload
    assert "complete" in stdout
