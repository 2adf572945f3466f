"""`record`: camera on the Pi -> netcat -> the laptop's receiver -> UUID files with manifests.

The order of starting is: probe the Pi, start the receiver, start the remote pipeline. One finally-chain
stops them in reverse: the remote pipeline (TERM, then KILL, then check its process group is gone), the
receiver (keeping every byte that arrived), then the files are finalised.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from orchestrator.errors import PiorchError, ReceiverError, RemoteError
from orchestrator.events import Ending, EventSink, FileFinished, Notice, PiHealthReport, State, StateChanged
from orchestrator.netcat import build_nc_send_argv
from orchestrator.pi.camera import CameraProblem, build_camera_argv, parse_camera_failure, plan_camera
from orchestrator.pi.capture import (
    DRAIN_S,
    Pipeline,
    ProbeGuard,
    RemoteExit,
    camera_stack,
    check_pi_netcat,
    choose_tool,
    describe_tools,
    explain_pipeline,
    resolve_laptop_ip,
    run_with_probe,
    stop_remote,
)
from orchestrator.pi.clock import ClockOffset, measure_clock_offset
from orchestrator.pi.health import health_warnings, read_health
from orchestrator.pi.holders import describe, find_holders
from orchestrator.pi.host import Host
from orchestrator.pi.raw import check_link, require_raw_video_tool
from orchestrator.pi.scripts import PiProbe, build_pipeline_script
from orchestrator.pi.stack import CameraStack
from orchestrator.pi.timestamps import TimestampPlan, add_timestamp_options, plan_timestamps
from orchestrator.settings import Backend, CameraSettings, CameraTool, RecordSettings
from orchestrator.stream.frame_times import FrameTimes
from orchestrator.stream.h264 import frames_for, intra_period_for
from orchestrator.stream.manifest import utc_at, utc_now
from orchestrator.stream.progress import ProgressClock
from orchestrator.stream.raw import finish_raw_video
from orchestrator.stream.receiver import Receiver, check_out_dir, make_receiver
from orchestrator.stream.recovery import recover_leftovers
from orchestrator.stream.session import SessionFiles
from orchestrator.stream.sinks import Tap
from orchestrator.stream.viewer import ViewFeeder, require_player

# How long the pipeline may run past its own time limit before piorch stops it (camera start-up on a Pi
# takes 1-3 s; a camera that never stops by itself must not hang the run).
OVERRUN_GRACE_S = 15.0
# Pi health (temperature, throttling, load, memory) every few seconds: cheap, and slow to change.
HEALTH_EVERY_S = 5.0
# No data for this long shows "stalled" on the dashboard (the stall timeout itself is a setting).
STALL_SHOW_S = 2.0
# Reconnect attempts while the link is down: short, so recording resumes soon after it returns.
RESUME_BACKOFF_MAX_S = 1.0
# Resuming this close to the deadline is not worth a camera start.
MIN_RESUME_S = 1.0
# The Pi's clock offset is measured once data flows (not before the camera starts: the first byte would
# wait for it), this long after the start.
CLOCK_AFTER_S = 0.5
# While nothing reads the video live (no --view, not the Python API's frames), the pipeline's lines are read
# at most this often: a camera's per-frame timestamp lines wait in the SSH buffers meanwhile instead of
# waking this thread, and paramiko's, once a frame (25-120 a second a Pi). What they tell (the camera's
# end, the times a finished file takes) is seen at most this much later.
FOLLOW_PACE_S = 0.1
# ... and the Pi sends them together, once its camera's clock has moved on this much (pi/scripts.py):
# one SSH message, one wake of the sshd and of paramiko's thread, for several frames.
PTS_BATCH_MS = 100


@dataclass(frozen=True)
class RecordResult:
    state: State
    files: tuple[FileFinished, ...]
    tool: CameraTool | None
    remote_argv: tuple[str, ...]
    problem: CameraProblem | None = None
    camera_freed: bool = True
    remote_exit: dict[str, int | None] = field(default_factory=dict)
    # Link outages the recording resumed across: start_utc, end_utc, cause.
    gaps: tuple[dict[str, object], ...] = ()
    # The Pi's clock minus the laptop's, and its uncertainty (half the tightest round trip); None when it
    # could not be measured.
    clock_offset: ClockOffset | None = None


def report_health(host: Host, pgid: int, on_event: EventSink, seen: list[str]) -> None:
    """One health reading over the same SSH connection; a failed reading is a warning, never a stop."""
    try:
        health = read_health(host, pgid, timeout=5)
    except PiorchError as exc:
        on_event(Notice("warning", f"could not read the Pi's health ({exc.message})"))
        return
    warnings = tuple(health_warnings(health))
    for warning in warnings:
        if warning not in seen:
            seen.append(warning)
            on_event(Notice("warning", warning))
    throttled = tuple(health.throttled_now)
    on_event(PiHealthReport(health.temp_c, throttled, health.load1, health.mem_available_mb,
                            health.pipeline_alive, warnings))


@dataclass
class _Attempt:
    """One run of the remote pipeline, and how it ended."""

    pipeline: Pipeline
    ended: Ending = Ending.DONE
    # time.time() of the last byte that arrived during this attempt (where a gap starts).
    last_data_at: float = field(default_factory=time.time)


class _Recorder:
    """The state one `record` keeps across attempts: receiver, clock, session files, gaps."""

    def __init__(self, settings: RecordSettings, host: Host, on_event: EventSink, stop: threading.Event,
                 reconnect: Callable[[], Host] | None, guard: ProbeGuard | None = None) -> None:
        self.settings = settings
        # A remembered probe's check, made by the first start (pi/capture.py run_with_probe).
        self.guard = guard
        self.host = host
        self.on_event = on_event
        self.stop = stop
        self.reconnect = reconnect
        self.gaps: list[dict[str, object]] = []
        self.health_seen: list[str] = []
        self.stalled_shown = False
        # The camera's timestamps, when the tool sends them: one run a camera start.
        self.frame_times: FrameTimes | None = None
        self.clock_offset: ClockOffset | None = None
        self.clock_measured = False
        # The least time between two reads of the pipeline's lines (FOLLOW_PACE_S); 0: each as it comes.
        self.pace_s = 0.0

    def run_attempt(self, script: str, clock: ProgressClock, receiver: Receiver, limit_s: float | None) -> _Attempt:
        attempt = _Attempt(Pipeline(self.host, script, guard=self.guard))
        pipeline, on_event = attempt.pipeline, self.on_event
        if self.stop.is_set():
            # Stopped between the probe and here: nothing is started on the Pi.
            attempt.ended = Ending.STOPPED
            return attempt
        # Before the camera starts: its connection (opened after) takes this run's timestamps.
        run = self.frame_times.begin_run() if self.frame_times is not None else None
        pipeline.on_timestamps = run.add_lines if run is not None else None
        try:
            if not pipeline.start():
                problem = pipeline.start_problem()
                raise RemoteError(problem.message, problem.fix)
            try:
                attempt.ended = self._follow(attempt, clock, receiver, limit_s)
            finally:
                if attempt.ended.piorch_stops_camera:
                    on_event(StateChanged(State.STOPPING, "stopping the camera on the Pi"))
                    pipeline.stop(on_event)
                # A broken connection has no exit status to give: waiting for one would only time out.
                pipeline.finish(wait_for_exit=not attempt.ended.link_fault)
        finally:
            if run is not None:
                # Every timestamp line has been read (the channel is closed): files waiting for theirs
                # take what there is.
                run.close()
        return attempt

    def measure_clock(self) -> None:
        """The Pi's clock offset, once a recording; a Pi whose `date` cannot say sub-seconds has none."""
        self.clock_measured = True
        try:
            # Stop-aware: Ctrl+C while it samples is not kept waiting.
            self.clock_offset = measure_clock_offset(self.host, stop=self.stop)
        except PiorchError as exc:
            self.on_event(Notice("warning", f"could not measure the Pi's clock offset ({exc.message})"))
        if self.clock_offset is None and not self.stop.is_set():
            self.on_event(Notice("info", "the Pi's clock offset could not be measured (its `date` prints no "
                                         "sub-seconds, or the link failed); the session manifest has none"))

    def _follow(self, attempt: _Attempt, clock: ProgressClock, receiver: Receiver, limit_s: float | None) -> Ending:
        """Watch the running pipeline until something ends it; say what did."""
        pipeline, on_event = attempt.pipeline, self.on_event
        deadline = None if limit_s is None else time.monotonic() + limit_s + OVERRUN_GRACE_S
        started = last_data = time.monotonic()
        seen = receiver.bytes_total
        next_health = started + 1.0
        while True:
            now = time.monotonic()
            if self.stop.is_set():
                return Ending.STOPPED
            if receiver.failure:
                return Ending.FAILED
            if deadline is not None and now > deadline:
                on_event(Notice("error", "the camera did not stop at its time limit; piorch stopped it"))
                return Ending.OVERRAN
            total = receiver.bytes_total
            if total != seen:
                seen, last_data = total, now
                attempt.last_data_at = time.time()
                if self.stalled_shown:
                    self.stalled_shown = False
                    on_event(StateChanged(State.RECORDING, "data flows again"))
            quiet = now - last_data
            if quiet > STALL_SHOW_S and not pipeline.camera_done and not self.stalled_shown:
                self.stalled_shown = True
                on_event(StateChanged(State.STALLED, "no data from the Pi"))
            if quiet > self.settings.stall_timeout_s and not pipeline.camera_done:
                return Ending.STALLED
            was_done = pipeline.camera_done
            open_still = pipeline.poll(0.2)
            # Told even when the same read saw the channel close (paced reads take several lines at once).
            if pipeline.camera_done and not was_done:
                on_event(StateChanged(State.STOPPING, "camera finished"))
            if not open_still:
                # The channel closed. With both status marks this is the normal end; without, the SSH
                # connection went away under us (Pi rebooted, sshd killed, link gone).
                return Ending.DONE if pipeline.reported_end else Ending.LOST
            clock.tick()
            if not self.clock_measured and quiet < STALL_SHOW_S and now >= started + CLOCK_AFTER_S:
                self.measure_clock()
            # Health only while data flows: on a failing link the reading would only wait.
            if now >= next_health and quiet < STALL_SHOW_S and pipeline.pgid is not None:
                next_health = now + HEALTH_EVERY_S
                report_health(self.host, pipeline.pgid, on_event, self.health_seen)
            rest = now + self.pace_s - time.monotonic()
            if rest > 0:
                # A stop ends the wait at once; the loop's top sees it.
                self.stop.wait(rest)

    def resume(self, old: _Attempt, cause: str, until: float | None) -> bool:
        """Reconnect with a short backoff until the deadline (`until`, monotonic) or a stop; free the camera
        the old run held. False when the deadline passed first: the recording ends there, as asked."""
        if self.reconnect is None:
            return False
        self.on_event(StateChanged(State.RESUMING, cause))
        delay = 0.25
        while not self.stop.is_set() and (until is None or time.monotonic() < until - MIN_RESUME_S):
            # The old connection is already broken; closing it is only tidiness.
            with contextlib.suppress(Exception):
                self.host.close()
            try:
                self.host = self.reconnect()
            except PiorchError:
                # Short waits: the target is to be back within about 3 s of the link returning.
                if self.stop.wait(delay):
                    return False
                delay = min(delay * 2, RESUME_BACKOFF_MAX_S)
                continue
            if old.pipeline.pgid is not None:
                # The old pipeline may still hold the camera (its TCP connection has not noticed yet).
                old.pipeline.freed = stop_remote(self.host, old.pipeline.pgid, self.on_event)
            return True
        return False


