"""`piorch recover` after a piorch that was killed (SIGKILL) at each step of a file's life: every leftover,
placeholders included, ends with a `recovered` manifest that tells the file's true start and peer; a file a
live piorch still finishes is never touched."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import orchestrator.sim
from orchestrator.events import Ending, Event, FileFinished, FileStatus, RawLayout
from orchestrator.stream.finishing import finish_received_file
from orchestrator.stream.manifest import read_placeholder, stream_container
from orchestrator.stream.raw import unpad
from orchestrator.stream.recovery import recover_leftovers
from orchestrator.stream.writer import FileWriter
from tests.e2e_helpers import ROOT, piorch_argv, run_piorch

CLIP = (Path(orchestrator.sim.__file__).parent / "clip.h264").read_bytes()
MJPEG = (Path(orchestrator.sim.__file__).parent / "clip.mjpeg").read_bytes()
PEER = "192.168.50.2:40000"


def killed_python(code: str, *args: str) -> None:
    """Run piorch's own code in a process that kills itself with SIGKILL at the end of `code`."""
    script = f"import os, signal, sys\nfrom pathlib import Path\n{code}\nos.kill(os.getpid(), signal.SIGKILL)\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr


def placeholders(out: Path) -> dict[str, dict[str, object]]:
    found = {}
    for path in out.glob("*.json"):
        said = read_placeholder(path)
        if said is not None:
            found[path.stem] = said
    return found


def manifest_of(out: Path, file_id: str) -> dict[str, object]:
    return dict(json.loads((out / f"{file_id}.json").read_text()))


