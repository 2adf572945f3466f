"""Tables for the pure command-line builders: camera argv per tool, netcat per flavour, remote scripts."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.netcat import (
    NetcatFlavour,
    build_nc_listen_argv,
    build_nc_send_argv,
    parse_nc_failure,
    parse_nc_flavour,
)
from orchestrator.pi.camera import EncoderOptions, build_camera_argv, parse_camera_failure
from orchestrator.pi.scripts import (
    build_kill_script,
    build_pipeline_script,
    build_probe_script,
    parse_probe_output,
    parse_status_line,
)
from orchestrator.settings import CameraSettings, CameraTool
from tests.system_tools import require_tool

DATA = Path(__file__).parent / "data"
BASE = CameraSettings(bitrate=16_000_000, width=1280, height=720, fps=25, duration_ms=600_000)


@pytest.mark.parametrize(
    ("tool", "camera", "expected"),
    [
        (CameraTool.RASPIVID, BASE,
         ["raspivid", "-o", "-", "-t", "600000", "-b", "16000000", "-w", "1280", "-h", "720", "-fps", "25",
          "-n", "-ih"]),
        (CameraTool.RASPIVID, CameraSettings(vflip=True, hflip=True, duration_ms=0),
         ["raspivid", "-o", "-", "-t", "0", "-b", "16000000", "-w", "1920", "-h", "1080", "-fps", "30",
          "-n", "-ih", "-vf", "-hf"]),
        (CameraTool.RPICAM_VID, BASE,
         ["rpicam-vid", "-o", "-", "-t", "600000", "--codec", "h264", "-b", "16000000", "--width", "1280",
          "--height", "720", "--framerate", "25", "-n", "--inline"]),
        (CameraTool.LIBCAMERA_VID, CameraSettings(vflip=True, hflip=True, duration_ms=5000),
         ["libcamera-vid", "-o", "-", "-t", "5000", "--codec", "h264", "-b", "16000000", "--width", "1920",
          "--height", "1080", "--framerate", "30", "-n", "--inline", "--vflip", "--hflip"]),
        # raspivid lowers anything over 25 Mbit/s at its default level 4: level 4.2 lets 62.5 through.
        (CameraTool.RASPIVID, CameraSettings(bitrate=25_000_001, duration_ms=1000),
         ["raspivid", "-o", "-", "-t", "1000", "-b", "25000001", "-w", "1920", "-h", "1080", "-fps", "30",
          "-n", "-ih", "-lev", "4.2"]),
        (CameraTool.RASPIVID, CameraSettings(bitrate=25_000_000, duration_ms=1000),
         ["raspivid", "-o", "-", "-t", "1000", "-b", "25000000", "-w", "1920", "-h", "1080", "-fps", "30",
          "-n", "-ih"]),
        # MJPEG: raspivid keeps -b (its MJPEG encoder is rate-controlled); rpicam-vid's ignores it, so no -b.
        (CameraTool.RASPIVID, CameraSettings(codec="mjpeg", duration_ms=1000),
         ["raspivid", "-o", "-", "-t", "1000", "-b", "16000000", "-w", "1920", "-h", "1080", "-fps", "30",
          "-n", "-cd", "MJPEG"]),
        (CameraTool.RPICAM_VID, CameraSettings(codec="mjpeg", duration_ms=1000),
         ["rpicam-vid", "-o", "-", "-t", "1000", "--codec", "mjpeg", "--width", "1920", "--height", "1080",
          "--framerate", "30", "-n"]),
    ],
)
def test_camera_argv(tool: CameraTool, camera: CameraSettings, expected: list[str]) -> None:
    assert build_camera_argv(camera, tool) == expected


@pytest.mark.parametrize(
    ("options", "codec", "added"),
    [
        (EncoderOptions(), "h264", []),
        (EncoderOptions(libav_format=True), "h264", ["--libav-format", "h264"]),
        (EncoderOptions(low_latency=True), "h264", ["--low-latency"]),
        (EncoderOptions(libav_format=True, low_latency=True), "h264", ["--libav-format", "h264", "--low-latency"]),
        # MJPEG never goes through libav's H.264 path: nothing to add.
        (EncoderOptions(libav_format=True, low_latency=True), "mjpeg", []),
    ],
)
def test_libav_options_follow_the_plan(options: EncoderOptions, codec: str, added: list[str]) -> None:
    camera = CameraSettings(codec=codec, duration_ms=1000)
    plain = build_camera_argv(camera, CameraTool.RPICAM_VID)
    argv = build_camera_argv(camera, CameraTool.RPICAM_VID, options)
    assert argv[:len(plain)] == plain and argv[len(plain):] == added
    assert argv[argv.index("-o") + 1] == "-"  # with --libav-format h264, `-o -` is libav's pipe: output


def test_raspivid_never_gets_libav_options() -> None:
    argv = build_camera_argv(CameraSettings(), CameraTool.RASPIVID, EncoderOptions(libav_format=True, low_latency=True))
    assert "--libav-format" not in argv and "--low-latency" not in argv


def test_legacy_never_uses_rpicam_spellings_and_back() -> None:
    legacy = build_camera_argv(CameraSettings(vflip=True, hflip=True), CameraTool.RASPIVID)
    modern = build_camera_argv(CameraSettings(vflip=True, hflip=True), CameraTool.RPICAM_VID)
    # raspivid: -h is height and -fps framerate; rpicam: -h is help, width/height are long only.
    assert "--width" not in legacy and "--inline" not in legacy and "--vflip" not in legacy
    assert "-h" not in modern and "-w" not in modern and "-fps" not in modern and "-ih" not in modern


def test_auto_tool_must_be_resolved_first() -> None:
    with pytest.raises(ValueError):
        build_camera_argv(BASE, CameraTool.AUTO)


@pytest.mark.parametrize(
    ("stderr", "code", "words"),
    [
        ("mmal: mmal_vc_component_enable: failed to enable component: ENOSPC\n", 70, "camera busy"),
        ("ERROR: *** failed to acquire camera /base/soc/i2c0mux/i2c@1/imx219@10 ***", 255, "camera busy"),
        ("Pipeline handler in use by another process", 255, "camera busy"),
        ("ERROR: *** no cameras available ***", 255, "camera not detected"),
        ("mmal: Failed to create camera component", 70, "camera not detected"),
        ("sh: 1: raspivid: not found", 127, "not installed"),
        ("ERROR: *** Unable to find an appropriate H.264 codec ***", 255, "cannot record H.264"),
        ("ERROR: *** libav: cannot allocate output context, try setting with --libav-format ***", 255,
         "without --libav-format"),
        ("Invalid command line option (-bitrate)", 1, "refused an option"),
        ("something odd", 3, "failed on the Pi (something odd)"),
        # The pipeline script's own line: the camera's timestamps had no folder for their named pipe.
        ("piorch: could not make named pipes for the camera's timestamps in /tmp\n", 1,
         "could not make the named pipes the camera's timestamps travel through, in /tmp (full"),
    ],
)
def test_camera_failure_explained(stderr: str, code: int, words: str) -> None:
    problem = parse_camera_failure(CameraTool.RASPIVID, stderr, code)
    assert words in problem.message
    assert problem.fix


@pytest.mark.parametrize(
    ("file", "flavour"),
    [("nc-h-openbsd.txt", NetcatFlavour.OPENBSD), ("nc-h-traditional.txt", NetcatFlavour.TRADITIONAL)],
)
def test_nc_flavour_from_real_help(file: str, flavour: NetcatFlavour) -> None:
    assert parse_nc_flavour((DATA / file).read_text()) is flavour


@pytest.mark.parametrize("text", ["", "BusyBox v1.36.1 multi-call binary.", "nc: invalid option -- 'h'"])
def test_nc_flavour_unknown(text: str) -> None:
    assert parse_nc_flavour(text) is NetcatFlavour.UNKNOWN


def test_nc_argv_per_flavour() -> None:
    # -n on both flavours: traditional netcat with -v would look the laptop up in DNS before connecting.
    assert build_nc_send_argv(NetcatFlavour.OPENBSD, "192.168.50.1", 10401) == [
        "nc", "-v", "-n", "-N", "192.168.50.1", "10401"]
    assert build_nc_send_argv(NetcatFlavour.TRADITIONAL, "10.0.0.1", 5) == [
        "nc", "-v", "-n", "-q", "0", "10.0.0.1", "5"]
    assert build_nc_send_argv(NetcatFlavour.OPENBSD, "fe80::1%eth0", 1)[-2:] == ["fe80::1%eth0", "1"]
    assert build_nc_listen_argv(NetcatFlavour.OPENBSD, 10401) == ["nc", "-n", "-l", "10401"]
    assert build_nc_listen_argv(NetcatFlavour.TRADITIONAL, 10401) == ["nc", "-n", "-l", "-p", "10401"]
    assert build_nc_listen_argv(NetcatFlavour.OPENBSD, 1, "127.0.0.1") == ["nc", "-n", "-l", "127.0.0.1", "1"]
    assert build_nc_listen_argv(NetcatFlavour.TRADITIONAL, 1, "127.0.0.1")[-2:] == ["-s", "127.0.0.1"]
    with pytest.raises(ValueError):
        build_nc_send_argv(NetcatFlavour.UNKNOWN, "h", 1)


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        ("nc: connect to 192.168.50.1 port 10401 (tcp) failed: Connection refused", "connection refused"),
        ("(UNKNOWN) [192.168.50.1] 10401 (?) : Connection refused", "connection refused"),
        ("nc: connect to 192.168.50.1 port 10401 (tcp) failed: No route to host", "no route to host"),
        ("mmal: Failed to write buffer data - aborting", None),
    ],
)
def test_nc_failure_reason(stderr: str, reason: str | None) -> None:
    assert parse_nc_failure(stderr) == reason


def test_probe_output_parsed() -> None:
    text = ("piorch-tool rpicam-vid /usr/bin/rpicam-vid\npiorch-tool raspivid /usr/bin/raspivid\n"
            "piorch-nc-begin\n" + (DATA / "nc-h-openbsd.txt").read_text() + "piorch-nc-end\n"
            "piorch-setsid\npiorch-probe-done\n")
    probe = parse_probe_output(text)
    assert probe.tools == {CameraTool.RPICAM_VID: "/usr/bin/rpicam-vid", CameraTool.RASPIVID: "/usr/bin/raspivid"}
    assert probe.nc_flavour is NetcatFlavour.OPENBSD and probe.has_setsid and probe.complete
    bare = parse_probe_output("piorch-probe-done\n")
    assert bare.tools == {} and bare.nc_flavour is None and not bare.has_setsid


def test_probe_script_runs_in_sh() -> None:
    require_tool("nc")  # the probe reports this machine's netcat flavour
    result = subprocess.run(["sh", "-c", build_probe_script()], capture_output=True, text=True, timeout=10)
    probe = parse_probe_output(result.stdout)
    assert probe.complete and probe.has_setsid
    assert probe.nc_flavour in (NetcatFlavour.OPENBSD, NetcatFlavour.TRADITIONAL)


def test_status_lines() -> None:
    assert parse_status_line("piorch-camera-exit 0") == ("piorch-camera-exit", 0)
    assert parse_status_line("piorch-pgid 4242\n") == ("piorch-pgid", 4242)
    assert parse_status_line("piorch-pgid 12; rm -rf /") is None
    assert parse_status_line("hello") is None


def group_alive(pgid: int) -> bool:
    """Any process of the group that is not a zombie (a zombie holds nothing, it only waits for a reaper)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_kill_script_stops_a_group_in_dash_and_bash(shell: str) -> None:
    group = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60; wait"], start_new_session=True)
    # Reap the leader as soon as it dies, as its real parent (setsid -w) does on the Pi.
    reaper = threading.Thread(target=group.wait, daemon=True)
    reaper.start()
    try:
        result = subprocess.run([shell, "-c", build_kill_script(group.pid)], capture_output=True, text=True,
                                timeout=15)
        assert result.stdout.strip() == "piorch-gone"
        reaper.join(5)
        assert group.returncode == -15 and not group_alive(group.pid)
    finally:
        if group.poll() is None:
            group.kill()