def run_recording(settings: RecordSettings, host: Host, on_event: EventSink, stop: threading.Event,
                  reconnect: Callable[[], Host] | None = None, tap: Tap | None = None,
                  frame_times: FrameTimes | None = None) -> RecordResult:
    """Record until the deadline or `stop`; never raises for a stop, only for a failure to start.

    A stalled link or a lost SSH connection is met by reconnecting (`reconnect`) and resuming into a new
    file until the same deadline, unless `settings.no_resume`; each gap is written to the session manifest.
    `tap` sees every received byte on the receiving thread and must return at once. `frame_times` receives
    the camera's timestamps when its tool sends them (one is made when not given); it gets no run otherwise.
    """
    on_event(StateChanged(State.PROBING, host.name))

    def record(probe: PiProbe, guard: ProbeGuard, said: EventSink) -> RecordResult:
        return _record(settings, host, probe, guard, said, stop, reconnect, tap, frame_times)

    return run_with_probe(host, describe_tools(settings.camera_tool), stop, on_event, settings.remember_pi, record)


def _record(settings: RecordSettings, host: Host, probe: PiProbe, guard: ProbeGuard, on_event: EventSink,
            stop: threading.Event, reconnect: Callable[[], Host] | None, tap: Tap | None,
            frame_times: FrameTimes | None) -> RecordResult:
    tool = choose_tool(probe, settings.camera_tool)
    if settings.camera.codec == "yuv420":
        require_raw_video_tool(tool, probe.raw_tools)
    flavour = check_pi_netcat(probe)
    stack = camera_stack(probe, tool)
    laptop_ip = resolve_laptop_ip(settings.laptop_ip, host)
    receive = settings.receive
    if receive.bind is None:
        receive = replace(receive, bind=laptop_ip)
    if receive.allowed_peer is None and receive.backend is Backend.BUILTIN:
        receive = replace(receive, allowed_peer=host.peer_address())
    camera = settings.camera
    if settings.segment_s:
        # Every segment must open on an I-frame: an intra period that divides the segment length.
        camera = replace(camera, intra_period=intra_period_for(settings.segment_s, camera.fps))
    # The tool's limits and what this Pi's build can record, refused here: nothing has started on the Pi.
    plan = plan_camera(camera, tool, stack, settings.bitrate_given)
    # Raw video: written twice when a .y4m goes beside the .yuv; refused when the Pi's link cannot carry it.
    y4m = plan.raw is not None and settings.container != "h264"
    stamps = plan_timestamps(camera, tool, stack, probe.has_pipes, settings.timestamps)
    check_out_dir(receive.out_dir)
    if not settings.force:
        check_disk_space(receive.out_dir, camera, plan.expected_bps * (2 if y4m else 1))
    if plan.raw is not None:
        check_link(host, laptop_ip, plan.raw, settings.force, on_event, stop)
        on_event(plan.raw)  # how the frames lie, before the first byte (the Python API's decoder needs it)
    for warning in plan.warnings:
        on_event(Notice("warning", warning))
    if stamps.reason:
        on_event(Notice("info", f"frame times from the frame rate, not the camera's clock: {stamps.reason}"))
    recover_leftovers(receive.out_dir, on_event, twins=False)
    fps = settings.camera.fps
    h264 = settings.camera.codec == "h264"
    receive = replace(receive, parse_h264=h264, split_jpeg=not h264 and settings.frames,
                      segment_frames=frames_for(settings.segment_s, fps) if settings.segment_s and h264 else 0,
                      raw_frame_bytes=plan.raw.frame_bytes if plan.raw else 0,
                      raw_layout={**plan.raw.describe(), "y4m": y4m} if plan.raw else None)
    # Containers hold H.264 here; an MJPEG stream stays as it came (or as its frames).
    container = settings.container if h264 else "h264"
    session = SessionFiles(receive.out_dir, container, fps, settings.keep_raw, receive.discard_partial, on_event)
    suffix = {"h264": ".h264", "mjpeg": ".mjpeg", "yuv420": ".yuv"}[settings.camera.codec]
    receiver = make_receiver(receive, session.on_file, on_event, suffix=suffix)
    viewer = None
    if settings.view:
        viewer = ViewFeeder(require_player(settings.camera.codec), on_event)
    # Every byte, as it arrives, to whoever watches it (the live view, the Python API's frames); never blocks.
    receiver.tap = join_taps(tap, viewer.offer if viewer is not None else None)
    if stamps.camera_clock:
        frame_times = frame_times or FrameTimes(fps)
        receiver.frame_times = frame_times
    else:
        frame_times = None
    receiver.start()
    if viewer is not None:
        viewer.start()
    nc_argv = build_nc_send_argv(flavour, laptop_ip, receiver.port)
    duration_s = camera.duration_ms / 1000 or None
    clock = ProgressClock(receiver, on_event, receive.out_dir, duration_s, plan.expected_bps, frame_times)
    recorder = _Recorder(settings, host, on_event, stop, None if settings.no_resume else reconnect, guard)
    recorder.frame_times = frame_times
    # Whoever reads the video live wants each frame's timestamp as soon as it comes.
    live = receiver.tap is not None
    recorder.pace_s = 0.0 if live else FOLLOW_PACE_S
    pts_batch_ms = 0 if live else PTS_BATCH_MS
    end_at = None if duration_s is None else time.monotonic() + duration_s
    camera_argv = add_timestamp_options(build_camera_argv(camera, tool, plan.options), stamps)
    base_context = {"pi": host.name, "tool": camera_argv[0], "settings": _settings_dict(settings, stack),
                    "timestamps": stamps.clock.value}
    attempt: _Attempt | None = None
    problem: CameraProblem | None = None
    busy_retried = False
    try:
        clock.restart()
        while True:
            limit_s = None if end_at is None else max(0.0, end_at - time.monotonic())
            if limit_s is not None and limit_s < MIN_RESUME_S and recorder.gaps:
                break  # resumed too close to the deadline to be worth a new camera start
            if limit_s is not None and round(limit_s * 1000) < 1:
                break  # never `-t 0` for a bounded recording: to the camera that means "for ever"
            run_camera = replace(camera, duration_ms=0 if limit_s is None else round(limit_s * 1000))
            camera_argv = add_timestamp_options(build_camera_argv(run_camera, tool, plan.options), stamps)
            on_event(StateChanged(State.STARTING, f"{camera_argv[0]} on {recorder.host.name}"))
            if recorder.gaps and "end_utc" not in recorder.gaps[-1]:
                recorder.gaps[-1]["end_utc"] = utc_now()
            on_event(StateChanged(State.RECORDING, f"{camera_argv[0]} -> {laptop_ip}:{receiver.port}"))
            script = build_script(camera_argv, nc_argv, stamps, pts_batch_ms)
            attempt = recorder.run_attempt(script, clock, receiver, limit_s)
            if attempt.ended is Ending.DONE and not busy_retried and camera_busy(attempt.pipeline, tool):
                busy_retried = True
                if free_busy_camera(recorder.host, settings.kill_stale, on_event):
                    # Nothing was recorded yet: the full duration starts again now.
                    end_at = None if duration_s is None else time.monotonic() + duration_s
                    continue
                break
            if not attempt.ended.link_fault:
                break
            cause = (f"no data for {settings.stall_timeout_s:.0f} s" if attempt.ended is Ending.STALLED
                     else "the SSH connection to the Pi was lost")
            on_event(Notice("warning", f"{cause}: keeping what arrived"
                                       + ("" if settings.no_resume else ", reconnecting")))
            # What arrived before the gap is finished as its own file; the next attempt opens a new one.
            receiver.cut_connections(Ending.STALLED)
            # A data connection may have ended cleanly (its FIN came before the SSH loss was seen): the
            # camera did not finish it, so it is cut by the fault all the same.
            session.mark_pending(Ending.STALLED)
            session.context.update(base_context)
            session.finish_pending({"remote_argv": list(camera_argv), "remote_exit": attempt.pipeline.exits.as_dict()})
            # The gap starts when data stopped, not when the stall was noticed.
            recorder.gaps.append({"start_utc": utc_at(attempt.last_data_at), "cause": cause})
            if end_at is not None and time.monotonic() >= end_at - MIN_RESUME_S:
                break
            if not recorder.resume(attempt, cause, end_at):
                reached = end_at is not None and time.monotonic() >= end_at - MIN_RESUME_S
                problem = None if stop.is_set() else CameraProblem(
                    f"the link to the Pi was lost ({cause})"
                    + (" and did not come back before the deadline" if reached else ""),
                    "check the cable; without --no-resume piorch reconnects by itself" if settings.no_resume
                    else "check the cable and the Pi, then record again")
                break
    except BaseException:
        if attempt is None:
            # The first camera start failed (or the Pi changed under a remembered probe): nothing was recorded.
            session.abandon()
        raise
    finally:
        # Bytes still in flight reach the laptop once the sender closes; then stop accepting.
        receiver.wait_idle(DRAIN_S if attempt is None or attempt.ended is Ending.DONE else 3.0)
        receiver.stop()
        if viewer is not None:
            viewer.stop()
            if viewer.dropped_bytes:
                on_event(Notice("info", f"the live view skipped {viewer.dropped_bytes} bytes to keep up"))
        clock.tick(force=True)
    interrupted = stop.is_set() or (attempt is not None and attempt.ended is Ending.STOPPED)
    remote_exit = attempt.pipeline.exits.as_dict() if attempt else RemoteExit().as_dict()
    if recorder.gaps and "end_utc" not in recorder.gaps[-1]:
        recorder.gaps[-1]["end_utc"] = utc_now()
    if problem is None and not interrupted and attempt is not None:
        problem = explain_failure(attempt, tool, laptop_ip, receiver, bool(session.pending))
    session.context.update({"pi": host.name, "tool": camera_argv[0], "remote_argv": list(camera_argv),
                            "settings": _settings_dict(settings, stack), "remote_exit": dict(remote_exit),
                            "health_warnings": list(recorder.health_seen), "gaps": list(recorder.gaps),
                            "timestamps": stamps.clock.value, **_offset_dict(recorder.clock_offset)})
    files = session.finish(interrupted, problem.message if problem else None)
    if plan.raw is not None:
        finish_raw_video(files, plan.raw, y4m, on_event)
    state = State.INTERRUPTED if interrupted else State.FAILED if problem else State.DONE
    on_event(StateChanged(state, problem.message if problem else ""))
    freed = attempt is None or attempt.pipeline.freed
    return RecordResult(state, files, tool, tuple(camera_argv), problem, freed, remote_exit,
                        tuple(recorder.gaps), recorder.clock_offset)


