"""`piorch snap` through the real CLI against a real sshd playing the Pi, real netcat, the still simulator."""

from __future__ import annotations

import fcntl
import hashlib
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e_helpers import FakePi, manifests, piorch_argv, piorch_env, run_piorch, start_fake_pi

pytestmark = pytest.mark.e2e

MAGIC = {"jpg": (b"\xff\xd8\xff",), "png": (b"\x89PNG\r\n\x1a\n",), "bmp": (b"BM",), "gif": (b"GIF87a", b"GIF89a")}
CODEC = {"jpg": "mjpeg", "png": "png", "bmp": "bmp", "gif": "gif"}


def _fake_pi(tmp_path: Path, tools: tuple[str, ...], extra_env: dict[str, str] | None = None) -> FakePi:
    from tests.conftest import _require_sshd

    _require_sshd()
    return start_fake_pi(tmp_path, tools, extra_env)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decoded_codec(path: Path) -> tuple[str, int, int]:
    """Decode the picture for real with PyAV (a runtime dependency): its codec and size."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        return stream.codec_context.name, frame.width, frame.height


def _snap(env: dict[str, str], pi: FakePi, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_piorch(env, "snap", "--pi", pi.info.alias, "--out", str(out), *args)


CASES = [
    # (tools on the Pi, --camera-tool, --format, laptop backend)
    (("raspistill",), "auto", "jpg", "builtin"),
    (("raspistill",), "auto", "png", "nc"),
    (("raspistill",), "auto", "bmp", "builtin"),
    (("raspistill",), "auto", "gif", "builtin"),
    (("rpicam-still",), "auto", "jpg", "nc"),
    (("rpicam-still", "raspistill"), "auto", "png", "builtin"),
    (("libcamera-still", "raspistill"), "libcamera-still", "bmp", "builtin"),
]


@pytest.mark.parametrize(("tools", "tool", "fmt", "backend"), CASES)
def test_every_format_yields_a_file_of_that_format(
    tmp_path: Path, tools: tuple[str, ...], tool: str, fmt: str, backend: str
) -> None:
    pi = _fake_pi(tmp_path, tools)
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        port = "0" if backend == "builtin" else str(_free_port())
        result = _snap(env, pi, out, "--format", fmt, "--camera-tool", tool, "--backend", backend, "--port", port,
                       "--width", "1280", "--height", "960", "--vflip")
        assert result.returncode == 0, result.stderr
        (run,) = pi.runs()
        expected_tool = tools[0] if tool == "auto" else tool
        assert run["tool"] == expected_tool and run["exit_code"] == 0
        # The tool's own encoding option, in its own option language.
        encoding = ["-e", fmt] if expected_tool == "raspistill" else ["--encoding", fmt]
        assert " ".join(encoding) in " ".join(run["argv"])  # type: ignore[arg-type]
        (picture,) = out.glob(f"*.{fmt}")
        assert not list(out.glob("*.tmp")) and len(list(out.iterdir())) == 2  # the picture and its manifest
        assert picture.read_bytes().startswith(MAGIC[fmt])
        assert decoded_codec(picture) == (CODEC[fmt], 1280, 960)  # the size asked for, as a real camera gives
        assert sha256(picture) == run["sha256"] and picture.stat().st_size == run["bytes"]
        (manifest,) = manifests(out)
        assert manifest["status"] == "complete" and manifest["file"] == picture.name
        assert manifest["container"] == picture.suffix.lstrip(".")  # what it is, not the video default
        assert manifest["id"] == picture.stem and manifest["sha256"] == run["sha256"]
        assert manifest["tool"] == expected_tool and manifest["remote_argv"] == run["argv"]
        assert pi.camera_free() and not pi.cameras_running()
    finally:
        pi.server.stop()


def test_timelapse_names_files_by_the_template_in_order(tmp_path: Path) -> None:
    pi = _fake_pi(tmp_path, ("rpicam-still",))
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = _snap(env, pi, out, "--port", "0", "--count", "3", "--interval", "1.5",
                       "--name", "img{counter:03d}")
        assert result.returncode == 0, result.stderr
        runs = pi.runs()
        assert len(runs) == 3 and all(run["exit_code"] == 0 for run in runs)
        names = sorted(p.name for p in out.glob("*.jpg"))
        assert names == ["img001.jpg", "img002.jpg", "img003.jpg"]
        # Every capture has its own bytes: picture i is exactly what the camera wrote in run i.
        assert len({run["sha256"] for run in runs}) == 3
        assert [sha256(out / name) for name in names] == [run["sha256"] for run in runs]
        by_file = {m["file"]: m for m in manifests(out)}
        assert [by_file[name]["settings"]["image"] for name in names] == [1, 2, 3]  # type: ignore[index]
        assert all(by_file[name]["status"] == "complete" for name in names)
        # The same template again would overwrite: refused before anything starts.
        again = _snap(env, pi, out, "--port", "0", "--count", "3", "--name", "img{counter:03d}")
        assert again.returncode == 2 and "img001.jpg already exists" in again.stderr
        assert len(pi.runs()) == 3 and sorted(p.name for p in out.glob("*.jpg")) == names
    finally:
        pi.server.stop()


def _wait_for(condition: object, timeout: float) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s")


@pytest.mark.parametrize("moment", ["during a capture", "between captures"])
def test_ctrl_c_mid_timelapse_frees_the_camera(tmp_path: Path, moment: str) -> None:
    pi = _fake_pi(tmp_path, ("raspistill",))
    try:
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config)
        interval = "0" if moment == "during a capture" else "60"
        proc = subprocess.Popen(piorch_argv("snap", "--pi", pi.info.alias, "--out", str(out), "--port", "0",
                                            "--count", "5", "--interval", interval, "--name", "t{counter}"),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_for(lambda: (out / "t1.jpg").exists(), 30)
            if moment == "during a capture":
                _wait_for(lambda: len(pi.runs()) == 1 and pi.cameras_running(), 30)
                # Started (its marker is written first thing), then holding the camera well before its 1 s
                # settle time ends. One probe only: a probe can itself make a starting camera "busy".
                time.sleep(0.3)
                assert not pi.camera_free()  # the second capture really holds the camera
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, stderr
        assert pi.camera_free() and not pi.cameras_running()
        runs = pi.runs()
        assert runs[0]["exit_code"] == 0 and sha256(out / "t1.jpg") == runs[0]["sha256"]
        if moment == "during a capture":
            assert len(runs) == 2 and runs[1]["reason"] == "signal" and runs[1]["bytes"] == 0
        else:
            assert len(runs) == 1
        assert sorted(p.name for p in out.glob("*.jpg")) == ["t1.jpg"] and not list(out.glob("*.tmp"))
    finally:
        pi.server.stop()


def test_camera_busy_is_explained(tmp_path: Path) -> None:
    pi = _fake_pi(tmp_path, ("rpicam-still",))
    try:
        env = piorch_env(tmp_path, pi.info.ssh_config)
        with open(pi.lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            result = _snap(env, pi, tmp_path / "recv", "--port", "0")
        assert result.returncode == 1
        assert "camera busy" in result.stderr and "Traceback" not in result.stderr
        assert not list((tmp_path / "recv").glob("*.jpg"))
    finally:
        pi.server.stop()


def test_gif_where_the_pi_cannot_write_it(tmp_path: Path) -> None:
    pi = _fake_pi(tmp_path, ("rpicam-still",))
    try:
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = _snap(env, pi, tmp_path / "recv", "--port", "0", "--format", "gif")
        assert result.returncode == 2
        assert "rpicam-still on the Pi cannot write gif" in result.stderr.strip().splitlines()[-1]
        assert not pi.runs() and not (tmp_path / "recv").exists()
    finally:
        pi.server.stop()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--format", "tiff"], "--format"),
        (["--count", "0"], "--count"),
        (["--interval", "5"], "--interval without --count"),
        (["--count", "3", "--interval", "-1"], "--interval"),
        (["--name", "../x{counter}"], "--name"),
        (["--name", "a/b{counter}"], "--name"),
        (["--name", "{counter!r}"], "--name"),
        (["--name", "img", "--count", "3"], "no {counter}"),
        (["--width", "640"], "--width and --height"),
        (["--width", "5", "--height", "5"], "--width"),
        (["--camera-tool", "raspivid"], "--camera-tool"),
        (["--port", "99999"], "--port"),
        (["--laptop-ip", "not-an-ip"], "laptop-ip"),
    ],
)
def test_bad_input_one_line_error_and_nothing_created(tmp_path: Path, args: list[str], words: str) -> None:
    env = piorch_env(tmp_path, tmp_path / "no-ssh-config")
    result = run_piorch(env, "snap", "--pi", "pi@192.0.2.1", *args, "--out", str(tmp_path / "recv"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "recv").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