def test_kill_script_refuses_group_zero_and_one() -> None:
    for bad in (0, 1, -5):
        with pytest.raises(ValueError):
            build_kill_script(bad)
    assert "kill -TERM -321" in build_kill_script(321)


def run_script(script: str, timeout: float = 10) -> subprocess.CompletedProcess[bytes]:
    """Run like sshd does: stdin is a channel that stays open (and silent) until the command ends."""
    read_end, write_end = os.pipe()
    try:
        return subprocess.run(["sh", "-c", script], stdin=read_end, capture_output=True, timeout=timeout)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_pipeline_runs_for_real_and_reports() -> None:
    """The script is plain sh: run it locally with stand-ins for camera and nc."""
    result = run_script(build_pipeline_script(["printf", "%s", "frame-bytes"], ["cat"]))
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("piorch-pgid ")
    assert "piorch-camera-exit 0" in lines and "piorch-nc-exit 0" in lines
    # nc's stdout is dropped: nothing of the stream leaks into the status channel.
    assert b"frame-bytes" not in result.stdout


def test_pipeline_reports_camera_failure() -> None:
    result = run_script(build_pipeline_script(["sh", "-c", "echo 'no cameras available' >&2; exit 70"], ["cat"]))
    assert b"piorch-camera-exit 70" in result.stdout
    assert b"no cameras available" in result.stderr


