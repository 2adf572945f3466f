"""Raw pictures and raw video through the real CLI (and the API) against a real sshd playing the Pi, the
camera simulator writing each tool's real byte layout, and real netcat: the files are the camera's bytes."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.events import RawLayout
from orchestrator.stream.raw import unpad
from tests.e2e_helpers import (
    FakePi,
    kill_once_bytes_arrive,
    manifests,
    piorch_argv,
    piorch_env,
    run_piorch,
    start_fake_pi,
)
from tests.sshd_server import SshServerInfo

pytestmark = pytest.mark.e2e

np = pytest.importorskip("numpy")
av = pytest.importorskip("av")


def _fake_pi(tmp_path: Path, tools: tuple[str, ...], extra_env: dict[str, str] | None = None) -> FakePi:
    from tests.conftest import _require_sshd

    _require_sshd()
    return start_fake_pi(tmp_path, tools, extra_env)


@pytest.fixture
def pi_factory(tmp_path: Path) -> Iterator[list[FakePi]]:
    started: list[FakePi] = []
    yield started
    for pi in started:
        pi.server.stop()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def give_link_speeds(info: SshServerInfo, speeds: dict[str, str]) -> None:
    """From the next session on, the fake Pi's /sys/class/net holds only these interfaces and speeds: each SSH
    session runs in a mount namespace of its own with a folder bound over /sys/class/net (nothing outside the
    session sees it). `ip route get` still asks the kernel, so the route is the real one (loopback here)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare -m to give the fake Pi a link speed")
    root = info.bin_dir.parent
    wrapper, inner = root / "session-wrapper.sh", root / "session-before-link.sh"
    net = root / "fake-sys-class-net"
    for name, speed in speeds.items():
        (net / name).mkdir(parents=True)
        (net / name / "speed").write_text(speed + "\n")
    os.replace(wrapper, inner)
    mount = shutil.which("mount")
    setup = f'{mount} --bind "$1" /sys/class/net && exec "$2"'
    partial = root / ".session-wrapper.partial"
    partial.write_text("#!/bin/sh\n# tests/test_raw_e2e.py: this session sees a fake /sys/class/net.\n"
                       f"exec unshare -m /bin/sh -c {shlex.quote(setup)} sh {shlex.quote(str(net))} "
                       f"{shlex.quote(str(inner))}\n")
    partial.chmod(0o755)
    os.replace(partial, wrapper)


def _only(out: Path, pattern: str) -> Path:
    (found,) = sorted(out.glob(pattern))
    return found


# ------------------------------------------------------------------------------------------ snap


SNAP_CASES = [
    # (tools on the Pi, --format, size, argv words, camera layout (format, stride, rows))
    (("rpicam-still",), "yuv", (640, 480), ["--encoding", "yuv420"], ("yuv420p", 640, 480)),
    (("rpicam-still",), "rgb", (640, 480), ["--encoding", "rgb"], ("rgb24", 1920, 480)),
    (("libcamera-still",), "yuv", (320, 240), ["--encoding", "yuv420"], ("yuv420p", 320, 240)),
    # raspiyuv writes the MMAL buffer whole: 32-pixel rows, 16-row pictures.
    (("raspistill", "raspiyuv"), "yuv", (1000, 750), [], ("yuv420p", 1024, 752)),
    (("raspistill", "raspiyuv"), "rgb", (328, 250), ["-rgb"], ("rgb24", 352 * 3, 256)),
    (("raspistill", "raspiyuv"), "bgr", (640, 480), ["-bgr"], ("bgr24", 1920, 480)),
]


