"""The record core on the local Host (the simulated Pi): real processes, sockets and files, no sshd."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.events import Event, FileFinished, State, StateChanged
from orchestrator.jobs import record
from orchestrator.jobs.record import run_recording
from orchestrator.pi.capture import Pipeline
from orchestrator.pi.host import LocalHost
from orchestrator.pi.scripts import build_pipeline_script
from orchestrator.settings import CameraSettings, CameraTool, ReceiveSettings, RecordSettings
from orchestrator.sim.stand_in import install_stand_ins
from orchestrator.stream.timecodes import HEADER
from tests.system_tools import require_tool


def simulated_pi(tmp_path: Path) -> LocalHost:
    require_tool("nc")  # the simulated Pi streams through this machine's netcat, as a Pi does
    bin_dir = tmp_path / "bin"
    install_stand_ins(bin_dir, ("rpicam-vid",), extra_env={"PIORCH_SIM_LOCK": str(tmp_path / "lock")})
    return LocalHost("simulated-pi", path_prepend=bin_dir)


def test_unreachable_laptop_is_reported_as_the_link(tmp_path: Path) -> None:
    # The receiver listens on 127.0.0.1 while the Pi is told to send to 127.0.0.2: refused, like a firewall.
    settings = RecordSettings(
        camera=CameraSettings(bitrate=2_000_000, duration_ms=3000),
        receive=ReceiveSettings(port=0, out_dir=tmp_path / "recv", bind="127.0.0.1"),
        camera_tool=CameraTool.AUTO, laptop_ip="127.0.0.2",
    )
    events: list[Event] = []
    result = run_recording(settings, simulated_pi(tmp_path), events.append, threading.Event())
    assert result.state is State.FAILED and result.problem is not None
    assert "could not send to the laptop at 127.0.0.2" in result.problem.message
    assert "connection refused" in result.problem.message and "firewall" in result.problem.fix
    assert result.files == () and not list((tmp_path / "recv").iterdir())


def test_events_tell_the_story_in_order(tmp_path: Path) -> None:
    settings = RecordSettings(
        camera=CameraSettings(bitrate=2_000_000, duration_ms=1500),
        receive=ReceiveSettings(port=0, out_dir=tmp_path / "recv"),
        laptop_ip="127.0.0.1",
    )
    events: list[Event] = []
    result = run_recording(settings, simulated_pi(tmp_path), events.append, threading.Event())
    states = [e.state for e in events if isinstance(e, StateChanged)]
    assert states[0] is State.PROBING and states[-1] is State.DONE
    assert states.index(State.STARTING) < states.index(State.RECORDING) < states.index(State.STOPPING)
    (finished,) = [e for e in events if isinstance(e, FileFinished)]
    assert finished == result.files[0] and finished.path.exists()
    assert result.tool is CameraTool.RPICAM_VID and result.remote_exit["camera"] == 0


@pytest.mark.parametrize("live", [False, True])
def test_timestamp_lines_are_batched_and_read_at_a_pace_unless_the_video_is_read_live(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live: bool) -> None:
    # With nothing reading the video as it comes, the Pi sends its camera's timestamps in batches and the
    # pipeline's lines are read at most every FOLLOW_PACE_S; a live reader (the Python API, --view) has each
    # as it comes. Either way every frame's time reaches the recording.
    batches: list[int] = []
    polls: list[float] = []
    build, poll = build_pipeline_script, Pipeline.poll

    def noted_build(*args: Any, **kwargs: Any) -> str:
        batches.append(kwargs.get("pts_batch_ms", 0))
        return build(*args, **kwargs)

    def noted_poll(self: Pipeline, wait: float) -> bool:
        polls.append(time.monotonic())
        return poll(self, wait)

    monkeypatch.setattr(record, "build_pipeline_script", noted_build)
    monkeypatch.setattr(Pipeline, "poll", noted_poll)
    settings = RecordSettings(
        camera=CameraSettings(bitrate=2_000_000, duration_ms=1500, fps=30),
        receive=ReceiveSettings(port=0, out_dir=tmp_path / "recv"),
        laptop_ip="127.0.0.1", container="h264",
    )
    tapped: list[int] = []
    result = run_recording(settings, simulated_pi(tmp_path), lambda event: None, threading.Event(),
                           tap=(lambda data: tapped.append(len(data))) if live else None)
    assert result.state is State.DONE
    assert batches == [0 if live else record.PTS_BATCH_MS]
    (finished,) = result.files
    assert finished.manifest is not None
    manifest = json.loads(finished.manifest.read_text())
    sidecar = (finished.path.parent / manifest["pts_file"]).read_text().splitlines()
    assert manifest["timestamps"] == "camera" and manifest["frames"] > 0
    assert sidecar[0] == HEADER and len(sidecar) - 1 == manifest["frames"]
    if not live:
        # An upper bound by construction (each read is at least the pace after the one before), not a timing.
        assert len(polls) <= (polls[-1] - polls[0]) / record.FOLLOW_PACE_S + 2


def test_a_stopped_recording_keeps_the_camera_time_of_every_frame_that_arrived(tmp_path: Path) -> None:
    # Paced reads and the Pi's batches hold a few frames' times at any moment: stopped, the Pi's reader sends
    # what it holds and piorch reads what came after its last read, before the file takes its times.
    settings = RecordSettings(
        camera=CameraSettings(bitrate=2_000_000, duration_ms=30_000, fps=90, width=640, height=480),
        receive=ReceiveSettings(port=0, out_dir=tmp_path / "recv"),
        laptop_ip="127.0.0.1", container="h264",
    )
    stop = threading.Event()

    def on_event(event: Event) -> None:
        if isinstance(event, StateChanged) and event.state is State.RECORDING:
            threading.Timer(1.5, stop.set).start()  # (when does not matter: frames flow by then)

    result = run_recording(settings, simulated_pi(tmp_path), on_event, stop)
    assert result.state is State.INTERRUPTED
    (finished,) = result.files
    assert finished.manifest is not None
    manifest = json.loads(finished.manifest.read_text())
    sidecar = (finished.path.parent / manifest["pts_file"]).read_text().splitlines()
    # Every frame but, at most, the last one (its time may still have been in the camera's pipe).
    assert manifest["frames"] > 10 and len(sidecar) - 1 >= manifest["frames"] - 1
