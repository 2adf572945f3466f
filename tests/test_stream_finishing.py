"""Finishing never leaves a placeholder: a real receiver on loopback feeding the session, as `record` wires
them, and every way finishing can fail after the bytes arrived. Each file must end with a finished manifest
(plain JSON of its own size), the bytes intact, and no thread dying with a traceback."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import orchestrator.sim
import orchestrator.stream.session as session_module
from orchestrator.events import Ending, Event, FileFinished, FileStarted, FileStatus, Notice
from orchestrator.settings import Backend, ReceiveSettings
from orchestrator.stream.closer import Closer
from orchestrator.stream.manifest import RESERVED_BYTES, read_placeholder, utc_now
from orchestrator.stream.receiver import make_receiver
from orchestrator.stream.recovery import find_leftovers
from orchestrator.stream.remux import Remuxer, RemuxResult
from orchestrator.stream.session import SessionFiles
from orchestrator.stream.writer import ReceivedFile

CLIP = (Path(orchestrator.sim.__file__).parent / "clip.h264").read_bytes()  # 50 frames of 640x360 H.264


class Recording:
    """A builtin receiver on loopback whose files go to a SessionFiles, the way `record` wires them."""

    def __init__(self, out: Path, container: str = "mp4", segment_frames: int = 0) -> None:
        self.out = out
        self.events: list[Event] = []
        self.session = SessionFiles(out, container, 25.0, False, False, self.events.append)
        settings = ReceiveSettings(port=0, out_dir=out, backend=Backend.BUILTIN, bind="127.0.0.1",
                                   parse_h264=True, segment_frames=segment_frames)
        self.receiver = make_receiver(settings, self.session.on_file, self.events.append)
        self.receiver.start()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.receiver.port), timeout=10)

    def send(self, payload: bytes) -> None:
        with self.connect() as sock:
            sock.sendall(payload)

    def wait_for(self, found: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not found():
            assert time.monotonic() < deadline, f"{what} did not happen"
            time.sleep(0.02)

    def started(self) -> FileStarted:
        self.wait_for(lambda: any(isinstance(e, FileStarted) for e in self.events), "a file start")
        return next(e for e in self.events if isinstance(e, FileStarted))

    def finish(self, files: int = 1) -> tuple[FileFinished, ...]:
        self.wait_for(lambda: self.receiver.files_done >= files, f"{files} file(s) handed over")
        assert self.receiver.stop() == []
        return self.session.finish(False, None)

    def notices(self, level: str) -> list[str]:
        return [e.message for e in self.events if isinstance(e, Notice) and e.level == level]


def finished_manifest(path: Path) -> dict[str, object]:
    """A finished manifest is plain JSON of its own size: the 64 KiB reservation is gone."""
    text = path.read_text()
    data = json.loads(text)
    assert text == json.dumps(data, indent=2) + "\n" and len(text.encode()) < RESERVED_BYTES
    assert data["status"] != "receiving"
    return dict(data)


def session_manifest(out: Path) -> dict[str, object]:
    (path,) = out.glob("session-*.json")
    return dict(json.loads(path.read_text()))


@pytest.fixture(autouse=True)
def no_thread_dies(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A worker thread that dies prints a traceback on the user's terminal: none may."""
    died: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(f"{args.thread}: {args.exc_value!r}"))
    yield
    assert died == []


def test_a_normal_file_has_a_plain_manifest_and_its_placeholder_was_reserved_while_receiving(tmp_path: Path) -> None:
    rec = Recording(tmp_path / "recv", container="h264")
    with rec.connect() as sock:
        sock.sendall(CLIP[:1000])
        started = rec.started()
        placeholder = started.path.with_name(started.path.name.split(".")[0] + ".json")
        # While the bytes come, the room for a manifest on a full disk is held, and it says when and from whom.
        assert placeholder.stat().st_size == RESERVED_BYTES
        said = read_placeholder(placeholder)
        assert said is not None and said["file"] == started.path.name and said["peer"].startswith("127.0.0.1:")
        assert str(said["started_utc"]) <= utc_now()
        sock.sendall(CLIP[1000:])
    (finished,) = rec.finish()
    assert finished.status is FileStatus.COMPLETE and finished.remux_error is None
    assert finished.path.read_bytes() == CLIP
    manifest = finished_manifest(placeholder)
    assert manifest["started_utc"] == said["started_utc"] and manifest["frames"] == 50


