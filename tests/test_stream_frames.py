"""MJPEG split into frames on a real receiver on loopback: every `.jpg` is a whole picture; an image the
connection cut short is kept apart as `.jpg.partial` and counted in the manifest."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path

import pytest

import orchestrator.sim
from orchestrator.events import Event, FileFinished, FileStatus
from orchestrator.settings import Backend, ReceiveSettings
from orchestrator.stream.finishing import finish_received_file
from orchestrator.stream.receiver import make_receiver
from orchestrator.stream.writer import ReceivedFile

MJPEG = (Path(orchestrator.sim.__file__).parent / "clip.mjpeg").read_bytes()
STARTS = [i for i in range(len(MJPEG)) if MJPEG.startswith(b"\xff\xd8\xff", i)]


def receive_frames(out: Path, payload: bytes) -> tuple[FileFinished, list[Event]]:
    events: list[Event] = []
    received: list[ReceivedFile] = []
    settings = ReceiveSettings(port=0, out_dir=out, backend=Backend.BUILTIN, bind="127.0.0.1", split_jpeg=True)
    receiver = make_receiver(settings, received.append, events.append, suffix=".mjpeg")
    receiver.start()
    try:
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
            sock.sendall(payload)
        deadline = time.monotonic() + 20
        while not received:
            assert time.monotonic() < deadline, "the connection did not become a frame folder"
            time.sleep(0.02)
    finally:
        assert receiver.stop() == []
    (item,) = received
    finished = finish_received_file(item, interrupted=False, failure=None, discard_partial=False, context={},
                                    on_event=events.append)
    return finished, events


@pytest.mark.parametrize("cut_at", [100, 2])
def test_a_truncated_last_frame_is_kept_apart_and_counted(tmp_path: Path, cut_at: int) -> None:
    whole = MJPEG[: STARTS[3]]
    payload = whole + MJPEG[STARTS[3] : STARTS[3] + cut_at]  # three pictures and the start of a fourth
    finished, _ = receive_frames(tmp_path / "recv", payload)
    folder = finished.path
    assert finished.status is FileStatus.COMPLETE and folder.is_dir()
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["frame_000001.jpg", "frame_000002.jpg", "frame_000003.jpg", "frame_000004.jpg.partial"]
    for index, path in enumerate(sorted(folder.glob("*.jpg"))):
        assert path.read_bytes() == MJPEG[STARTS[index] : STARTS[index + 1]]
        assert path.read_bytes().endswith(b"\xff\xd9")
    assert (folder / "frame_000004.jpg.partial").read_bytes() == payload[len(whole):]
    manifest = json.loads(finished.path.with_name(finished.path.name + ".json").read_text())
    assert manifest["frames"] == 3 and manifest["partial_frames"] == 1
    assert [(f["file"], f["complete"]) for f in manifest["frame_list"]] == [
        ("frame_000001.jpg", True), ("frame_000002.jpg", True), ("frame_000003.jpg", True),
        ("frame_000004.jpg.partial", False)]
    # The stream's hash is still that of every byte that arrived, the cut picture's too.
    assert manifest["sha256"] == hashlib.sha256(payload).hexdigest() == finished.sha256


def test_whole_frames_only_make_no_partial(tmp_path: Path) -> None:
    payload = MJPEG[: STARTS[5]]
    finished, _ = receive_frames(tmp_path / "recv", payload)
    assert sorted(p.name for p in finished.path.iterdir()) == [f"frame_{i:06d}.jpg" for i in range(1, 6)]
    manifest = json.loads(finished.path.with_name(finished.path.name + ".json").read_text())
    assert manifest["frames"] == 5 and manifest["partial_frames"] == 0
    assert all(entry["complete"] for entry in manifest["frame_list"])