def build_script(camera_argv: list[str], nc_argv: list[str], stamps: TimestampPlan, pts_batch_ms: int = 0) -> str:
    return build_pipeline_script(camera_argv, nc_argv, timestamps=stamps.camera_clock, video_pipe=stamps.video_pipe,
                                 pts_batch_ms=pts_batch_ms)


def _offset_dict(offset: ClockOffset | None) -> dict[str, float | None]:
    """The session manifest's clock fields: the Pi's clock minus the laptop's, and how far off that may be."""
    return {"clock_offset_s": offset.offset_s if offset else None,
            "clock_uncertainty_s": offset.uncertainty_s if offset else None}


def join_taps(*taps: Tap | None) -> Tap | None:
    chosen = [tap for tap in taps if tap is not None]
    if len(chosen) < 2:
        return chosen[0] if chosen else None

    def both(data: bytes | memoryview) -> None:
        for tap in chosen:
            tap(data)

    return both


def camera_busy(pipeline: Pipeline, tool: CameraTool) -> bool:
    code = pipeline.exits.camera
    return code not in (0, None) and parse_camera_failure(tool, pipeline.stderr, code).message.startswith("camera busy")


def free_busy_camera(host: Host, kill_stale: bool, on_event: EventSink) -> bool:
    """Stop what holds the camera when it is an orphan of a piorch run (or --kill-stale); say who it is."""
    holders = find_holders(host)
    if not holders:
        return False
    if not kill_stale and not all(holder.from_piorch for holder in holders):
        others = [h for h in holders if not h.from_piorch]
        on_event(Notice("error", f"camera busy: held by {describe(others)}; stop it on the Pi, or pass "
                                 "--kill-stale to let piorch stop it"))
        return False
    why = "left by an earlier piorch run" if all(h.from_piorch for h in holders) else "stopped on --kill-stale"
    freed = True
    for holder in holders:
        # A real group stops whole (camera and its nc); a lone process by its pid.
        target = holder.pgid if holder.pgid > 1 else holder.pid
        freed = stop_remote(host, target, on_event) and freed
    on_event(Notice("warning", f"camera busy: {describe(holders)}, {why}; piorch stopped it"))
    return freed