def test_watchdog_kills_the_group_when_the_channel_closes() -> None:
    """piorch gone (even SIGKILLed): the channel closes and the Pi frees the camera by itself."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(["sh", "-c", build_pipeline_script(["sleep", "60"], ["cat"])], stdin=read_end,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(read_end)
    try:
        assert proc.stdout is not None
        pgid = int(proc.stdout.readline().split()[1])
        time.sleep(0.3)
        os.killpg(pgid, 0)  # camera and nc are running in their group
        os.close(write_end)  # the laptop side goes away
        assert proc.wait(10) == -15  # the session leader was TERMinated by its own watchdog
        deadline = time.monotonic() + 10
        while group_alive(pgid):
            assert time.monotonic() < deadline, "the watchdog did not stop camera and nc"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()


def pid_alive(pid: int) -> bool:
    """A running process (a zombie is gone for every purpose here: it holds nothing, not the camera)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_watchdog_kills_a_camera_that_ignores_term(tmp_path: Path, shell: str) -> None:
    """The watchdog's TERM does not stop this camera; its KILL a few seconds later does."""
    pid_file = tmp_path / "camera.pid"
    # `exec sleep`: the camera is one process, and an ignored signal stays ignored across exec.
    camera = ["sh", "-c", f"trap '' TERM; echo $$ > {shlex.quote(str(pid_file))}; exec sleep 120"]
    script = build_pipeline_script(camera, ["cat"]).replace("sh -c", f"{shell} -c", 1)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(["sh", "-c", script], stdin=read_end, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(read_end)
    camera_pid = 0
    try:
        assert proc.stdout is not None
        pgid = int(proc.stdout.readline().split()[1])
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline, "the camera stand-in did not start"
            time.sleep(0.05)
        camera_pid = int(pid_file.read_text())
        os.close(write_end)  # piorch is gone (SIGKILL): sshd closes the channel
        write_end = -1
        deadline = time.monotonic() + 15
        while pid_alive(camera_pid) or group_alive(pgid):
            assert time.monotonic() < deadline, "the camera that ignores TERM outlived the watchdog"
            time.sleep(0.1)
    finally:
        if write_end >= 0:
            os.close(write_end)
        if camera_pid and pid_alive(camera_pid):
            os.kill(camera_pid, 9)
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def test_watchdog_is_gone_after_a_normal_end() -> None:
    """A pipeline that ends by itself takes its watchdog with it: nothing of the group is left to signal later."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(["sh", "-c", build_pipeline_script(["printf", "x"], ["cat"])], stdin=read_end,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, _ = proc.communicate(timeout=10)
        pgid = int(out.decode().splitlines()[0].split()[1])
        deadline = time.monotonic() + 5
        while group_alive(pgid):  # the channel is still open: only the normal end's kill can stop it
            assert time.monotonic() < deadline, "the watchdog outlived its pipeline"
            time.sleep(0.05)
    finally:
        os.close(read_end)
        os.close(write_end)


HOSTILE = st.text(alphabet=st.sampled_from(list("ab $`'\"\\;|&()<>*?!#~\n\t{}[]%")), min_size=1, max_size=20)


@settings(max_examples=40, deadline=None)
@given(HOSTILE)
def test_hostile_argument_reaches_the_program_unchanged(value: str) -> None:
    """Whatever a value holds, the shell hands it to the program as one argument, unchanged."""
    script = build_pipeline_script(["printf", "%s", value], ["cat"])
    inner = shlex.split(script)[-1]  # the `sh -c` payload
    assert shlex.join(["printf", "%s", value]) in inner
    result = run_script(build_pipeline_script(["printf", "%s", value], ["sh", "-c", "cat >&2"]))
    assert result.stderr == value.encode()
