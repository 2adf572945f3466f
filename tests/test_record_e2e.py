"""`piorch record` through the real CLI against a real sshd playing the Pi, real netcat, real files."""

from __future__ import annotations

import fcntl
import hashlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_helpers import FakePi, manifests, piorch_argv, piorch_env, run_piorch, start_fake_pi, wait_for_bytes
from tests.system_tools import require_tool, run_as_nameless_user

pytestmark = pytest.mark.e2e


@pytest.fixture
def fake_pi(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FakePi]:
    from tests.conftest import _require_sshd

    _require_sshd()
    tools = getattr(request, "param", ("raspivid",))
    pi = start_fake_pi(tmp_path, tools)
    try:
        yield pi
    finally:
        pi.server.stop()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CASES = [
    # (tools on the Pi, --camera-tool, laptop backend, netcat flavour on both ends)
    (("raspivid",), "auto", "builtin", "openbsd"),
    (("rpicam-vid",), "auto", "nc", "traditional"),
    (("libcamera-vid", "raspivid"), "libcamera-vid", "nc", "openbsd"),
    (("rpicam-vid", "raspivid"), "raspivid", "builtin", "traditional"),
]


@pytest.mark.parametrize(("tools", "tool", "backend", "flavour"), CASES)
def test_record_delivers_exactly_what_the_camera_wrote(
    tmp_path: Path, tools: tuple[str, ...], tool: str, backend: str, flavour: str
) -> None:
    from tests.conftest import _require_sshd

    _require_sshd()
    pi = start_fake_pi(tmp_path, tools)
    try:
        laptop_bin = tmp_path / "laptop-bin"
        laptop_bin.mkdir()
        if flavour == "traditional":
            pi.use_traditional_nc()
            (laptop_bin / "nc").symlink_to(require_tool("nc.traditional"))
        out = tmp_path / "recv"
        env = piorch_env(tmp_path, pi.info.ssh_config, laptop_bin)
        result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "2", "--out", str(out),
                            "--camera-tool", tool, "--backend", backend, "--port", "0" if backend == "builtin"
                            else str(_free_port()), "--bitrate", "4000000", "--width", "640", "--height", "360",
                            "--fps", "25", "--container", "h264")
        assert result.returncode == 0, result.stderr
        runs = pi.runs()
        assert len(runs) == 1
        run = runs[0]
        expected_tool = tools[0] if tool == "auto" else tool
        assert run["tool"] == expected_tool
        files = sorted(out.glob("*.h264"))
        assert len(files) == 1 and not list(out.glob("*.tmp"))
        assert sha256(files[0]) == run["sha256"]
        assert files[0].stat().st_size == run["bytes"] > 100_000
        (manifest,) = manifests(out)
        assert manifest["status"] == "complete"
        assert manifest["sha256"] == run["sha256"] and manifest["bytes"] == run["bytes"]
        assert manifest["tool"] == expected_tool
        assert manifest["remote_argv"] == run["argv"]
        assert manifest["remote_exit"]["camera"] == 0
        assert manifest["file"] == files[0].name and files[0].stem == manifest["id"]
        assert pi.camera_free() and not pi.cameras_running()
        assert "received" in result.stdout  # the summary table
    finally:
        pi.server.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_frees_camera_and_keeps_partial(tmp_path: Path, fake_pi: FakePi, sig: signal.Signals) -> None:
    out = tmp_path / "recv"
    env = piorch_env(tmp_path, fake_pi.info.ssh_config)
    proc = subprocess.Popen(piorch_argv("record", "--pi", fake_pi.info.alias, "--seconds", "0", "--out", str(out),
                                        "--port", "0", "--bitrate", "4000000", "--container", "h264"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_bytes(out, 200_000, timeout=20)
        assert not fake_pi.camera_free()  # the simulated camera is really held while recording
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    files = sorted(out.glob("*.h264"))
    assert len(files) == 1 and not list(out.glob("*.tmp"))
    (manifest,) = manifests(out)
    assert manifest["status"] == "interrupted"
    assert manifest["sha256"] == sha256(files[0]) and manifest["bytes"] == files[0].stat().st_size > 200_000
    (run,) = fake_pi.runs()
    assert run["reason"] in ("signal", "epipe")
    # Every byte that reached the laptop is kept: the file is a prefix of what the camera wrote.
    assert int(run["bytes"]) >= files[0].stat().st_size
    assert fake_pi.camera_free() and not fake_pi.cameras_running()
    # The camera really is free: a record right after works.
    again = run_piorch(env, "record", "--pi", fake_pi.info.alias, "--seconds", "1", "--out", str(out),
                       "--port", "0", "--bitrate", "2000000", "--container", "h264")
    assert again.returncode == 0, again.stderr
    assert sorted(m["status"] for m in manifests(out) if "session" not in m) == ["complete", "interrupted"]


def test_discard_partial_removes_interrupted_file(tmp_path: Path, fake_pi: FakePi) -> None:
    out = tmp_path / "recv"
    env = piorch_env(tmp_path, fake_pi.info.ssh_config)
    proc = subprocess.Popen(piorch_argv("record", "--pi", fake_pi.info.alias, "--out", str(out), "--port", "0",
                                        "--discard-partial"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_bytes(out, 100_000, timeout=20)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    # Neither the file nor its manifest; only the session manifest that says it was removed.
    assert [p.name.startswith("session-") for p in out.iterdir()] == [True]
    assert fake_pi.camera_free()


def test_unknown_host_key_refused_then_accepted_on_request(tmp_path: Path, fake_pi: FakePi) -> None:
    known = fake_pi.info.known_hosts
    known.write_text("")
    out = tmp_path / "recv"
    env = piorch_env(tmp_path, fake_pi.info.ssh_config)
    refused = run_piorch(env, "record", "--pi", fake_pi.info.alias, "--seconds", "1", "--out", str(out),
                         "--port", "0")
    assert refused.returncode == 3
    assert "unknown host key" in refused.stderr and "--accept-new-host-key" in refused.stderr
    assert "piorch trust" in refused.stderr and "Traceback" not in refused.stderr
    assert known.read_text() == "" and not fake_pi.runs()
    accepted = run_piorch(env, "record", "--pi", fake_pi.info.alias, "--seconds", "1", "--out", str(out),
                          "--port", "0", "--accept-new-host-key")
    assert accepted.returncode == 0, accepted.stderr
    assert f"[127.0.0.1]:{fake_pi.info.port} ssh-ed25519 " in known.read_text()


def test_changed_host_key_always_refused(tmp_path: Path, fake_pi: FakePi) -> None:
    import paramiko

    other = paramiko.Ed25519Key.from_private_key_file(str(fake_pi.info.user_key))  # any other ed25519 key
    fake_pi.info.known_hosts.write_text(f"[127.0.0.1]:{fake_pi.info.port} ssh-ed25519 {other.get_base64()}\n")
    env = piorch_env(tmp_path, fake_pi.info.ssh_config)
    result = run_piorch(env, "record", "--pi", fake_pi.info.alias, "--seconds", "1", "--out", str(tmp_path / "r"),
                        "--port", "0", "--accept-new-host-key")
    assert result.returncode == 3
    assert "CHANGED" in result.stderr and "ssh-keygen -R" in result.stderr
    assert not fake_pi.runs()


def test_camera_busy_is_explained(tmp_path: Path, fake_pi: FakePi) -> None:
    env = piorch_env(tmp_path, fake_pi.info.ssh_config)
    with open(fake_pi.lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        result = run_piorch(env, "record", "--pi", fake_pi.info.alias, "--seconds", "2",
                            "--out", str(tmp_path / "recv"), "--port", "0")
    assert result.returncode != 0
    assert "camera busy" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "recv").glob("*.h264"))


def test_trust_records_key_once(tmp_path: Path, fake_pi: FakePi) -> None:
    fake_pi.info.known_hosts.write_text("")
    env = piorch_env(tmp_path, fake_pi.info.ssh_config)
    first = run_piorch(env, "trust", fake_pi.info.alias, "--yes")
    assert first.returncode == 0, first.stderr
    assert fake_pi.info.host_key_fingerprint in first.stdout
    second = run_piorch(env, "trust", fake_pi.info.alias, "--yes")
    assert "already trusted" in second.stdout
    assert fake_pi.info.known_hosts.read_text().count("ssh-ed25519") == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--seconds", "1", "--minutes", "1"], "--minutes and --seconds"),
        (["--bitrate", "5"], "bitrate"),
        (["--laptop-ip", "not-an-ip"], "laptop-ip"),
        (["--camera-tool", "raspistill"], "--camera-tool"),
        (["--port", "99999"], "--port"),
    ],
)
def test_bad_options_one_line_error(tmp_path: Path, args: list[str], words: str) -> None:
    env = piorch_env(tmp_path, tmp_path / "no-ssh-config")
    result = run_piorch(env, "record", "--pi", "pi@192.0.2.1", *args, "--out", str(tmp_path / "recv"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "recv").exists()



@pytest.mark.parametrize("tool", ["raspivid", "rpicam-vid"])
def test_camera_not_detected_is_explained(tmp_path: Path, tool: str) -> None:
    from tests.conftest import _require_sshd

    _require_sshd()
    pi = start_fake_pi(tmp_path, (tool,), {"PIORCH_SIM_FAULT": "no-camera"})
    try:
        env = piorch_env(tmp_path, pi.info.ssh_config)
        result = run_piorch(env, "record", "--pi", pi.info.alias, "--seconds", "2", "--out", str(tmp_path / "r"),
                            "--port", "0")
        assert result.returncode == 1
        assert "camera not detected" in result.stderr and "ribbon cable" in result.stderr
        assert "Traceback" not in result.stderr
        assert not list((tmp_path / "r").glob("*.h264"))
    finally:
        pi.server.stop()


def test_record_through_proxyjump(tmp_path: Path, fake_pi: FakePi) -> None:
    """~/.ssh/config ProxyJump: the Pi is reached through a jump host (a second real sshd)."""
    from tests.sshd_server import SshServer

    with SshServer(alias="jumpbox") as jump:
        config = tmp_path / "ssh_config"
        config.write_text(
            jump.info.ssh_config.read_text()
            + fake_pi.info.ssh_config.read_text().replace("Host testpi", "Host testpi\n    ProxyJump jumpbox")
        )
        known = tmp_path / "known_hosts"
        known.write_text(jump.info.known_hosts.read_text() + fake_pi.info.known_hosts.read_text())
        config.write_text(config.read_text().replace(str(jump.info.known_hosts), str(known))
                          .replace(str(fake_pi.info.known_hosts), str(known)))
        env = piorch_env(tmp_path, config)
        out = tmp_path / "recv"
        # Through a jump host the laptop's address on the Pi's side is not visible: it is given.
        result = run_piorch(env, "record", "--pi", "testpi", "--seconds", "1", "--out", str(out), "--port", "0",
                            "--laptop-ip", "127.0.0.1", "--container", "h264")
        assert result.returncode == 0, result.stderr
        (run,) = fake_pi.runs()
        (video,) = out.glob("*.h264")
        assert sha256(video) == run["sha256"]
        assert "Accepted publickey" in jump.log_tail(200) or jump.log_path.read_text().count("Accepted") >= 1


def test_a_laptop_user_without_a_name_records_from_a_pi_whose_user_is_named(fake_pi: FakePi, tmp_path: Path) -> None:
    """A container's `-u 12345`: no passwd entry, no USER or LOGNAME. paramiko's own ssh_config lookup asked
    that name as soon as a Host block did not match, and failed; the config here names the Pi's user."""
    env = {name: value for name, value in piorch_env(tmp_path, fake_pi.info.ssh_config).items()
           if name not in ("USER", "LOGNAME", "LNAME", "USERNAME")}
    config = fake_pi.info.ssh_config
    config.write_text("Host some-other-pi\n    Port 2222\n" + config.read_text())
    out = tmp_path / "recv"
    done = run_as_nameless_user(piorch_argv(
        "record", "--pi", fake_pi.info.alias, "--seconds", "1", "--out", str(out), "--container", "h264",
        "--port", "0", "--width", "640", "--height", "480", "--fps", "15"), env)
    assert done.returncode == 0, done.stderr
    [run] = fake_pi.runs()
    [manifest] = manifests(out)
    assert manifest["status"] == "complete"
    assert manifest["sha256"] == run["sha256"] and manifest["bytes"] == run["bytes"] > 0
