"""The Python API (`from orchestrator import Camera`) as a user's program meets it: against the built-in
simulated Pi and against a real sshd playing the Pi. Every frame is compared with an independent decode of
the bytes the camera sent (kept with `out=`); the camera must be free whenever the loop is left."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

av = pytest.importorskip("av")
np = pytest.importorskip("numpy")

from orchestrator import Camera, Frame  # noqa: E402
from orchestrator.errors import PiorchError, UsageError  # noqa: E402
from tests.e2e_helpers import FakePi, start_fake_pi  # noqa: E402


@pytest.fixture(autouse=True)
def no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIORCH_CONFIG", str(tmp_path / "no-user-config.toml"))


def simulated_cameras(lock: Path) -> list[int]:
    """Pids of simulated cameras still running with this camera lock (the demo's scratch may be gone)."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("PIORCH_SIM_LOCK") == str(lock):
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


def independent_decode(out: Path) -> list[np.ndarray]:
    (raw,) = sorted(out.glob("*.h264"))
    with av.open(str(raw), format="h264") as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def test_frames_from_the_demo_equal_an_independent_decode(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    with Camera("demo") as cam:
        frames: list[Frame] = list(cam.frames(format="bgr", seconds=2, out=kept))
        assert cam.frames_dropped == 0
    reference = independent_decode(kept)
    assert len(frames) == len(reference) > 10
    assert [frame.index for frame in frames] == list(range(len(frames)))
    assert all(frame.array.dtype == np.uint8 and frame.array.shape == reference[0].shape for frame in frames)
    assert all(np.array_equal(frame.array, ref) for frame, ref in zip(frames, reference, strict=True))
    arrivals = [frame.arrival for frame in frames]
    assert arrivals == sorted(arrivals) and arrivals[0].tzinfo is not None


def test_leaving_the_loop_early_frees_the_camera(tmp_path: Path) -> None:
    with Camera("demo") as cam:
        lock = Path(cam._scratch.name) / "camera.lock"  # type: ignore[union-attr]
        for frame in cam.frames(seconds=30):
            if frame.index == 5:
                break
        from orchestrator.sim.camera import camera_is_free

        assert camera_is_free(lock)
        # The same camera right after: a second stream starts (a held camera would be "busy").
        assert len(list(cam.frames(seconds=1))) > 0


def test_an_exception_in_the_loop_stops_the_camera_and_propagates(tmp_path: Path) -> None:
    from orchestrator.sim.camera import camera_is_free

    with Camera("demo") as cam:
        lock = Path(cam._scratch.name) / "camera.lock"  # type: ignore[union-attr]
        with pytest.raises(ZeroDivisionError):
            for frame in cam.frames(seconds=30):
                if frame.index == 3:
                    _ = 1 / 0
        assert camera_is_free(lock)
        with pytest.raises(ZeroDivisionError):
            stream = cam.frames(seconds=30)
            next(stream)
            _ = 1 / 0
    # Leaving the `with` block stopped the stream the loop still held: no simulated camera of it is left.
    assert cam._running is None and not simulated_cameras(lock)


def test_a_slow_loop_loses_frames_counted_never_memory(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    with Camera("demo", queue_frames=2) as cam:
        taken = []
        for frame in cam.frames(seconds=2, out=kept):
            taken.append(frame.index)
            time.sleep(0.2)  # far slower than the camera's 25 frames/s
        dropped = cam.frames_dropped
    total = len(independent_decode(kept))
    assert dropped > 0
    assert len(taken) + dropped == total  # every frame the camera sent is taken or counted
    assert taken == sorted(taken) and taken[-1] == total - 1  # the newest frames win


@pytest.mark.parametrize("name,channels", [("rgb", 3), ("bgra", 4), ("rgba", 4)])
def test_array_formats(name: str, channels: int) -> None:
    with Camera("demo") as cam:
        frame = next(iter(cam.frames(format=name, seconds=1)))
    assert frame.array.ndim == 3 and frame.array.shape[2] == channels


def test_yuv_frames_have_picameras_i420_shape() -> None:
    with Camera("demo") as cam:
        frame = next(iter(cam.frames(format="yuv", seconds=1)))
    height, width = frame.array.shape
    assert height % 3 == 0 and (height * 2 // 3, width) == (480, 640)  # frames() asks 640x480 by default


def test_capture_arrays_and_encoded_files() -> None:
    with Camera("demo") as cam:
        bgr = cam.capture(format="bgr")
        rgb = cam.capture(format="rgb")
        small = cam.capture(format="bgr", resize=(32, 24))
        encoded = {name: cam.capture(format=name) for name in ("jpeg", "png", "bmp", "gif")}
    assert isinstance(bgr, np.ndarray) and bgr.ndim == 3 and bgr.shape[2] == 3
    assert np.array_equal(bgr, rgb[:, :, ::-1])  # type: ignore[index]
    assert small.shape == (24, 32, 3)  # type: ignore[union-attr]
    magic = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG", "bmp": b"BM", "gif": b"GIF8"}
    for name, data in encoded.items():
        assert isinstance(data, bytes) and data.startswith(magic[name])
        assert name != "gif" or data.endswith(b";")  # a whole GIF ends with its trailer
        with av.open(io.BytesIO(data)) as container:  # each one a picture a decoder opens
            assert next(container.decode(video=0)).width > 0


def test_bad_input_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with Camera("demo") as cam:
        with pytest.raises(UsageError, match="unknown format 'hsv'"):
            next(iter(cam.frames(format="hsv")))
        with pytest.raises(UsageError, match="unknown --codec 'vp9'"):
            next(iter(cam.frames(codec="vp9")))
        with pytest.raises(UsageError, match="unknown format 'tiff'"):
            cam.capture(format="tiff")
    with pytest.raises(UsageError, match="not open"):
        Camera("demo").capture()


# ------------------------------------------------------------------------------------------ a real sshd


@pytest.fixture
def fake_pi(tmp_path: Path) -> Iterator[FakePi]:
    from tests.conftest import _require_sshd

    _require_sshd()
    pi = start_fake_pi(tmp_path, ("rpicam-vid", "rpicam-still"))
    try:
        yield pi
    finally:
        pi.server.stop()


def _config(tmp_path: Path, pi: FakePi) -> Path:
    config = tmp_path / "piorch.toml"
    # port 0: any free port, so a parallel run holding 10401 cannot make this fail.
    config.write_text(f'ssh_config = "{pi.info.ssh_config}"\nlaptop_ip = "127.0.0.1"\nport = 0\n')
    return config


@pytest.mark.e2e
def test_frames_over_ssh_equal_the_bytes_the_camera_sent(tmp_path: Path, fake_pi: FakePi) -> None:
    kept = tmp_path / "kept"
    with Camera(fake_pi.info.alias, config=_config(tmp_path, fake_pi)) as cam:
        frames = list(cam.frames(format="bgr", seconds=2, out=kept))
        picture = cam.capture(format="png")
    reference = independent_decode(kept)
    assert len(frames) == len(reference) > 10
    assert all(np.array_equal(frame.array, ref) for frame, ref in zip(frames, reference, strict=True))
    assert isinstance(picture, bytes) and picture.startswith(b"\x89PNG")
    assert fake_pi.camera_free() and not fake_pi.cameras_running()
    (run, *_) = fake_pi.runs()
    assert run["argv"][0] == "rpicam-vid"


@pytest.mark.e2e
def test_an_early_break_over_ssh_stops_the_camera_on_the_pi(tmp_path: Path, fake_pi: FakePi) -> None:
    with Camera(fake_pi.info.alias, config=_config(tmp_path, fake_pi)) as cam:
        for frame in cam.frames(seconds=60):
            if frame.index == 2:
                break
        assert fake_pi.camera_free()


@pytest.mark.e2e
def test_an_unreachable_pi_is_the_clis_error(tmp_path: Path, fake_pi: FakePi) -> None:
    fake_pi.server.stop()
    with pytest.raises(PiorchError) as caught, Camera(fake_pi.info.alias, config=_config(tmp_path, fake_pi)):
        pass
    assert caught.value.fix  # the message comes with its fix, as on the command line


def test_raw_frames_from_the_demo_are_the_cameras_bytes(tmp_path: Path) -> None:
    from orchestrator.events import RawLayout
    from orchestrator.stream.raw import unpad

    kept = tmp_path / "kept"
    # A queue that holds the whole second: this test is about the bytes, not the slow-loop policy (a loaded
    # machine may hand several frames over at once).
    with Camera("demo", queue_frames=64) as cam:  # raspividyuv: rows padded to 32 pixels, pictures to 16 rows
        frames = list(cam.frames(format="yuv", codec="yuv420", width=328, height=250, fps=10, seconds=1, out=kept))
    (raw,) = kept.glob("*.yuv")
    (manifest,) = [p for p in kept.glob("*.json") if not p.name.startswith("session-")]
    info = json.loads(manifest.read_text())["raw"]
    layout = RawLayout("yuv420p", 328, 250, info["stride"], info["rows"])
    assert (layout.stride, layout.rows) == (352, 256)
    data = raw.read_bytes()
    assert len(frames) == len(data) // layout.frame_bytes == info["frames"] > 5
    for frame in frames:
        assert frame.array.shape == (375, 328)
        start = frame.index * layout.frame_bytes
        assert frame.array.tobytes() == unpad(data[start:start + layout.frame_bytes], layout)