def explain_failure(attempt: _Attempt, tool: CameraTool, laptop_ip: str, receiver: Receiver,
                    data_arrived: bool) -> CameraProblem | None:
    """The one reason a finished attempt failed, in the words a user can act on; None if it did not."""
    if attempt.ended is Ending.FAILED:
        return CameraProblem(f"the laptop's disk filled up ({receiver.failure}); the camera was stopped",
                             "free space or pick another --out; every byte that arrived is kept")
    if attempt.ended is Ending.OVERRAN:
        return CameraProblem("the camera did not stop at its time limit", "run `piorch doctor` to check the Pi")
    if attempt.ended.link_fault:
        return CameraProblem("the link to the Pi was lost and not resumed", "check the cable and the Pi")
    if attempt.pipeline.exits.camera is None and data_arrived:
        return None  # the stream came and ended cleanly; only the camera's own mark went missing
    return explain_pipeline(attempt.pipeline, lambda stderr, code: parse_camera_failure(tool, stderr, code),
                            laptop_ip, receiver.port)


def check_disk_space(out_dir: Path, camera: CameraSettings, expected_bps: int | None = None) -> None:
    """Refuse a recording the disk cannot hold: bit/s x duration + 10% (until Ctrl+C: one minute).

    `expected_bps`: what the stream will carry when that is not the bitrate asked for (rpicam-vid's MJPEG
    ignores it: pi/camera.py plan_camera estimates it from the size, rate and quality)."""
    seconds = camera.duration_ms / 1000 or 60
    needed = (expected_bps or camera.bitrate) / 8 * seconds * 1.1
    free = shutil.disk_usage(out_dir).free
    if needed > free:
        raise ReceiverError(
            f"{out_dir} has {free / 1e9:.2f} GB free but this recording needs about {needed / 1e9:.2f} GB",
            "free space, pick another --out, record for less time, or pass --force",
        )


def _settings_dict(settings: RecordSettings, stack: CameraStack) -> dict[str, object]:
    camera = asdict(settings.camera)
    # board, tool_version and h264_encoder say what recorded it (the Manifest has no fields of its own for them).
    return {**camera, "port": settings.receive.port, "backend": settings.receive.backend.value,
            "camera_tool": settings.camera_tool.value, "laptop_ip": settings.laptop_ip,
            "segment_s": settings.segment_s, "container": settings.container, "keep_raw": settings.keep_raw,
            "board": stack.board, "tool_version": stack.tool_version, "h264_encoder": stack.encoder.value}