@pytest.mark.parametrize(("tools", "fmt", "size", "words", "camera"), SNAP_CASES)
def test_a_raw_snap_is_exactly_the_bytes_the_camera_wrote(
    tmp_path: Path, pi_factory: list[FakePi], tools: tuple[str, ...], fmt: str, size: tuple[int, int],
    words: list[str], camera: tuple[str, int, int],
) -> None:
    pi = _fake_pi(tmp_path, tools)
    pi_factory.append(pi)
    out = tmp_path / "recv"
    width, height = size
    result = run_piorch(piorch_env(tmp_path, pi.info.ssh_config), "snap", "--pi", pi.info.alias, "--out", str(out),
                        "--format", fmt, "--width", str(width), "--height", str(height), "--port", "0")
    assert result.returncode == 0, result.stderr
    (run,) = pi.runs()
    assert run["exit_code"] == 0 and run["argv"][0] == ("raspiyuv" if "raspiyuv" in tools else tools[0])
    assert all(word in run["argv"] for word in words)
    picture = _only(out, f"*.{fmt}")
    data = picture.read_bytes()
    assert sha256(data) == run["sha256"] and len(data) == run["bytes"]
    (manifest,) = manifests(out)
    layout = RawLayout(camera[0], width, height, camera[1], camera[2])
    assert manifest["status"] == "complete" and manifest["sha256"] == run["sha256"]
    assert manifest["raw"] == {**layout.describe(), **({"color_range": "full"} if "raspiyuv" not in tools else {})}
    assert len(data) == layout.frame_bytes
    assert manifest["remote_argv"] == run["argv"] and manifest["tool"] == run["argv"][0]


@pytest.mark.parametrize(("tools", "fmt", "order"), [(("rpicam-still",), "bgr", "bgr24"),
                                                     (("rpicam-still",), "rgba", "rgba"),
                                                     (("raspistill", "raspiyuv"), "bgra", "bgra")])
def test_orders_the_tool_cannot_write_are_converted_here(
    tmp_path: Path, pi_factory: list[FakePi], tools: tuple[str, ...], fmt: str, order: str,
) -> None:
    pi = _fake_pi(tmp_path, tools)
    pi_factory.append(pi)
    out = tmp_path / "recv"
    result = run_piorch(piorch_env(tmp_path, pi.info.ssh_config), "snap", "--pi", pi.info.alias, "--out", str(out),
                        "--format", fmt, "--width", "640", "--height", "480", "--port", "0", "--name", "shot")
    assert result.returncode == 0, result.stderr
    (run,) = pi.runs()
    assert run["argv"][-1] == "-rgb" or run["argv"][run["argv"].index("--encoding") + 1] == "rgb"
    data = (out / f"shot.{fmt}").read_bytes()
    (manifest,) = manifests(out)
    assert manifest["file"] == f"shot.{fmt}" and manifest["sha256"] == sha256(data) and manifest["bytes"] == len(data)
    assert manifest["raw"]["pixel_format"] == order and manifest["raw"]["stride"] == 640 * len(order.rstrip("24"))
    assert manifest["raw"]["camera"]["sha256"] == run["sha256"] and manifest["raw"]["camera"]["bytes"] == run["bytes"]
    # Back to the camera's RGB, byte for byte: nothing but the order (and an opaque alpha) changed.
    pixels = np.frombuffer(data, np.uint8).reshape(480, 640, -1)
    rgb = pixels[:, :, :3] if order.startswith("rgb") else pixels[:, :, 2::-1]
    assert len(order) == 5 or (pixels[:, :, 3] == 255).all()
    assert sha256(np.ascontiguousarray(rgb).tobytes()) == run["sha256"]


def test_resize_scales_the_cameras_picture_with_swscale(tmp_path: Path, pi_factory: list[FakePi]) -> None:
    pi = _fake_pi(tmp_path, ("rpicam-still",))
    pi_factory.append(pi)
    out = tmp_path / "recv"
    result = run_piorch(piorch_env(tmp_path, pi.info.ssh_config), "snap", "--pi", pi.info.alias, "--out", str(out),
                        "--format", "yuv", "--width", "640", "--height", "480", "--resize", "320x240", "--port", "0")
    assert result.returncode == 0, result.stderr
    data = _only(out, "*.yuv").read_bytes()
    (manifest,) = manifests(out)
    assert len(data) == 320 * 240 * 3 // 2 and manifest["raw"]["width"] == 320 and manifest["raw"]["stride"] == 320
    assert manifest["raw"]["camera"]["sha256"] == pi.runs()[0]["sha256"]