def test_recover_after_listen_was_killed_tells_the_true_start(tmp_path: Path) -> None:
    out = tmp_path / "recv"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PIORCH_CONFIG=str(tmp_path / "none.toml"), PYTHONPATH=str(ROOT))
    listen = subprocess.Popen(piorch_argv("listen", "--port", str(port), "--out", str(out), "--bind", "127.0.0.1"),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "piorch listen did not listen"
                time.sleep(0.05)
        with sock:
            sock.sendall(CLIP)
            while sum(p.stat().st_size for p in out.glob("*.h264.tmp")) < len(CLIP):
                assert time.monotonic() < deadline, "the bytes did not reach the disk"
                time.sleep(0.02)
            listen.send_signal(signal.SIGKILL)
            listen.wait(10)
    finally:
        if listen.poll() is None:
            listen.kill()
    ((file_id, said),) = placeholders(out).items()
    assert said["file"] == f"{file_id}.h264.tmp"

    result = run_piorch(env, "recover", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / f"{file_id}.h264").read_bytes() == CLIP and not list(out.glob("*.tmp"))
    manifest = manifest_of(out, file_id)
    assert manifest["status"] == "recovered" and manifest["file"] == f"{file_id}.h264"
    assert manifest["sha256"] == hashlib.sha256(CLIP).hexdigest() and manifest["bytes"] == len(CLIP)
    # The start the placeholder recorded when the first byte came, not the file's ctime (its last change).
    assert manifest["started_utc"] == said["started_utc"] and manifest["peer"] == said["peer"]
    assert str(manifest["started_utc"]) <= str(manifest["ended_utc"])
    assert run_piorch(env, "recover", str(out)).stdout.startswith("nothing to recover")


def test_recover_finalises_a_placeholder_whose_file_was_already_renamed(tmp_path: Path) -> None:
    out = tmp_path / "recv"
    out.mkdir()
    data = tmp_path / "clip.h264"
    data.write_bytes(CLIP)
    # Killed after the rename, before the manifest (during a remux, which takes seconds): before this was
    # handled, `recover` said there was nothing to recover and the 64 KiB `receiving` placeholder stayed.
    killed_python(f"from orchestrator.stream.writer import FileWriter\n"
                  f"writer = FileWriter(Path(sys.argv[1]), '.h264', {PEER!r})\n"
                  f"writer.write(Path(sys.argv[2]).read_bytes())\nwriter.end('eof')\nwriter.finalize()\n"
                  f"Path(sys.argv[1], writer.id + '.mp4.partial').write_bytes(b'half a container')",
                  str(out), str(data))
    ((file_id, said),) = placeholders(out).items()
    assert not list(out.glob("*.tmp")) and (out / f"{file_id}.h264").is_file()
    events: list[Event] = []
    (finished,) = recover_leftovers(out, events.append)
    assert finished.status is FileStatus.RECOVERED and finished.path == out / f"{file_id}.h264"
    manifest = manifest_of(out, file_id)
    assert manifest["status"] == "recovered" and manifest["sha256"] == hashlib.sha256(CLIP).hexdigest()
    assert manifest["started_utc"] == said["started_utc"] and manifest["peer"] == PEER
    # What the killed remux left is an unfinished copy, not received bytes: it goes; the stream stays.
    assert sorted(p.name for p in out.iterdir()) == [f"{file_id}.h264", f"{file_id}.json"]
    assert recover_leftovers(out, events.append) == []


def test_recover_finalises_a_frame_folder(tmp_path: Path) -> None:
    out = tmp_path / "recv"
    starts = [i for i in range(len(MJPEG)) if MJPEG.startswith(b"\xff\xd8\xff", i)]
    three = MJPEG[: starts[3]]
    sent = tmp_path / "sent.mjpeg"
    sent.write_bytes(MJPEG[: starts[3] + 100])  # three frames and the start of a fourth
    killed_python("import socket, time\n"
                  "from orchestrator.settings import Backend, ReceiveSettings\n"
                  "from orchestrator.stream.receiver import make_receiver\n"
                  "out = Path(sys.argv[1])\n"
                  "settings = ReceiveSettings(port=0, out_dir=out, backend=Backend.BUILTIN, bind='127.0.0.1',"
                  " split_jpeg=True)\n"
                  "receiver = make_receiver(settings, lambda item: None, lambda event: None, suffix='.mjpeg')\n"
                  "receiver.start()\n"
                  "sock = socket.create_connection(('127.0.0.1', receiver.port))\n"
                  "sock.sendall(Path(sys.argv[2]).read_bytes())\n"
                  "deadline = time.monotonic() + 20\n"
                  "while len(list(out.glob('*.tmp/frame_*.jpg'))) < 3 and time.monotonic() < deadline:\n"
                  "    time.sleep(0.02)\n",
                  str(out), str(sent))
    ((file_id, said),) = placeholders(out).items()
    assert said["file"] == f"{file_id}.tmp" and (out / f"{file_id}.tmp").is_dir()
    (finished,) = recover_leftovers(out, lambda event: None)
    folder = out / file_id
    assert finished.path == folder and sorted(p.name for p in folder.iterdir()) == [
        "frame_000001.jpg", "frame_000002.jpg", "frame_000003.jpg"]
    assert b"".join(p.read_bytes() for p in sorted(folder.iterdir())) == three
    manifest = manifest_of(out, file_id)
    assert manifest["status"] == "recovered" and manifest["frames"] == 3 and manifest["partial_frames"] == 0
    assert manifest["container"] == "frames"

    # Killed again while a frames folder of the same id was there: the leftover is kept beside it, as
    # `<id>.recovered`, and is still a folder of frames.
    twin = out / f"{file_id}.tmp"
    twin.mkdir()
    (twin / "frame_000001.jpg").write_bytes(three[: starts[1]])
    (out / f"{file_id}.json").write_text(json.dumps(said))  # its placeholder, as a killed run leaves it
    (again,) = recover_leftovers(out, lambda event: None)
    assert again.path == out / f"{file_id}.recovered" and again.path.is_dir()
    assert json.loads((out / f"{file_id}.json").read_text())["container"] == "frames"
    assert manifest["sha256"] == hashlib.sha256(three).hexdigest() and manifest["started_utc"] == said["started_utc"]
    assert [entry["file"] for entry in manifest["frame_list"]] == [  # type: ignore[union-attr]
        "frame_000001.jpg", "frame_000002.jpg", "frame_000003.jpg"]


@pytest.mark.parametrize("suffix", [".h264", ".mjpeg", ".jpg"])
def test_a_placeholder_whose_data_is_gone_is_finished_as_failed(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / "recv"
    out.mkdir()
    data = tmp_path / "clip.h264"
    data.write_bytes(CLIP)
    killed_python(f"from orchestrator.stream.writer import FileWriter\n"
                  f"FileWriter(Path(sys.argv[1]), {suffix!r}, {PEER!r}).write(Path(sys.argv[2]).read_bytes())",
                  str(out), str(data))
    (leftover,) = out.glob(f"*{suffix}.tmp")
    leftover.unlink()  # the user cleaned the folder by hand
    file_id = leftover.name.split(".")[0]
    (finished,) = recover_leftovers(out, lambda event: None)
    assert finished.status is FileStatus.FAILED
    manifest = manifest_of(out, file_id)
    assert manifest["status"] == "failed" and "is gone" in str(manifest["reason"]) and manifest["peer"] == PEER
    assert manifest["container"] == suffix[1:]  # what the placeholder said was received


def test_recover_never_touches_a_file_whose_manifest_is_still_being_written(tmp_path: Path) -> None:
    out = tmp_path / "recv"
    out.mkdir()
    writer = FileWriter(out, ".h264", PEER)
    writer.write(CLIP)
    writer.end(Ending.DONE)
    item = writer.finalize()  # renamed; its manifest waits for a remux in a live run
    assert item.path.name == f"{item.id}.h264"
    assert recover_leftovers(out, lambda event: None) == []
    assert read_placeholder(out / f"{item.id}.json") is not None
    events: list[Event] = []
    finished = finish_received_file(item, interrupted=False, failure=None, discard_partial=False, context={},
                                    on_event=events.append)
    assert isinstance(events[-1], FileFinished) and finished.status is FileStatus.COMPLETE
    assert manifest_of(out, item.id)["status"] == "complete"
    assert recover_leftovers(out, lambda event: None) == []


# A padded I420 layout, as raspividyuv writes it: rows of 128 bytes for a 100-pixel width, 32 rows for 30.
RAW = RawLayout("yuv420p", 100, 30, 128, 32, 25.0, True)


def raw_frames(count: int) -> bytes:
    return b"".join(bytes([index % 251]) * RAW.frame_bytes for index in range(count))


def killed_raw_recording(out: Path, data: bytes, raw: dict[str, object] | None, suffix: str = ".yuv") -> str:
    """A raw recording's writer killed with SIGKILL after `data` reached the disk; the file's id."""
    sent = out.parent / "sent.bin"
    sent.write_bytes(data)
    killed_python(f"import json\nfrom orchestrator.stream.writer import FileWriter\n"
                  f"writer = FileWriter(Path(sys.argv[1]), {suffix!r}, {PEER!r}, raw=json.loads(sys.argv[3]))\n"
                  f"writer.write(Path(sys.argv[2]).read_bytes())",
                  str(out), str(sent), json.dumps(raw))
    ((file_id, said),) = placeholders(out).items()
    assert said.get("raw") == raw
    return file_id


def test_recover_finishes_a_killed_raw_recording_with_its_y4m(tmp_path: Path) -> None:
    out = tmp_path / "recv"
    out.mkdir()
    data = raw_frames(3) + b"\x07" * 1000  # three frames and the start of a fourth
    file_id = killed_raw_recording(out, data, {**RAW.describe(), "y4m": True})
    (finished,) = recover_leftovers(out, lambda event: None)
    assert finished.status is FileStatus.RECOVERED and finished.path == out / f"{file_id}.yuv"
    # The camera's bytes stay exactly as they came; the .y4m has the whole frames, rows unpadded.
    assert (out / f"{file_id}.yuv").read_bytes() == data
    y4m = (out / f"{file_id}.y4m").read_bytes()
    header, _, body = y4m.partition(b"\n")
    assert header == b"YUV4MPEG2 W100 H30 F25:1 Ip A1:1 C420jpeg XCOLORRANGE=FULL"
    assert body == b"".join(b"FRAME\n" + unpad(data[i * RAW.frame_bytes:(i + 1) * RAW.frame_bytes], RAW)
                            for i in range(3))
    manifest = manifest_of(out, file_id)
    assert manifest["status"] == "recovered" and manifest["container"] == "yuv"
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() and manifest["bytes"] == len(data)
    assert manifest["raw"] == {**RAW.describe(), "frames": 3, "trailing_bytes": 1000, "y4m": f"{file_id}.y4m"}
    assert manifest["frames"] == 3  # as the run's own manifest counts them
    assert not list(out.glob("*.tmp")) and not list(out.glob("*.partial"))


def test_a_run_starting_in_the_folder_recovers_raw_video_without_the_y4m(tmp_path: Path) -> None:
    out = tmp_path / "recv"
    out.mkdir()
    data = raw_frames(2)
    file_id = killed_raw_recording(out, data, {**RAW.describe(), "y4m": True})
    (finished,) = recover_leftovers(out, lambda event: None, twins=False)
    assert finished.path.read_bytes() == data and not (out / f"{file_id}.y4m").exists()
    manifest = manifest_of(out, file_id)
    assert manifest["raw"] == {**RAW.describe(), "frames": 2, "trailing_bytes": 0, "y4m": None}
    assert "no .y4m made while a run was starting" in str(manifest["reason"])


@pytest.mark.parametrize("twins", [True, False])
def test_a_raw_recording_that_wanted_no_y4m_gets_none(tmp_path: Path, twins: bool) -> None:
    out = tmp_path / "recv"
    out.mkdir()
    file_id = killed_raw_recording(out, raw_frames(2), {**RAW.describe(), "y4m": False})
    recover_leftovers(out, lambda event: None, twins=twins)
    assert not (out / f"{file_id}.y4m").exists()
    manifest = manifest_of(out, file_id)
    assert manifest["raw"] == {**RAW.describe(), "frames": 2, "trailing_bytes": 0, "y4m": None}
    assert ".y4m" not in str(manifest["reason"])  # none was wanted: nothing to explain


@pytest.mark.parametrize("bad", [
    {"width": 1e999}, {"fps": 1e999}, {"fps": 0.0001}, {"fps": None}, {"width": -100}, {"stride": 64},
    {"rows": 16}, {"pixel_format": "rgb24"}, {"height": "thirty"}, {"stride": None},
])
def test_a_placeholder_with_a_layout_no_camera_writes_is_recovered_without_a_y4m(tmp_path: Path,
                                                                                 bad: dict[str, object]) -> None:
    out = tmp_path / "recv"
    out.mkdir()
    data = raw_frames(2)
    raw = {**RAW.describe(), "y4m": True, **bad}
    file_id = killed_raw_recording(out, data, json.loads(json.dumps(raw).replace("Infinity", "1e999")))
    events: list[Event] = []
    (finished,) = recover_leftovers(out, events.append)
    assert finished.status is FileStatus.RECOVERED and (out / f"{file_id}.yuv").read_bytes() == data
    assert not (out / f"{file_id}.y4m").exists() and not list(out.glob("*.partial"))
    manifest = manifest_of(out, file_id)
    assert manifest["container"] == "yuv" and "raw" not in manifest
    assert "does not say how frames lie" in str(manifest["reason"])


def test_a_raw_leftover_without_its_layout_is_recovered_not_called_gone(tmp_path: Path) -> None:
    # Before raw files were known to recover, the placeholder's data was looked for under its final name
    # only, and the .yuv.tmp sitting beside it was reported as gone.
    out = tmp_path / "recv"
    out.mkdir()
    data = raw_frames(2)
    file_id = killed_raw_recording(out, data, None)
    (finished,) = recover_leftovers(out, lambda event: None)
    assert finished.status is FileStatus.RECOVERED and (out / f"{file_id}.yuv").read_bytes() == data
    manifest = manifest_of(out, file_id)
    assert manifest["status"] == "recovered" and manifest["container"] == "yuv" and "raw" not in manifest
    assert "does not say how frames lie" in str(manifest["reason"])


@pytest.mark.parametrize("suffix", [".rgb", ".bgr", ".rgba", ".bgra", ".png", ".bmp", ".gif", ".jpg"])
def test_a_killed_snap_picture_is_recovered(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / "recv"
    out.mkdir()
    data = bytes(range(256)) * 10
    file_id = killed_raw_recording(out, data, None, suffix)
    (finished,) = recover_leftovers(out, lambda event: None)
    assert finished.status is FileStatus.RECOVERED and (out / f"{file_id}{suffix}").read_bytes() == data
    manifest = manifest_of(out, file_id)
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() and manifest["container"] == suffix[1:]


@pytest.mark.parametrize(("name", "container"), [
    ("id.h264", "h264"), ("id.h264.tmp", "h264"), ("id.mjpeg", "mjpeg"), ("id.yuv.tmp", "yuv"), ("id.mp4", "mp4"),
    ("id.mkv", "mkv"), ("id.jpg", "jpg"), ("garden_0001.png", "png"), ("id.rgba.tmp", "rgba"), ("id", "frames"),
    ("id.tmp", "frames"),
])
def test_a_manifest_says_what_its_file_is(name: str, container: str) -> None:
    assert stream_container(Path("/recv") / name) == container