def test_remux_without_pyav_keeps_the_raw_stream_and_says_why(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # `import av` fails as on a machine where PyAV is not installed (issue 9: the remux thread died there).
    monkeypatch.setitem(sys.modules, "av", None)
    rec = Recording(tmp_path / "recv")
    rec.send(CLIP)
    (finished,) = rec.finish()
    assert finished.status is FileStatus.COMPLETE
    assert finished.remux_error is not None and "PyAV is not installed" in finished.remux_error
    assert finished.path.suffix == ".h264" and finished.path.read_bytes() == CLIP
    manifest = finished_manifest(finished.manifest or Path("missing"))
    assert manifest["status"] == "complete" and manifest["file"] == manifest["raw_file"] == finished.path.name
    assert manifest["remux_error"] == finished.remux_error and manifest["container"] == "h264"
    assert manifest["sha256"] == hashlib.sha256(CLIP).hexdigest()
    assert any("PyAV is not installed" in line and "is kept" in line for line in rec.notices("warning"))
    assert [f["status"] for f in session_manifest(rec.out)["files"]] == ["complete"]  # type: ignore[union-attr]
    assert sorted(p.suffix for p in rec.out.iterdir()) == [".h264", ".json", ".json"]


def test_an_os_error_in_the_remux_keeps_the_raw_stream(tmp_path: Path) -> None:
    pytest.importorskip("av")
    rec = Recording(tmp_path / "recv")
    with rec.connect() as sock:
        sock.sendall(CLIP[:1000])
        started = rec.started()
        # A folder where the MP4 must go: the final rename of the remux fails with IsADirectoryError, which
        # used to end the remux thread and leave the 64 KiB `receiving` placeholder.
        in_the_way = rec.out / (started.path.name.split(".")[0] + ".mp4")
        in_the_way.mkdir()
        (in_the_way / "mine.txt").write_text("the user's")
        sock.sendall(CLIP[1000:])
    (finished,) = rec.finish()
    assert finished.status is FileStatus.COMPLETE and finished.path.read_bytes() == CLIP
    assert finished.remux_error is not None and "Is a directory" in finished.remux_error
    manifest = finished_manifest(finished.manifest or Path("missing"))
    assert manifest["remux_error"] == finished.remux_error and manifest["file"] == finished.path.name
    assert (in_the_way / "mine.txt").read_text() == "the user's"
    assert not list(rec.out.glob("*.partial")) and not list(rec.out.glob("*.tmp"))


def test_a_failing_callback_does_not_stop_the_remux_worker(tmp_path: Path) -> None:
    pytest.importorskip("av")
    first, second = tmp_path / "first.h264", tmp_path / "second.h264"
    first.write_bytes(CLIP)
    second.write_bytes(CLIP)
    events: list[Event] = []
    done: list[tuple[RemuxResult | None, str | None]] = []

    def broken(result: RemuxResult | None, error: str | None) -> None:
        raise RuntimeError("a bug after the remux")

    remuxer = Remuxer("mkv", 25.0, events.append)
    remuxer.submit(first, broken)
    remuxer.submit(second, lambda result, error: done.append((result, error)))
    assert remuxer.close(60)
    ((result, error),) = done
    assert error is None and result is not None and result.frames == 50
    assert (tmp_path / "second.mkv").is_file()
    assert [e.message for e in events if isinstance(e, Notice)] == [
        "finishing first.h264 after its remux failed (RuntimeError: a bug after the remux)"]


def test_a_remux_that_outlives_its_wait_leaves_finished_manifests(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("av")
    monkeypatch.setattr(session_module, "REMUX_WAIT_S", 0.5)
    out = tmp_path / "recv"
    rec = Recording(out)
    # A first segment whose raw stream never ends (a FIFO held open by this test): its remux blocks in a
    # read, as on a disk that hangs, and the real file queued behind it cannot start in time.
    stuck = out / "00000000-0000-4000-8000-000000000000.h264"
    os.mkfifo(stuck)
    writer_end = os.open(stuck, os.O_RDWR)
    try:
        rec.session.on_file(ReceivedFile("00000000-0000-4000-8000-000000000000", stuck, 0, "", "127.0.0.1:1",
                                         utc_now(), utc_now(), 0.0, Ending.SEGMENT, frames=1))
        rec.send(CLIP)
        files = rec.finish()
    finally:
        os.close(writer_end)  # end of file for the blocked remux
    assert [f.status for f in files] == [FileStatus.COMPLETE, FileStatus.COMPLETE]
    for finished in files:
        assert finished.remux_error == f"remuxing {finished.path.name} did not finish within 0.5 s"
        manifest = finished_manifest(finished.manifest or Path("missing"))
        assert manifest["file"] == finished.path.name and manifest["remux_error"] == finished.remux_error
    assert files[1].path.read_bytes() == CLIP
    assert not list(out.glob("*.mp4")) and not list(out.glob("*.partial"))
    assert len(session_manifest(out)["files"]) == 2  # type: ignore[arg-type]


def test_a_rename_error_fails_the_file_and_keeps_its_bytes(tmp_path: Path) -> None:
    rec = Recording(tmp_path / "recv")
    with rec.connect() as sock:
        sock.sendall(CLIP[:1000])
        started = rec.started()
        # A folder at the data file's final name: the writer's rename fails (it used to raise on the
        # receiving thread, which died and left the placeholder).
        started.path.with_name(started.path.name.removesuffix(".tmp")).mkdir()
        sock.sendall(CLIP[1000:])
    (finished,) = rec.finish()
    assert finished.status is FileStatus.FAILED and finished.remux_error is None
    assert finished.path == started.path and finished.path.read_bytes() == CLIP
    assert finished.sha256 == hashlib.sha256(CLIP).hexdigest()
    manifest = finished_manifest(finished.manifest or Path("missing"))
    assert manifest["status"] == "failed" and manifest["file"] == started.path.name
    assert "could not be renamed" in str(manifest["reason"]) and "Is a directory" in str(manifest["reason"])
    assert session_manifest(rec.out)["status"] == "failed"
    # Reported already, with its reason: `recover` leaves it as it is.
    assert find_leftovers(rec.out) == []


def test_a_connection_that_ends_after_stop_is_still_finished(tmp_path: Path) -> None:
    rec = Recording(tmp_path / "recv")
    release = threading.Event()
    # A live view that stops taking bytes holds the receiving thread: stop() cannot join it in time.
    rec.receiver.tap = lambda data: release.wait(30) and None
    payload = CLIP[:60_000]  # fits in the socket buffers: the sender is not held too
    rec.send(payload)
    rec.wait_for(lambda: rec.receiver.bytes_total > 0, "the first read")
    stuck = rec.receiver.stop(timeout=0.5)
    assert len(stuck) == 1 and stuck[0].startswith("piorch-conn 127.0.0.1:")
    assert any(line.startswith("still running 0.5 s after stop: piorch-conn") for line in rec.notices("warning"))
    assert rec.session.finish(False, None) == ()
    release.set()
    rec.wait_for(lambda: any(isinstance(e, FileFinished) for e in rec.events), "the straggler's manifest")
    (finished,) = [e for e in rec.events if isinstance(e, FileFinished)]
    assert finished.path.read_bytes() == payload and finished.status is FileStatus.INTERRUPTED
    assert finished.remux_error is not None and "arrived after the recording ended" in finished.remux_error
    manifest = finished_manifest(finished.manifest or Path("missing"))
    assert manifest["sha256"] == hashlib.sha256(payload).hexdigest()
    files = session_manifest(rec.out)["files"]
    assert isinstance(files, list) and [f["file"] for f in files] == [finished.path.name]


def test_a_slow_subscriber_never_stalls_the_socket(tmp_path: Path) -> None:
    """Events and files are handed on by the closer thread: a terminal that blocks on the first event
    (or a disk that blocks on the first manifest) does not stop the bytes from reaching the disk."""
    out = tmp_path / "recv"
    release = threading.Event()
    events: list[Event] = []

    def slow_terminal(event: Event) -> None:
        release.wait(30)
        events.append(event)

    settings = ReceiveSettings(port=0, out_dir=out, backend=Backend.BUILTIN, bind="127.0.0.1", parse_h264=True,
                               segment_frames=10)
    received: list[ReceivedFile] = []
    receiver = make_receiver(settings, received.append, slow_terminal)
    receiver.start()
    try:
        payload = CLIP * 20  # 1000 frames with an I-frame every 25: 40 segments, 1.7 MB
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
            sock.sendall(payload)
        deadline = time.monotonic() + 20
        while sum(p.stat().st_size for p in out.glob("*.h264*")) < len(payload):
            assert time.monotonic() < deadline, "the bytes did not reach the disk while a subscriber was stuck"
            time.sleep(0.02)
        assert events == [] and received == []  # the subscriber still holds the first event
    finally:
        release.set()
        receiver.wait_idle(30)
        assert receiver.stop() == []
    assert len(received) == 40 and b"".join(f.path.read_bytes() for f in received) == payload
    assert [f.segment for f in received] == list(range(1, 41)) and {f.frames for f in received} == {25}
    assert sum(isinstance(e, FileStarted) for e in events) == 40


def test_the_closer_starts_with_its_first_job_and_runs_jobs_itself_when_no_thread_can_be_had(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    closer = Closer(ran.append)
    assert closer.thread.ident is None  # nothing to finish yet: no thread
    assert closer.close(1.0)  # closing one that never started is at once, and later jobs run on the caller
    closer.put(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name]

    # The worker cannot be started (threads exhausted): the job runs on the caller's thread, not left queued.
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    ran.clear()
    closer = Closer(ran.append)
    monkeypatch.setattr(threading.Thread, "start", refuse)
    closer.put(lambda: ran.append("first"))
    closer.put(lambda: ran.append("second"))
    assert ran == ["first", "second"] and closer.queued == 0
    assert closer.close(1.0)