def test_a_raw_timelapse_through_the_laptops_nc(tmp_path: Path, pi_factory: list[FakePi]) -> None:
    from tests.test_snap_e2e import _free_port

    pi = _fake_pi(tmp_path, ("raspistill", "raspiyuv"))
    pi_factory.append(pi)
    out = tmp_path / "recv"
    result = run_piorch(piorch_env(tmp_path, pi.info.ssh_config), "snap", "--pi", pi.info.alias, "--out", str(out),
                        "--format", "yuv", "--width", "320", "--height", "240", "--count", "3", "--interval", "0",
                        "--name", "f{counter:02d}", "--backend", "nc", "--port", str(_free_port()))
    assert result.returncode == 0, result.stderr
    runs = pi.runs()
    assert [sha256((out / f"f{i:02d}.yuv").read_bytes()) for i in (1, 2, 3)] == [run["sha256"] for run in runs]
    assert all(m["raw"]["frame_bytes"] == 320 * 240 * 3 // 2 for m in manifests(out))


@pytest.mark.parametrize(("args", "words"), [
    (["--format", "rgb"], "--format rgb needs --width and --height"),
    (["--format", "jpg", "--resize", "10x10"], "--resize scales raw pictures, not jpg"),
    (["--format", "yuv", "--width", "641", "--height", "480"], "even width and height"),
])
def test_bad_raw_snaps_are_one_line_before_the_pi_is_asked(tmp_path: Path, pi_factory: list[FakePi],
                                                           args: list[str], words: str) -> None:
    pi = _fake_pi(tmp_path, ("rpicam-still",))
    pi_factory.append(pi)
    result = run_piorch(piorch_env(tmp_path, pi.info.ssh_config), "snap", "--pi", pi.info.alias, "--out",
                        str(tmp_path / "recv"), *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
    assert pi.all_runs() == []


# ------------------------------------------------------------------------------------------ record


def _record(tmp_path: Path, pi: FakePi, *args: str) -> tuple[object, Path]:
    out = tmp_path / "recv"
    result = run_piorch(piorch_env(tmp_path, pi.info.ssh_config), "record", "--pi", pi.info.alias, "--out", str(out),
                        "--codec", "yuv420", "--port", "0", "--laptop-ip", "127.0.0.1", *args)
    return result, out


def _check_raw_recording(out: Path, run: dict[str, object], layout: RawLayout, y4m: bool) -> None:
    raw = _only(out, "*.yuv")
    data = raw.read_bytes()
    assert sha256(data) == run["sha256"] and len(data) == run["bytes"]
    (manifest,) = manifests(out)
    frames = len(data) // layout.frame_bytes
    assert manifest["status"] == "complete" and manifest["file"] == raw.name and manifest["frames"] == frames
    assert manifest["container"] == "yuv" and manifest["tool"] == run["argv"][0]
    assert manifest["raw"]["stride"] == layout.stride and manifest["raw"]["rows"] == layout.rows
    assert manifest["raw"]["trailing_bytes"] == 0 and manifest["raw"]["fps"] == layout.fps
    session = json.loads(_only(out, "session-*.json").read_text())
    assert session["files"][0]["frames"] == frames
    if not y4m:
        assert manifest["raw"]["y4m"] is None and not list(out.glob("*.y4m"))
        return
    assert manifest["raw"]["y4m"] == raw.with_suffix(".y4m").name
    with av.open(str(raw.with_suffix(".y4m"))) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (layout.width, layout.height)
        assert stream.average_rate == layout.fps
        decoded = [frame.to_ndarray(format="yuv420p").tobytes() for frame in container.decode(stream)]
    assert len(decoded) == frames > 0
    for index, frame in enumerate(decoded):
        assert frame == unpad(data[index * layout.frame_bytes:(index + 1) * layout.frame_bytes], layout)


@pytest.mark.parametrize(("tools", "size", "stride", "rows", "container"), [
    (("rpicam-vid",), (640, 480), 640, 480, "mp4"),
    (("libcamera-vid",), (1280, 720), 1280, 720, "h264"),
    (("raspivid", "raspividyuv"), (328, 250), 352, 256, "mkv"),
])
def test_raw_video_is_byte_exact_with_a_y4m_twin(tmp_path: Path, pi_factory: list[FakePi], tools: tuple[str, ...],
                                                 size: tuple[int, int], stride: int, rows: int,
                                                 container: str) -> None:
    pi = _fake_pi(tmp_path, tools)
    pi_factory.append(pi)
    result, out = _record(tmp_path, pi, "--seconds", "2", "--fps", "10", "--width", str(size[0]), "--height",
                          str(size[1]), "--container", container)
    assert result.returncode == 0, result.stderr
    (run,) = pi.runs()
    assert run["argv"][0] == ("raspividyuv" if "raspivid" in tools else tools[0])
    _check_raw_recording(out, run, RawLayout("yuv420p", size[0], size[1], stride, rows, 10), container != "h264")


def test_a_width_whose_stride_piorch_cannot_know_is_refused(tmp_path: Path, pi_factory: list[FakePi]) -> None:
    pi = _fake_pi(tmp_path, ("rpicam-vid",))  # no device tree: the board, hence the ISP, is unknown
    pi_factory.append(pi)
    result, out = _record(tmp_path, pi, "--seconds", "1", "--width", "800", "--height", "600")
    assert result.returncode == 2 and "multiple of 128" in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("piorch:")]  # after the probe's line
    assert error == result.stderr.strip().splitlines()[-1]
    assert pi.runs() == [] and not list(out.glob("*.yuv"))


def test_ctrl_c_keeps_every_raw_byte_and_a_y4m_of_the_whole_frames(tmp_path: Path,
                                                                    pi_factory: list[FakePi]) -> None:
    pi = _fake_pi(tmp_path, ("raspivid", "raspividyuv"))
    pi_factory.append(pi)
    out = tmp_path / "recv"
    proc = subprocess.Popen(piorch_argv("record", "--pi", pi.info.alias, "--out", str(out), "--codec", "yuv420",
                                        "--port", "0", "--width", "640", "--height", "480", "--fps", "15"),
                            env=piorch_env(tmp_path, pi.info.ssh_config), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while sum(p.stat().st_size for p in out.glob("*.yuv.tmp")) < 3 * 460_800 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    raw = _only(out, "*.yuv")
    data = raw.read_bytes()
    (manifest,) = manifests(out)
    assert manifest["status"] == "interrupted" and manifest["sha256"] == sha256(data)
    frames, trailing = divmod(len(data), 460_800)
    assert frames >= 3 and manifest["raw"]["frames"] == manifest["frames"] == frames
    assert manifest["raw"]["trailing_bytes"] == trailing
    (run,) = pi.runs()
    assert int(run["bytes"]) >= len(data)  # what arrived is a prefix of what the camera wrote
    with av.open(str(raw.with_suffix(".y4m"))) as container:
        assert sum(1 for _ in container.decode(video=0)) == frames
    assert pi.camera_free() and not pi.cameras_running()


def test_sigkill_leaves_raw_video_that_recover_finishes_with_its_y4m(tmp_path: Path,
                                                                     pi_factory: list[FakePi]) -> None:
    pi = _fake_pi(tmp_path, ("raspivid", "raspividyuv"))
    pi_factory.append(pi)
    out = tmp_path / "recv"
    env = piorch_env(tmp_path, pi.info.ssh_config)
    proc = subprocess.Popen(piorch_argv("record", "--pi", pi.info.alias, "--out", str(out), "--codec", "yuv420",
                                        "--port", "0", "--width", "640", "--height", "480", "--fps", "15"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_once_bytes_arrive(proc, out, 3 * 460_800)
    pi.wait_until_freed(10, "piorch was killed")
    (leftover,) = out.glob("*.yuv.tmp")
    kept = leftover.read_bytes()
    result = run_piorch(env, "recover", str(out))
    assert result.returncode == 0, result.stderr
    raw = _only(out, "*.yuv")
    assert raw.read_bytes() == kept and not list(out.glob("*.tmp"))  # never changed
    (manifest,) = manifests(out)
    layout = RawLayout("yuv420p", 640, 480, 640, 480, 15)
    frames, trailing = divmod(len(kept), layout.frame_bytes)
    assert manifest["status"] == "recovered" and manifest["container"] == "yuv" and frames >= 3
    assert manifest["raw"]["frames"] == frames and manifest["raw"]["trailing_bytes"] == trailing
    assert manifest["raw"]["stride"] == 640 and manifest["raw"]["y4m"] == raw.with_suffix(".y4m").name
    with av.open(str(raw.with_suffix(".y4m"))) as container:
        decoded = [frame.to_ndarray(format="yuv420p").tobytes() for frame in container.decode(video=0)]
    assert len(decoded) == frames
    assert decoded[-1] == unpad(kept[(frames - 1) * layout.frame_bytes:frames * layout.frame_bytes], layout)


# ------------------------------------------------------------------------------------------ the link


def test_raw_video_faster_than_the_link_is_refused_with_the_numbers(tmp_path: Path,
                                                                    pi_factory: list[FakePi]) -> None:
    pi = _fake_pi(tmp_path, ("rpicam-vid",))
    pi_factory.append(pi)
    give_link_speeds(pi.info, {"lo": "100"})
    result, out = _record(tmp_path, pi, "--seconds", "1", "--width", "640", "--height", "480", "--fps", "30")
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("piorch:")]
    assert "110.6 Mbit/s, more than the Pi's lo link carries (100 Mbit/s)" in line and "--fps 27 or less" in line
    assert pi.runs() == [] and pi.camera_free() and not list(out.glob("*.yuv"))


def test_raw_video_near_the_link_speed_is_warned_about_and_recorded(tmp_path: Path,
                                                                     pi_factory: list[FakePi]) -> None:
    pi = _fake_pi(tmp_path, ("rpicam-vid",))
    pi_factory.append(pi)
    give_link_speeds(pi.info, {"lo": "100"})
    result, out = _record(tmp_path, pi, "--seconds", "1", "--width", "640", "--height", "480", "--fps", "25")
    assert result.returncode == 0, result.stderr
    assert "92.2 Mbit/s, 92% of the Pi's lo link (100 Mbit/s)" in result.stderr
    (run,) = pi.runs()
    assert sha256(_only(out, "*.yuv").read_bytes()) == run["sha256"]
    forced, _ = _record(tmp_path, pi, "--seconds", "1", "--width", "640", "--height", "480", "--fps", "30",
                        "--force")
    assert forced.returncode == 0 and "(--force: trying anyway)" in forced.stderr


@pytest.mark.parametrize(("model_name", "stride"), [("PI4_RPICAM", 832), ("PI5_RPICAM", 896)])
def test_each_pis_isp_stride_is_known_from_its_board(tmp_path: Path, model_name: str, stride: int) -> None:
    from tests import pi_models

    pi = pi_models.start_pi(tmp_path, getattr(pi_models, model_name))
    try:
        result, out = _record(tmp_path, pi, "--seconds", "1", "--fps", "10", "--width", "800", "--height", "600")
        assert result.returncode == 0, result.stderr
        (run,) = pi.runs()
        _check_raw_recording(out, run, RawLayout("yuv420p", 800, 600, stride, 600, 10), True)
    finally:
        pi.server.stop()


# ------------------------------------------------------------------------------------------ the Python API


def test_the_api_hands_out_the_cameras_own_frames_and_pictures(tmp_path: Path, pi_factory: list[FakePi],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator import Camera

    monkeypatch.setenv("PIORCH_CONFIG", str(tmp_path / "no-user-config.toml"))
    pi = _fake_pi(tmp_path, ("rpicam-vid", "rpicam-still"))
    pi_factory.append(pi)
    config = tmp_path / "piorch.toml"
    config.write_text(f'ssh_config = "{pi.info.ssh_config}"\nlaptop_ip = "127.0.0.1"\nport = 0\n')
    kept = tmp_path / "kept"
    with Camera(pi.info.alias, config=config) as cam:
        frames = list(cam.frames(format="yuv", codec="yuv420", width=640, height=480, fps=10, seconds=2, out=kept))
        bgr = next(iter(cam.frames(format="bgr", codec="yuv420", width=640, height=480, fps=10, seconds=1)))
        yuv = cam.capture(format="yuv", width=640, height=480)
        rgba = cam.capture(format="rgba", width=64, height=48)
    video, _, still, small = pi.runs()
    data = _only(kept, "*.yuv").read_bytes()
    assert sha256(data) == video["sha256"] and len(frames) == len(data) // 460_800 > 5
    for frame in frames:
        assert frame.array.shape == (720, 640)
        assert frame.array.tobytes() == data[frame.index * 460_800:(frame.index + 1) * 460_800]
    assert bgr.array.shape == (480, 640, 3)
    assert isinstance(yuv, np.ndarray) and yuv.shape == (720, 640) and sha256(yuv.tobytes()) == still["sha256"]
    assert isinstance(rgba, np.ndarray) and rgba.shape == (48, 64, 4) and (rgba[:, :, 3] == 255).all()
    assert sha256(np.ascontiguousarray(rgba[:, :, :3]).tobytes()) == small["sha256"]
    assert pi.camera_free() and not pi.cameras_running()
