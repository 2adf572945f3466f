"""What a Pi's start does with files, in few system calls (each a let-go of the GIL, which a fleet's Pis then
hand each other; benchmarks/README.md, twelfth round), with the same answers as before: the output folder's
check, the remembered probe's read, the received file's hasher and its placeholder manifest."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from orchestrator.errors import ReceiverError
from orchestrator.pi.probe_memory import MAX_BYTES, keep_probe, memory_folder, recall_probe
from orchestrator.stream.manifest import RESERVED_BYTES, read_placeholder, reserve_manifest
from orchestrator.stream.receiver import check_out_dir
from orchestrator.stream.writer import CHUNK, FileWriter
from tests.test_probe_memory import NamedHost, probe_text


def test_the_output_folder_is_made_when_missing_and_a_file_in_its_place_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    check_out_dir(folder)
    assert folder.is_dir()
    check_out_dir(folder)  # there already: fine
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ReceiverError, match=r"cannot create the output folder .*file"):
        check_out_dir(tmp_path / "file")
    with pytest.raises(ReceiverError, match="cannot create the output folder"):
        check_out_dir(tmp_path / "file" / "below")


def test_the_output_folder_check_of_a_folder_that_is_there_makes_one_system_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_access, real_mkdir = os.access, Path.mkdir

    def note(what: str, path: object) -> None:
        if str(path).startswith(str(tmp_path)):  # another thread's calls (shutil.which...) are not this check's
            calls.append(what)

    monkeypatch.setattr(os, "access", lambda path, *args, **kwargs: note("access", path)
                        or real_access(path, *args, **kwargs))
    monkeypatch.setattr(Path, "mkdir", lambda self, *args, **kwargs: note("mkdir", self)
                        or real_mkdir(self, *args, **kwargs))
    check_out_dir(tmp_path / "new")
    assert calls == ["access", "mkdir", "access"]
    calls.clear()
    check_out_dir(tmp_path / "new")
    assert calls == ["access"]


@pytest.mark.parametrize("what", ["fifo", "folder", "too large", "at the limit", "one byte under the limit"])
def test_a_memory_file_that_is_no_kept_probe_is_no_memory_and_never_holds_the_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    host = NamedHost("pi@cam1:22 key SHA256:abc")
    keep_probe(host, (), probe_text())  # type: ignore[arg-type]
    (path,) = memory_folder().iterdir()
    kept = json.loads(path.read_text())
    path.unlink()
    if what == "fifo":
        os.mkfifo(path)  # no writer: a plain open would wait for one for ever
    elif what == "folder":
        path.mkdir()
    else:
        size = MAX_BYTES + {"too large": 1, "at the limit": 0}.get(what, -1)
        text = json.dumps(kept)[:-1] + ', "pad": ""}'
        path.write_text(text[:-2] + "x" * (size - len(text)) + '"}')
        assert path.stat().st_size == size
    found: list[object] = []
    reader = threading.Thread(target=lambda: found.append(recall_probe(host, ())), daemon=True)  # type: ignore[arg-type]
    reader.start()
    reader.join(10)
    assert not reader.is_alive()
    if what in ("at the limit", "one byte under the limit"):
        assert found[0] is not None and found[0].stamp == "123 45"  # type: ignore[attr-defined]
    else:
        assert found == [None]


def _open_descriptors(path: Path) -> int:
    folder = Path("/proc/self/fd")
    return sum(1 for fd in folder.iterdir() if os.path.realpath(fd) == str(path.resolve()))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_the_hasher_opens_the_file_once_unbuffered_and_hashes_every_byte(tmp_path: Path) -> None:
    writer = FileWriter(tmp_path, ".h264", "10.0.0.2:5000")
    assert _open_descriptors(writer.tmp_path) == 2, "the writer's and the hasher's own"
    data = os.urandom(CHUNK + 12345)
    for start in range(0, len(data), 65536):
        writer.write(data[start:start + 65536])
    received = writer.finalize()
    assert received.sha256 == hashlib.sha256(data).hexdigest() and received.path.read_bytes() == data
    assert _open_descriptors(received.path) <= 1, "the hasher closed its own"
    assert received.lock is not None
    received.lock.release()


def test_a_placeholder_is_reserved_whole_and_a_name_taken_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "id.json"
    reserve_manifest(path, "id", "id.h264.tmp", "2026-12-03T00:00:00Z", "10.0.0.2:5000", {"width": 64})
    assert path.stat().st_size == RESERVED_BYTES
    said = read_placeholder(path)
    assert said is not None and said["peer"] == "10.0.0.2:5000" and said["raw"] == {"width": 64}
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    other = tmp_path / "other.json"
    other.write_text("someone else's")
    reserve_manifest(other, "other", "other.h264.tmp", "2026-12-03T00:00:00Z", "peer")
    assert other.read_text() == "someone else's"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
