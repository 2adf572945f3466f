"""Issue 13, the pure half and the Pi's shell: which tool gives its timestamps and how it is asked, the
pipeline script's named pipes run by a real dash with a stand-in camera, the kill script's clean-up, the
laptop's bookkeeping (runs, files, display times) and the simulator's timestamps files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.pi.scripts import (
    CAMERA_EXIT_MARK,
    NC_EXIT_MARK,
    PTS_BATCH_LINES,
    PTS_MARK,
    build_kill_script,
    build_pipeline_script,
    parse_pts_line,
    parse_status_line,
)
from orchestrator.pi.stack import ToolFacts, describe_stack
from orchestrator.pi.timestamps import (
    PTS_PIPE,
    VIDEO_PIPE,
    FrameClock,
    TimestampPlan,
    add_timestamp_options,
    plan_timestamps,
)
from orchestrator.settings import CameraSettings, CameraTool
from orchestrator.sim.pts import parse_drop_frames
from orchestrator.stream.frame_times import CameraRun, FileTimes, FrameTimes
from orchestrator.stream.remux import DisplayClock
from orchestrator.stream.timecodes import HEADER, IntegrityCounter, measure

PI4 = "Raspberry Pi 4 Model B Rev 1.4"
PI5 = "Raspberry Pi 5 Model B Rev 1.0"
H264 = CameraSettings(duration_ms=1000)
MJPEG = CameraSettings(codec="mjpeg", duration_ms=1000)
LISTED = frozenset({"save-pts", "flush", "libav-format", "low-latency", "libav-video-codec"})


def facts(version: tuple[int, int, int] | None, options: frozenset[str] = LISTED, libav: bool = True) -> ToolFacts:
    return ToolFacts("rpicam-vid", build=None, version=version, libav_capability=libav, options=options)


# ------------------------------------------------------------------------------------------- the plan


@pytest.mark.parametrize(("camera", "tool", "board", "tool_facts", "clock", "video_pipe"), [
    (H264, CameraTool.RASPIVID, PI4, None, FrameClock.CAMERA, False),
    (MJPEG, CameraTool.RASPIVID, None, None, FrameClock.CAMERA, False),
    (H264, CameraTool.RPICAM_VID, PI4, facts((1, 13, 0)), FrameClock.CAMERA, False),
    (H264, CameraTool.LIBCAMERA_VID, PI4, facts((1, 2, 0)), FrameClock.CAMERA, False),
    # A Pi 5's H.264 goes through libav: the elementary-stream pipe from 1.8.0 on, nothing before.
    (H264, CameraTool.RPICAM_VID, PI5, facts((1, 8, 0)), FrameClock.CAMERA, True),
    (H264, CameraTool.RPICAM_VID, PI5, facts((1, 13, 0)), FrameClock.CAMERA, True),
    (H264, CameraTool.RPICAM_VID, PI5, facts((1, 7, 0)), FrameClock.FRAME_RATE, False),
    (H264, CameraTool.RPICAM_VID, PI5, facts((1, 5, 3)), FrameClock.FRAME_RATE, False),
    (H264, CameraTool.RPICAM_VID, PI5, facts(None), FrameClock.FRAME_RATE, False),
    # MJPEG and raw frames on a Pi 5 do not go through libav: every release writes their timestamps.
    (MJPEG, CameraTool.RPICAM_VID, PI5, facts((1, 5, 3)), FrameClock.CAMERA, False),
    (CameraSettings(codec="yuv420"), CameraTool.RPICAM_VID, PI5, facts((1, 4, 0)), FrameClock.CAMERA, False),
    # A build whose --help was read and lists no --save-pts is never asked for it.
    (H264, CameraTool.RPICAM_VID, PI4, facts((1, 13, 0), frozenset({"flush"})), FrameClock.FRAME_RATE, False),
    # An unknown board: the ordinary path (only a Pi 5 differs, and a Pi 5 says what it is).
    (H264, CameraTool.RPICAM_VID, None, None, FrameClock.CAMERA, False),
])
def test_each_tool_build_is_asked_for_its_timestamps_as_it_can_give_them(
        camera: CameraSettings, tool: CameraTool, board: str | None, tool_facts: ToolFacts | None,
        clock: FrameClock, video_pipe: bool) -> None:
    plan = plan_timestamps(camera, tool, describe_stack(tool.is_legacy, board, tool_facts))
    assert (plan.clock, plan.video_pipe) == (clock, video_pipe)
    assert bool(plan.reason) == (clock is FrameClock.FRAME_RATE)


@pytest.mark.parametrize("tool", [CameraTool.RASPIVID, CameraTool.RPICAM_VID])
def test_timestamps_turned_off_are_never_asked_for(tool: CameraTool) -> None:
    plan = plan_timestamps(H264, tool, describe_stack(tool.is_legacy, PI4, facts((1, 13, 0))), wanted=False)
    assert plan.clock is FrameClock.FRAME_RATE and "--no-timestamps" in plan.reason
    assert add_timestamp_options([tool.value, "-o", "-"], plan) == [tool.value, "-o", "-"]


def test_the_pi5_reason_names_the_release_that_fixes_it() -> None:
    plan = plan_timestamps(H264, CameraTool.RPICAM_VID, describe_stack(False, PI5, facts((1, 7, 0))))
    assert "1.7.0" in plan.reason and "1.8.0" in plan.reason


@pytest.mark.parametrize(("argv", "plan", "expected"), [
    (["raspivid", "-o", "-", "-n"], TimestampPlan(FrameClock.CAMERA),
     ["raspivid", "-o", "-", "-n", "-pts", PTS_PIPE, "-fl"]),
    (["rpicam-vid", "-o", "-", "-n"], TimestampPlan(FrameClock.CAMERA),
     ["rpicam-vid", "-o", "-", "-n", "--save-pts", PTS_PIPE, "--flush"]),
    (["libcamera-vid", "-o", "-"], TimestampPlan(FrameClock.CAMERA),
     ["libcamera-vid", "-o", "-", "--save-pts", PTS_PIPE, "--flush"]),
    (["rpicam-vid", "-o", "-", "--libav-format", "h264"], TimestampPlan(FrameClock.CAMERA, video_pipe=True),
     ["rpicam-vid", "-o", VIDEO_PIPE, "--libav-format", "h264", "--save-pts", PTS_PIPE, "--flush"]),
    # raspividyuv has -pts but no -fl.
    (["raspividyuv", "-o", "-"], TimestampPlan(FrameClock.CAMERA), ["raspividyuv", "-o", "-", "-pts", PTS_PIPE]),
    (["rpicam-vid", "-o", "-"], TimestampPlan(FrameClock.FRAME_RATE, reason="old"), ["rpicam-vid", "-o", "-"]),
])
def test_timestamp_options(argv: list[str], plan: TimestampPlan, expected: list[str]) -> None:
    assert add_timestamp_options(argv, plan) == expected
    assert argv == expected[: len(argv)] or plan.video_pipe  # the caller's list is left alone


def test_the_video_pipe_needs_a_stdout_command_line() -> None:
    with pytest.raises(ValueError):
        add_timestamp_options(["rpicam-vid", "-o", "x.h264"], TimestampPlan(FrameClock.CAMERA, video_pipe=True))
    with pytest.raises(ValueError):
        build_pipeline_script(["cam"], ["nc"], timestamps=False, video_pipe=True)


@pytest.mark.parametrize(("line", "value"), [
    (f"{PTS_MARK} 33.370", "33.370"), (f"{PTS_MARK} # timecode format v2", "# timecode format v2"),
    (f"{PTS_MARK} ", ""), (f"{CAMERA_EXIT_MARK} 0", None), ("piorch-ptsx 1", None), ("33.370", None),
])
def test_pts_lines(line: str, value: str | None) -> None:
    assert parse_pts_line(line) == value


# ------------------------------------------------------------------- the pipeline script, run for real

# Stand-ins for the camera (a POSIX sh script: the file the tool is told to write its timestamps in, then
# frames on stdout or into the named output) and for nc (cat into a file).
FAKE_CAMERA = r"""#!/bin/sh
# args: -o OUT --save-pts FILE COUNT [fail]
out=$2; pts=$4; count=$5
if [ "$6" = fail-early ]; then echo "no cameras available" >&2; exit 70; fi
exec 7>"$pts"
printf '# timecode format v2\n' >&7
i=0
while [ "$i" -lt "$count" ]; do
  if [ "$out" = - ]; then printf 'frame%03d' "$i"; else printf 'frame%03d' "$i" >>"$out"; fi
  printf '%d.%03d\n' $((i * 40)) 0 >&7
  i=$((i + 1))
