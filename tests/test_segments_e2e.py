"""`record --segment` and containers through the real CLI and a real sshd: gapless, playable files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import pytest

from tests.e2e_helpers import piorch_env, run_piorch, start_fake_pi

pytestmark = pytest.mark.e2e


def session(out: Path) -> dict[str, object]:
    (path,) = out.glob("session-*.json")
    return dict(json.loads(path.read_text()))


def probe(path: Path) -> tuple[int, float]:
    """Frames decoded and the container's duration in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        duration = float(container.duration / av.time_base) if container.duration else 0.0
    return frames, duration


@pytest.fixture
def pi(tmp_path: Path):  # type: ignore[no-untyped-def]
    from tests.conftest import _require_sshd

    _require_sshd()
    fake = start_fake_pi(tmp_path, ("rpicam-vid",))
    yield fake
    fake.server.stop()


def test_raw_segments_concatenate_to_exactly_what_the_camera_sent(tmp_path: Path, pi) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "recv"
    env = piorch_env(tmp_path, pi.info.ssh_config)
    result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "5", "--segment", "1s", "--fps", "25",
                        "--container", "h264", "--bitrate", "2000000", "--out", str(out), "--port", "0")
    assert result.returncode == 0, result.stderr
    (run,) = pi.runs()
    info = session(out)
    files = info["files"]
    assert isinstance(files, list) and len(files) >= 4
    assert [f["segment"] for f in files] == list(range(1, len(files) + 1))
    joined = b"".join((out / f["file"]).read_bytes() for f in files)
    # Zero bytes lost or doubled at any boundary: the segments in order ARE the camera's stream.
    assert hashlib.sha256(joined).hexdigest() == run["sha256"] and len(joined) == run["bytes"]
    # The camera was asked for an intra period that fits the 1 s segments at 25 fps.
    assert "--intra" in run["argv"] and run["argv"][run["argv"].index("--intra") + 1] == "25"
    for entry in files:
        data = (out / entry["file"]).read_bytes()
        # Each segment starts with SPS (after its start code) and decodes on its own.
        assert data.startswith(b"\x00\x00\x00\x01\x67") or data.startswith(b"\x00\x00\x01\x67")
        with av.open(str(out / entry["file"]), format="h264") as container:
            decoded = sum(1 for _ in container.decode(video=0))
        manifest = json.loads((out / f"{entry['id']}.json").read_text())
        assert decoded == manifest["frames"] == entry["frames"] > 0
        assert manifest["iframes"] >= 1 and manifest["status"] == "complete"
        assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["status"] == "complete"


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_segments_remuxed_with_the_true_frame_rate(tmp_path: Path, pi, container: str) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "recv"
    env = piorch_env(tmp_path, pi.info.ssh_config)
    result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "4", "--segment", "2s", "--fps", "30",
                        "--container", container, "--keep-raw", "--bitrate", "2000000", "--out", str(out),
                        "--port", "0")
    assert result.returncode == 0, result.stderr
    files = session(out)["files"]
    assert isinstance(files, list) and len(files) >= 2
    for entry in files:
        manifest = json.loads((out / f"{entry['id']}.json").read_text())
        playable = out / manifest["file"]
        assert playable.suffix == f".{container}" and manifest["container"] == container
        frames, duration = probe(playable)
        assert frames == manifest["frames"]
        # The true rate (30 fps here, where a raw stream would be guessed as 25): within one frame.
        assert abs(duration - frames / 30) <= 1 / 30 + 1e-6
        raw = out / manifest["raw_file"]
        assert hashlib.sha256(raw.read_bytes()).hexdigest() == manifest["sha256"]


def test_default_is_mp4_without_the_raw_file(tmp_path: Path, pi) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "recv"
    env = piorch_env(tmp_path, pi.info.ssh_config)
    result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "2", "--bitrate", "2000000",
                        "--out", str(out), "--port", "0")
    assert result.returncode == 0, result.stderr
    assert not list(out.glob("*.h264")) and len(list(out.glob("*.mp4"))) == 1
    (mp4,) = out.glob("*.mp4")
    manifest = json.loads(mp4.with_suffix(".json").read_text())
    assert manifest["raw_file"] is None and manifest["duration_s"] > 1.5


@pytest.mark.parametrize(("args", "words"), [(["--segment", "ten minutes"], "--segment"),
                                             (["--segment", "0.2s"], "under a second"),
                                             (["--container", "avi"], "--container"),
                                             (["--container", "h264", "--keep-raw"], "--keep-raw")])
def test_bad_segment_options(tmp_path: Path, args: list[str], words: str) -> None:
    env = piorch_env(tmp_path, tmp_path / "none")
    result = run_piorch(env, "record", "--pi", "pi@192.0.2.1", *args, "--out", str(tmp_path / "recv"))
    assert result.returncode == 2 and words in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "recv").exists()