done
if [ "$6" = partial ]; then printf '9999.5' >&7; exit 3; fi
exit 0
"""


def run_pipeline(tmp_path: Path, camera_args: list[str], video_pipe: bool, nc: list[str] | None = None,
                 batch_ms: int = 0) -> tuple[list[str], bytes, str]:
    """The script under dash, as sshd would run it (stdin a pipe held open): its stdout lines, what the
    stand-in nc received, its stderr."""
    camera = tmp_path / "fake-camera"
    camera.write_text(FAKE_CAMERA)
    camera.chmod(0o755)
    received = tmp_path / "received"
    nc_argv = nc or ["sh", "-c", f"cat > {received}"]
    script = build_pipeline_script([str(camera), "-o", VIDEO_PIPE if video_pipe else "-", "--save-pts", PTS_PIPE,
                                    *camera_args], nc_argv, timestamps=True, video_pipe=video_pipe,
                                   pts_batch_ms=batch_ms)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    read_end, write_end = os.pipe()
    try:
        # The timeout only guards against a hang (the failure this test would show), it measures nothing.
        result = subprocess.run(["dash", "-c", script], stdin=read_end, capture_output=True, env=env, timeout=60)
    finally:
        os.close(read_end)
        os.close(write_end)
    data = received.read_bytes() if received.exists() else b""
    return result.stdout.decode().splitlines(), data, result.stderr.decode()


needs_dash = pytest.mark.skipif(shutil.which("dash") is None or shutil.which("setsid") is None,
                                reason="needs dash and setsid")


@needs_dash
@pytest.mark.parametrize("batch_ms", [0, 100])
@pytest.mark.parametrize("video_pipe", [False, True])
def test_timestamps_come_as_status_lines_before_the_end_and_the_folder_goes(tmp_path: Path, video_pipe: bool,
                                                                           batch_ms: int) -> None:
    lines, data, _ = run_pipeline(tmp_path, ["5"], video_pipe, batch_ms=batch_ms)
    assert data == b"".join(b"frame%03d" % i for i in range(5))
    stamps = [parse_pts_line(line) for line in lines if parse_pts_line(line) is not None]
    assert [s for s in stamps if s] == [HEADER, "0.000", "40.000", "80.000", "120.000", "160.000"]
    statuses = [parse_status_line(line) for line in lines]
    assert (CAMERA_EXIT_MARK, 0) in statuses and statuses[-1] == (NC_EXIT_MARK, 0)
    # Every timestamp line came before the last line.
    assert all(parse_pts_line(line) is None for line in lines[-1:])
    assert not list(tmp_path.glob("piorch-*")), "the named pipes' folder must be removed"


@needs_dash
@pytest.mark.parametrize("video_pipe", [False, True])
def test_a_camera_that_fails_before_opening_its_pipes_leaves_nothing_waiting(tmp_path: Path, video_pipe: bool) -> None:
    lines, data, stderr = run_pipeline(tmp_path, ["5", "fail-early"], video_pipe)
    assert data == b"" and "no cameras available" in stderr
    statuses = [parse_status_line(line) for line in lines]
    assert (CAMERA_EXIT_MARK, 70) in statuses and statuses[-1] == (NC_EXIT_MARK, 0)
    assert not list(tmp_path.glob("piorch-*"))


@needs_dash
@pytest.mark.parametrize("batch_ms", [0, 100])
def test_a_line_cut_short_by_the_camera_does_not_hide_the_end(tmp_path: Path, batch_ms: int) -> None:
    lines, _, _ = run_pipeline(tmp_path, ["3", "partial"], video_pipe=False, batch_ms=batch_ms)
    stamps = [parse_pts_line(line) for line in lines if parse_pts_line(line)]
    assert stamps[-1] == "9999.5" and (CAMERA_EXIT_MARK, 3) in [parse_status_line(line) for line in lines]
    assert parse_status_line(lines[-1]) == (NC_EXIT_MARK, 0)


# A camera that writes the timestamps file's lines it is given (one argument each) and one frame.
LINES_CAMERA = r"""#!/bin/sh
# args: -o - --save-pts FILE LINE...
pts=$4; shift 4
exec 7>"$pts"
for line in "$@"; do printf '%s\n' "$line" >&7; done
printf 'frame'
"""


def pts_writes(tmp_path: Path, pts_lines: list[str], batch_ms: int) -> list[list[str]]:
    """The timestamp lines of each write the script made on its stdout. Its stdout is a SOCK_SEQPACKET
    socket, which keeps each write whole and apart, as sshd sends each read of the session's output as one
    message of its own when the lines come one a frame."""
    camera = tmp_path / "lines-camera"
    camera.write_text(LINES_CAMERA)
    camera.chmod(0o755)
    script = build_pipeline_script([str(camera), "-o", "-", "--save-pts", PTS_PIPE, *pts_lines],
                                   ["sh", "-c", "cat >/dev/null"], timestamps=True, pts_batch_ms=batch_ms)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    read_end, write_end = os.pipe()
    try:
        with theirs:
            proc = subprocess.Popen(["dash", "-c", script], stdin=read_end, stdout=theirs.fileno(),
                                    env={**os.environ, "TMPDIR": str(tmp_path)})
        writes = []
        while message := ours.recv(65536):
            writes.append([parse_pts_line(line) for line in message.decode().splitlines()])
        # The timeout only guards against a hang (the failure this test would show), it measures nothing.
        assert proc.wait(timeout=60) == 0
    finally:
        ours.close()
        os.close(read_end)
        os.close(write_end)
    return [[stamp for stamp in write if stamp is not None] for write in writes if any(s is not None for s in write)]


@needs_dash
def test_batched_timestamps_go_out_together_once_the_camera_clock_moved_on(tmp_path: Path) -> None:
    times = [f"{n * 40}.000" for n in range(10)]
    writes = pts_writes(tmp_path, [HEADER, *times], batch_ms=100)
    # The header and the first time at once; then a write each time the clock is 100 ms past the last
    # write's; the rest (and the end's empty line) at the end. Nothing lost, nothing reordered.
    assert writes == [[HEADER], ["0.000"], ["40.000", "80.000", "120.000"], ["160.000", "200.000", "240.000"],
                      ["280.000", "320.000", "360.000"], [""]]
    assert pts_writes(tmp_path, [HEADER, *times], batch_ms=0) == [[HEADER], *[[t] for t in times], [""]]


@needs_dash
def test_a_slow_frame_rate_is_never_held_back_by_the_batch(tmp_path: Path) -> None:
    # One frame a second: every time is past the batch, so each line goes out as it comes.
    writes = pts_writes(tmp_path, ["0.000", "1000.000", "2000.500", "3000.000"], batch_ms=100)
    assert writes == [["0.000"], ["1000.000"], ["2000.500"], ["3000.000"], [""]]


@needs_dash
def test_batched_lines_that_are_not_plain_times_go_out_at_once_and_the_shell_survives_them(tmp_path: Path) -> None:
    # A leading zero ($(( )) would read it as octal, 089 an error), more digits than the shell's
    # arithmetic holds, a negative time, text: none may end the reader; each goes out with those before it.
    odd = ["089.000", "123456789012345678901234.0", "-5.000", "nan", " 7.0"]
    writes = pts_writes(tmp_path, ["0.000", "40.000", *odd, "60.000"], batch_ms=100)
    assert writes == [["0.000"], ["40.000", "089.000"], ["123456789012345678901234.0"], ["-5.000"], ["nan"],
                      ["7.0"], ["60.000", ""]]


@needs_dash
def test_a_clock_that_does_not_move_still_sends_its_lines_in_bounded_batches(tmp_path: Path) -> None:
    writes = pts_writes(tmp_path, ["5.000"] * (PTS_BATCH_LINES + 10), batch_ms=100)
    assert [len(write) for write in writes] == [1, PTS_BATCH_LINES, 10]
    assert writes[-1][-1] == ""


@needs_dash
def test_nc_gone_first_ends_a_camera_writing_into_the_video_pipe(tmp_path: Path) -> None:
    # nc exits at once (the laptop refused): the camera, writing into the pipe, must not wait for ever.
    lines, _, _ = run_pipeline(tmp_path, ["20000"], video_pipe=True, nc=["sh", "-c", "exit 1"])
    statuses = [parse_status_line(line) for line in lines]
    assert statuses[-1] == (NC_EXIT_MARK, 1)
    assert any(status is not None and status[0] == CAMERA_EXIT_MARK and status[1] != 0 for status in statuses)
    assert not list(tmp_path.glob("piorch-*"))


# A camera that writes a frame's time, then the frame, 100 frames a second (its clock 10 ms a frame), until
# it is stopped: a 100 ms batch holds several lines at any moment.
ENDLESS_CAMERA = r"""#!/bin/sh
exec 7>"$4"
i=0
while :; do printf '%d.000\n' $((i * 10)) >&7; printf 'f'; i=$((i + 1)); sleep 0.01; done
"""


@needs_dash
@pytest.mark.parametrize("batch_ms", [0, 100])
def test_a_stopped_pipeline_sends_the_times_it_holds(tmp_path: Path, batch_ms: int) -> None:
    # The kill script TERMs the whole group, the timestamps' reader included: it sends its batch first, so
    # every frame that reached nc has its time (but the one line the reader may not have read yet).
    camera = tmp_path / "endless-camera"
    camera.write_text(ENDLESS_CAMERA)
    camera.chmod(0o755)
    received = tmp_path / "received"
    script = build_pipeline_script([str(camera), "-o", "-", "--save-pts", PTS_PIPE], ["sh", "-c", f"cat > {received}"],
                                   timestamps=True, pts_batch_ms=batch_ms)
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(["dash", "-c", script], stdin=read_end, stdout=subprocess.PIPE,
                                env={**os.environ, "TMPDIR": str(tmp_path)})
        assert proc.stdout is not None
        status = parse_status_line(proc.stdout.readline().decode())
        assert status is not None
        time.sleep(0.5)  # frames flow meanwhile (how many does not matter)
        subprocess.run(["dash", "-c", build_kill_script(status[1])], capture_output=True, timeout=30, check=True,
                       env={**os.environ, "TMPDIR": str(tmp_path)})
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(read_end)
        os.close(write_end)
    stamps = [stamp for line in out.decode().splitlines() if (stamp := parse_pts_line(line))]
    frames = received.read_bytes().count(b"f")
    assert frames > 10 and frames - 1 <= len(stamps) <= frames + 1
    assert stamps == [f"{n * 10}.000" for n in range(len(stamps))]
    assert not list(tmp_path.glob("piorch-*"))


@needs_dash
def test_the_kill_script_removes_the_pipes_folder_of_its_group_only(tmp_path: Path) -> None:
    group = subprocess.Popen(["setsid", "sleep", "60"], start_new_session=False)
    try:
        time.sleep(0.2)  # setsid has made its session (only so that the group exists; nothing is measured)
        pgid = os.getpgid(group.pid)
        ours, other = tmp_path / f"piorch-{pgid}.abc123", tmp_path / f"piorch-{pgid + 1}.abc123"
        ours.mkdir()
        other.mkdir()
        (ours / PTS_PIPE).write_text("")
        result = subprocess.run(["dash", "-c", build_kill_script(pgid)], capture_output=True, text=True,
                                env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=30)
        assert result.stdout.strip() == "piorch-gone"
        assert not ours.exists() and other.exists()
    finally:
        if group.poll() is None:
            group.kill()
        group.wait(5)


# ------------------------------------------------------------------------------ the laptop's bookkeeping


def test_a_run_hands_each_file_its_frames_times_by_frame_order() -> None:
    run = CameraRun(25)
    run.add_lines([HEADER, "0.000", "40.000", "", "garbage", "120.000"])
    run.add_lines(["160.000", "200.000"])
    run.close()
    first = run.take(0, 2, timeout=0)
    second = run.take(2, 3, timeout=0)
    assert first.times == (0.0, 40.0) and first.before is None
    assert second.times == (120.0, 160.0, 200.0) and second.before == 40.0
    # The gap into the second file is its dropped frame; its rate is its own.
    assert second.integrity().frames_dropped == 1 and first.integrity().frames_dropped == 0
    assert run.bad_lines == 1 and run.integrity().frames_dropped == 1
    # A file with more frames than timestamps says how many have none; `None` takes the rest.
    assert run.take(4, 5, timeout=0).missing == 4
    assert run.take(1, None, timeout=0).times == (40.0, 120.0, 160.0, 200.0)


def test_times_written_in_decode_order_count_no_false_drops() -> None:
    run = CameraRun(30)
    decode_order = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9]  # libx264 with B-frames writes each packet's pts
    for index in decode_order:
        run.add(index * 33.333)
    run.close()
    assert run.integrity().frames_dropped == 0 and run.integrity().frames == 11
    assert FileTimes(tuple(t * 33.333 for t in decode_order), None, 30, 11).integrity().frames_dropped == 0


def test_a_sink_of_a_later_connection_takes_the_later_run() -> None:
    times = FrameTimes(25)
    old = times.begin_run()
    old.add(0.0)
    new = times.begin_run()
    assert times.current is new and old is not new
    assert times.integrity() == (1, 0, 0.0)


def test_display_times_follow_the_camera_with_its_gaps_and_past_its_end() -> None:
    clock = DisplayClock(25, [1000.0, 1040.0, 1120.0, 1160.0])
    # 90 kHz ticks from the file's first frame; past the last timestamp, one typical interval a frame.
    assert [clock.at(k) for k in range(6)] == [0, 3600, 10800, 14400, 18000, 21600]
    assert [DisplayClock(25).at(k) for k in range(3)] == [0, 3600, 7200]
    assert [DisplayClock(30000 / 1001).at(k) for k in range(2)] == [0, 3003]


def test_a_camera_slower_than_asked_is_not_a_stream_of_drops() -> None:
    counter = IntegrityCounter(60)  # asked 60 fps, the sensor mode gives 30
    times = [i * 33.333 for i in range(20)] + [19 * 33.333 + 66.666]  # then one frame missing
    drops = [counter.add(t) for t in times]
    # Live, only the first gap is judged against the asked rate; a whole file knows better from the start.
    assert sum(drops[2:]) == 1 and drops[-1] == 1
    assert measure(times, 60).frames_dropped == 1


# ------------------------------------------------------------------------------------ the simulator

def run_sim(tmp_path: Path, tool: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    full = {**os.environ, "PIORCH_SIM_LOCK": str(tmp_path / "lock"), "PIORCH_SIM_LOG": str(tmp_path / "log"), **env}
    (tmp_path / "log").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "orchestrator.sim.camera", tool, *args], capture_output=True,
                          env=full, cwd=tmp_path, timeout=60)


@pytest.mark.parametrize("tool", ["raspivid", "rpicam-vid"])
def test_the_simulator_writes_the_tools_timecode_file_with_the_frames_it_dropped(tmp_path: Path, tool: str) -> None:
    legacy = tool == "raspivid"
    args = (["-o", "out.h264", "-t", "1000", "-fps", "25", "-pts", "t.txt", "-n"] if legacy else
            ["-o", "out.h264", "-t", "1000", "--framerate", "25", "--save-pts", "t.txt", "-n"])
    result = run_sim(tmp_path, tool, args, {"PIORCH_SIM_FAULT": "drop-frames=3:2/10"})
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "t.txt").read_text().splitlines()
    slots = [i + (2 if i >= 3 else 0) + (1 if i >= 10 else 0) for i in range(len(lines) - 1)]
    assert lines == [HEADER, *[f"{slot * 40}.000" for slot in slots]]
    (copy,) = (tmp_path / "log").glob("pts-*.txt")
    assert copy.read_text() == (tmp_path / "t.txt").read_text()
    assert parse_drop_frames("3:2/10") == {3: 2, 10: 1}


def test_a_pi5_before_1_8_writes_the_header_and_no_times_for_libav_h264(tmp_path: Path) -> None:
    env = {"PIORCH_SIM_BOARD": "pi5", "PIORCH_SIM_VERSION": "1.5.3"}
    result = run_sim(tmp_path, "rpicam-vid", ["-o", "out.h264", "-t", "500", "--libav-format", "h264",
                                               "--save-pts", "t.txt", "-n"], env)
    assert result.returncode == 0, result.stderr
    assert b"will be ignored" in result.stderr
    assert (tmp_path / "t.txt").read_text() == HEADER + "\n"


def test_a_bad_drop_frames_spec_is_refused(tmp_path: Path) -> None:
    result = run_sim(tmp_path, "raspivid", ["-o", "-", "-t", "100"], {"PIORCH_SIM_FAULT": "drop-frames=x"})
    assert result.returncode == 1 and b"drop-frames" in result.stderr


def test_sigterm_still_flushes_what_the_simulator_held(tmp_path: Path) -> None:
    # Without --flush the lines wait in the buffer; the simulator, stopped by TERM, exits normally.
    (tmp_path / "log").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.sim.camera", "rpicam-vid", "-o", "out.h264", "-t", "0",
                             "--framerate", "50", "--save-pts", "t.txt", "-n"], cwd=tmp_path,
                            env={**os.environ, "PIORCH_SIM_LOCK": str(tmp_path / "lock")})
    try:
        deadline = time.monotonic() + 30
        while (not (tmp_path / "out.h264").exists() or (tmp_path / "out.h264").stat().st_size == 0) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = (tmp_path / "t.txt").read_text().splitlines()
    assert lines[0] == HEADER and len(lines) > 1


# ------------------------------------------------------------------------------------------- the remux

@pytest.mark.parametrize("clip", ["clip.h264", "clip_bframes.h264"])
@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_remux_puts_the_cameras_times_in_the_container(tmp_path: Path, clip: str, container: str) -> None:
    av = pytest.importorskip("av")
    from orchestrator.stream.remux import remux_h264

    raw = tmp_path / "in.h264"
    raw.write_bytes((Path(__file__).parents[1] / "orchestrator" / "sim" / clip).read_bytes())
    with av.open(str(raw), format="h264") as source:
        count = sum(1 for packet in source.demux(video=0) if packet.size)
    # Two frames dropped after the 10th, one after the 30th, starting at 5000 ms (a later segment's times).
    slots = [i + (2 if i >= 10 else 0) + (1 if i >= 30 else 0) for i in range(count)]
    times = [5000 + slot * 40.0 for slot in slots]
    result = remux_h264(raw, tmp_path / f"out.{container}", 25, times_ms=times)
    assert result.frames == count
    with av.open(str(result.path)) as out:
        stream = out.streams.video[0]
        packets = [packet for packet in out.demux(stream) if packet.size]
        base = float(stream.time_base)
        shown = sorted(float(packet.pts * stream.time_base) for packet in packets)
        # Matroska keeps presentation times only: its demuxer gives no decode time to reordered frames.
        decode = [packet.dts for packet in packets if packet.dts is not None]
        assert decode == sorted(decode) and len(set(decode)) == len(decode)  # strictly increasing
        assert all(packet.dts <= packet.pts for packet in packets if packet.dts is not None)
        assert container == "mkv" or len(decode) == count
        expected = [(t - 5000) / 1000 for t in times]
        assert max(abs(a - b) for a, b in zip(shown, expected, strict=True)) <= base
    with av.open(str(result.path)) as out:
        # Every frame decodes, in display order, at the camera's time.
        pictures = [float(frame.pts * frame.time_base) for frame in out.decode(video=0)]
        assert len(pictures) == count
        assert max(abs(a - b) for a, b in zip(pictures, expected, strict=True)) <= base


# --------------------------------------------------------------------------------------------- the displays

def progress(dropped: int | None, frames: int = 100, gap: float | None = 120.0) -> Any:
    from orchestrator.events import Progress

    return Progress(elapsed_s=4.0, duration_s=10.0, bytes_total=1000, rate_bps=8e6, average_bps=8e6,
                    target_bps=None, active_connections=1, free_bytes=None, camera_frames=frames,
                    frames_dropped=dropped, longest_gap_ms=gap if dropped else 40.0)


def test_the_plain_log_says_each_new_drop_at_once() -> None:
    import io

    from orchestrator.ui.log import PlainLog

    stream = io.StringIO()
    log = PlainLog(stream, every_s=3600)
    for event in (progress(0), progress(0), progress(2), progress(2), progress(3)):
        log(event)
    lines = stream.getvalue().splitlines()
    drops = [line for line in lines if "the camera dropped" in line]
    assert len(drops) == 2 and "dropped 2 frame(s)" in drops[0] and "dropped 1 frame(s)" in drops[1]
    assert "longest gap 120 ms" in drops[1] and "camera: 100 frames, none dropped" in lines[0]


def test_the_dashboard_and_the_summary_show_drops_in_the_warning_colour(tmp_path: Path) -> None:
    from rich.console import Console

    from orchestrator.events import FileFinished, FileStatus
    from orchestrator.ui.dashboard import Dashboard
    from orchestrator.ui.format import WARNING_STYLE, integrity_text
    from orchestrator.ui.summary import render_summary

    assert integrity_text(progress(None)) is None
    quiet, loud = integrity_text(progress(0)), integrity_text(progress(3))
    assert quiet is not None and loud is not None and quiet.style == "" and loud.style == WARNING_STYLE
    console = Console(record=True, width=120, force_terminal=True)
    board = Dashboard("cam", console)
    board(progress(3))
    console.print(board._render())
    assert "100 frames, 3 dropped (longest gap 120 ms)" in console.export_text()
    console = Console(record=True, width=140)
    files = [FileFinished(tmp_path / "a.mp4", None, 10, "x", FileStatus.COMPLETE, 1.0, frames_dropped=3),
             FileFinished(tmp_path / "b.mp4", None, 10, "x", FileStatus.COMPLETE, 1.0)]
    render_summary(files, console)
    text = console.export_text()
    assert "dropped" in text.splitlines()[2] and " 3 " in next(line for line in text.splitlines() if "a.mp4" in line)
