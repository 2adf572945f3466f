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
from orchestrator.events import EventSink, FileFinished, Notice, PiHealthReport, State, StateChanged
from orchestrator.netcat import NetcatFlavour, build_nc_send_argv, parse_nc_failure
from orchestrator.pi.camera import TOOL_PACKAGE, TOOL_PREFERENCE, CameraProblem, build_camera_argv, parse_camera_failure
from orchestrator.pi.health import health_warnings, read_health
from orchestrator.pi.holders import describe, find_holders
from orchestrator.pi.host import Host, Process
from orchestrator.pi.scripts import (
    CAMERA_EXIT_MARK,
    NC_EXIT_MARK,
    PGID_MARK,
    PiProbe,
    build_kill_script,
    build_pipeline_script,
    build_probe_script,
    parse_probe_output,
    parse_status_line,
)
from orchestrator.settings import Backend, CameraSettings, CameraTool, RecordSettings
from orchestrator.stream.h264 import frames_for, intra_period_for
from orchestrator.stream.manifest import utc_at, utc_now
from orchestrator.stream.progress import ProgressClock
from orchestrator.stream.receiver import Receiver, check_out_dir, make_receiver
from orchestrator.stream.recovery import recover_leftovers
from orchestrator.stream.session import SessionFiles
from orchestrator.stream.viewer import ViewFeeder, require_player

# How long the pipeline may run past its own time limit before piorch stops it (camera start-up on a Pi
# takes 1-3 s; a camera that never stops by itself must not hang the run).
OVERRUN_GRACE_S = 15.0
# After the camera ends, how long the sender's nc may take to deliver the tail and close.
DRAIN_S = 10.0
# Pi health (temperature, throttling, load, memory) every few seconds: cheap, and slow to change.
HEALTH_EVERY_S = 5.0
# No data for this long shows "stalled" on the dashboard (the stall timeout itself is a setting).
STALL_SHOW_S = 2.0
# Reconnect attempts while the link is down: short, so recording resumes soon after it returns.
RESUME_BACKOFF_MAX_S = 1.0
# Resuming this close to the deadline is not worth a camera start.
MIN_RESUME_S = 1.0


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


def probe_pi(host: Host, stop: threading.Event | None = None) -> PiProbe:
    """What the Pi has (camera tools, nc, setsid); Interrupted when `stop` is set first."""
    result = host.run(build_probe_script(), timeout=20, stop=stop)
    probe = parse_probe_output(result.stdout)
    if not probe.complete:
        detail = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.exit_code}"]
        raise RemoteError(f"could not inspect {host.name} ({detail[0]})", "check that its shell is sh-compatible")
    return probe


def choose_tool(probe: PiProbe, wanted: CameraTool) -> CameraTool:
    if wanted is not CameraTool.AUTO:
        if wanted not in probe.tools:
            raise RemoteError(f"{wanted.value} is not installed on the Pi",
                              f"install {TOOL_PACKAGE[wanted]} there, or use --camera-tool auto "
                              "(`piorch bootstrap` checks the camera stack)")
        return wanted
    for tool in TOOL_PREFERENCE:
        if tool in probe.tools:
            return tool
    raise RemoteError("no camera tool (rpicam-vid, libcamera-vid, raspivid) on the Pi",
                      "install rpicam-apps there (sudo apt install rpicam-apps); `piorch bootstrap` checks the stack")


def check_pi_netcat(probe: PiProbe) -> NetcatFlavour:
    if probe.nc_flavour is None:
        raise RemoteError("nc is not installed on the Pi",
                          "install it there: sudo apt install netcat-openbsd (or run `piorch bootstrap`)")
    if probe.nc_flavour is NetcatFlavour.UNKNOWN:
        raise RemoteError("the Pi's nc is neither OpenBSD nor traditional netcat",
                          "install netcat-openbsd there: sudo apt install netcat-openbsd")
    if not probe.has_setsid:
        raise RemoteError("setsid is missing on the Pi", "install util-linux there: sudo apt install util-linux")
    return probe.nc_flavour


def _read_pgid(process: Process, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.next_line(0.2)
        if line is None:
            return None
        status = parse_status_line(line) if line else None
        if status and status[0] == PGID_MARK:
            return status[1]
    return None


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


def stop_remote(host: Host, pgid: int, on_event: EventSink) -> bool:
    """Kill the pipeline's process group and confirm it is gone (the camera is then free)."""
    try:
        result = host.run(build_kill_script(pgid), timeout=15)
    except Exception as exc:  # the link may be the very thing that failed; report, do not mask the cause
        on_event(Notice("error", f"could not stop the camera on the Pi ({exc}); it stops at its time limit"))
        return False
    if "piorch-gone" in result.stdout:
        return True
    on_event(Notice("error", f"the camera pipeline on the Pi (process group {pgid}) would not stop: "
                             f"ssh in and run `kill -9 -- -{pgid}`"))
    return False


@dataclass
class _Attempt:
    """One run of the remote pipeline, from start to whatever ended it."""

    pgid: int | None = None
    remote_exit: dict[str, int | None] = field(default_factory=lambda: {"camera": None, "nc": None,
                                                                         "pipeline": None})
    # done | stopped | overran | stalled | lost | disk
    ended: str = "done"
    # time.time() of the last byte that arrived during this attempt (where a gap starts).
    last_data_at: float = field(default_factory=time.time)
    stderr: str = ""
    freed: bool = True


class _Recorder:
    """The state one `record` keeps across attempts: receiver, clock, session files, gaps."""

    def __init__(self, settings: RecordSettings, host: Host, on_event: EventSink, stop: threading.Event,
                 reconnect: Callable[[], Host] | None) -> None:
        self.settings = settings
        self.host = host
        self.on_event = on_event
        self.stop = stop
        self.reconnect = reconnect
        self.gaps: list[dict[str, object]] = []
        self.health_seen: list[str] = []
        self.stalled_shown = False

    def run_attempt(self, script: str, clock: ProgressClock, receiver: Receiver, limit_s: float | None) -> _Attempt:
        attempt = _Attempt()
        on_event, host = self.on_event, self.host
        process = host.start(script)
        try:
            attempt.pgid = _read_pgid(process, timeout=15)
            if attempt.pgid is None:
                attempt.remote_exit["pipeline"] = process.wait(5)
                stderr = process.stderr_text()
                raise RemoteError(f"the camera pipeline did not start on {host.name} "
                                  f"({stderr.strip().splitlines()[-1] if stderr.strip() else 'no output'})",
                                  "run `piorch doctor` to check the Pi")
            deadline = None if limit_s is None else time.monotonic() + limit_s + OVERRUN_GRACE_S
            started = last_data = time.monotonic()
            seen = receiver.bytes_total
            next_health = started + 1.0
            while True:
                now = time.monotonic()
                if self.stop.is_set():
                    attempt.ended = "stopped"
                    break
                if receiver.failure:
                    attempt.ended = "disk"
                    break
                if deadline is not None and now > deadline:
                    attempt.ended = "overran"
                    on_event(Notice("error", "the camera did not stop at its time limit; piorch stopped it"))
                    break
                total = receiver.bytes_total
                if total != seen:
                    seen, last_data = total, now
                    attempt.last_data_at = time.time()
                    if self.stalled_shown:
                        self.stalled_shown = False
                        on_event(StateChanged(State.RECORDING, "data flows again"))
                quiet = now - last_data
                if quiet > STALL_SHOW_S and attempt.remote_exit["camera"] is None and not self.stalled_shown:
                    self.stalled_shown = True
                    on_event(StateChanged(State.STALLED, "no data from the Pi"))
                if quiet > self.settings.stall_timeout_s and attempt.remote_exit["camera"] is None:
                    attempt.ended = "stalled"
                    break
                line = process.next_line(0.2)
                if line is None:
                    # The channel closed. With both status marks this is the normal end; without, the SSH
                    # connection went away under us (Pi rebooted, sshd killed, link gone).
                    if attempt.remote_exit["nc"] is None:
                        attempt.ended = "lost"
                    break
                status = parse_status_line(line) if line else None
                if status and status[0] == CAMERA_EXIT_MARK:
                    attempt.remote_exit["camera"] = status[1]
                    on_event(StateChanged(State.STOPPING, "camera finished"))
                elif status and status[0] == NC_EXIT_MARK:
                    attempt.remote_exit["nc"] = status[1]
                clock.tick()
                # Health only while data flows: on a failing link the reading would only wait.
                if now >= next_health and quiet < STALL_SHOW_S:
                    next_health = now + HEALTH_EVERY_S
                    report_health(host, attempt.pgid, on_event, self.health_seen)
        finally:
            if attempt.pgid is not None and attempt.ended in ("stopped", "overran", "disk"):
                on_event(StateChanged(State.STOPPING, "stopping the camera on the Pi"))
                attempt.freed = stop_remote(host, attempt.pgid, on_event)
            if attempt.ended not in ("stalled", "lost"):
                attempt.remote_exit["pipeline"] = process.wait(5)
            attempt.stderr = process.stderr_text()
            process.close()
        return attempt

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
            if old.pgid is not None:
                # The old pipeline may still hold the camera (its TCP connection has not noticed yet).
                old.freed = stop_remote(self.host, old.pgid, self.on_event)
            return True
        return False


def run_recording(settings: RecordSettings, host: Host, on_event: EventSink, stop: threading.Event,
                  reconnect: Callable[[], Host] | None = None) -> RecordResult:
    """Record until the deadline or `stop`; never raises for a stop, only for a failure to start.

    A stalled link or a lost SSH connection is met by reconnecting (`reconnect`) and resuming into a new
    file until the same deadline, unless `settings.no_resume`; each gap is written to the session manifest.
    """
    on_event(StateChanged(State.PROBING, host.name))
    probe = probe_pi(host, stop)
    tool = choose_tool(probe, settings.camera_tool)
    flavour = check_pi_netcat(probe)
    laptop_ip = settings.laptop_ip or host.local_address()
    if not laptop_ip:
        raise RemoteError("cannot tell which laptop address the Pi should send to",
                          "pass --laptop-ip with the laptop's address on the Pi link")
    receive = settings.receive
    if receive.bind is None:
        receive = replace(receive, bind=laptop_ip)
    if receive.allowed_peer is None and receive.backend is Backend.BUILTIN:
        receive = replace(receive, allowed_peer=host.peer_address())
    camera = settings.camera
    if settings.segment_s:
        # Every segment must open on an I-frame: an intra period that divides the segment length.
        camera = replace(camera, intra_period=intra_period_for(settings.segment_s, camera.fps))
    check_out_dir(receive.out_dir)
    if not settings.force:
        check_disk_space(receive.out_dir, camera)
    recover_leftovers(receive.out_dir, on_event)
    fps = settings.camera.fps
    h264 = settings.camera.codec == "h264"
    receive = replace(receive, parse_h264=h264, split_jpeg=not h264 and settings.frames,
                      segment_frames=frames_for(settings.segment_s, fps) if settings.segment_s and h264 else 0)
    # Containers hold H.264 here; an MJPEG stream stays as it came (or as its frames).
    container = settings.container if h264 else "h264"
    session = SessionFiles(receive.out_dir, container, fps, settings.keep_raw, receive.discard_partial, on_event)
    receiver = make_receiver(receive, session.on_file, on_event, suffix=".h264" if h264 else ".mjpeg")
    viewer = None
    if settings.view:
        viewer = ViewFeeder(require_player(settings.camera.codec), on_event)
        receiver.tap = viewer.offer
    receiver.start()
    if viewer is not None:
        viewer.start()
    nc_argv = build_nc_send_argv(flavour, laptop_ip, receiver.port)
    duration_s = camera.duration_ms / 1000 or None
    clock = ProgressClock(receiver, on_event, receive.out_dir, duration_s, camera.bitrate)
    recorder = _Recorder(settings, host, on_event, stop, None if settings.no_resume else reconnect)
    end_at = None if duration_s is None else time.monotonic() + duration_s
    camera_argv = build_camera_argv(camera, tool)
    base_context = {"pi": host.name, "tool": tool.value, "settings": _settings_dict(settings)}
    attempt = _Attempt()
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
            camera_argv = build_camera_argv(run_camera, tool)
            on_event(StateChanged(State.STARTING, f"{tool.value} on {recorder.host.name}"))
            if recorder.gaps and "end_utc" not in recorder.gaps[-1]:
                recorder.gaps[-1]["end_utc"] = utc_now()
            on_event(StateChanged(State.RECORDING, f"{tool.value} -> {laptop_ip}:{receiver.port}"))
            attempt = recorder.run_attempt(build_pipeline_script(camera_argv, nc_argv), clock, receiver, limit_s)
            if attempt.ended == "done" and not busy_retried and camera_busy(attempt, tool):
                busy_retried = True
                if free_busy_camera(recorder.host, settings.kill_stale, on_event):
                    # Nothing was recorded yet: the full duration starts again now.
                    end_at = None if duration_s is None else time.monotonic() + duration_s
                    continue
                break
            if attempt.ended not in ("stalled", "lost"):
                break
            cause = (f"no data for {settings.stall_timeout_s:.0f} s" if attempt.ended == "stalled"
                     else "the SSH connection to the Pi was lost")
            on_event(Notice("warning", f"{cause}: keeping what arrived"
                                       + ("" if settings.no_resume else ", reconnecting")))
            # What arrived before the gap is finished as its own file; the next attempt opens a new one.
            receiver.cut_connections("stalled")
            # A data connection may have ended cleanly (its FIN came before the SSH loss was seen): the
            # camera did not finish it, so it is cut by the fault all the same.
            session.mark_pending("stalled")
            session.context.update(base_context)
            session.finish_pending({"remote_argv": list(camera_argv), "remote_exit": dict(attempt.remote_exit)})
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
    finally:
        # Bytes still in flight reach the laptop once the sender closes; then stop accepting.
        receiver.wait_idle(3.0 if attempt.ended != "done" else DRAIN_S)
        receiver.stop()
        if viewer is not None:
            viewer.stop()
            if viewer.dropped_bytes:
                on_event(Notice("info", f"the live view skipped {viewer.dropped_bytes} bytes to keep up"))
        clock.tick(force=True)
    interrupted = stop.is_set() or attempt.ended == "stopped"
    remote_exit = attempt.remote_exit
    if recorder.gaps and "end_utc" not in recorder.gaps[-1]:
        recorder.gaps[-1]["end_utc"] = utc_now()
    if problem is None and not interrupted:
        problem = explain_failure(attempt, tool, laptop_ip, receiver, session, recorder.host.name)
    session.context.update({"pi": host.name, "tool": tool.value, "remote_argv": list(camera_argv),
                            "settings": _settings_dict(settings), "remote_exit": dict(remote_exit),
                            "health_warnings": list(recorder.health_seen), "gaps": list(recorder.gaps)})
    files = session.finish(interrupted, problem.message if problem else None)
    state = State.INTERRUPTED if interrupted else State.FAILED if problem else State.DONE
    on_event(StateChanged(state, problem.message if problem else ""))
    return RecordResult(state, files, tool, tuple(camera_argv), problem, attempt.freed, remote_exit,
                        tuple(recorder.gaps))


def camera_busy(attempt: _Attempt, tool: CameraTool) -> bool:
    code = attempt.remote_exit["camera"]
    return code not in (0, None) and parse_camera_failure(tool, attempt.stderr, code).message.startswith("camera busy")


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
                    session: SessionFiles, pi: str) -> CameraProblem | None:
    """The one reason a finished attempt failed, in the words a user can act on; None if it did not."""
    remote_exit, stderr = attempt.remote_exit, attempt.stderr
    if attempt.ended == "disk":
        return CameraProblem(f"the laptop's disk filled up ({receiver.failure}); the camera was stopped",
                             "free space or pick another --out; every byte that arrived is kept")
    if attempt.ended == "overran":
        return CameraProblem("the camera did not stop at its time limit", "run `piorch doctor` to check the Pi")
    if attempt.ended in ("stalled", "lost"):
        return CameraProblem("the link to the Pi was lost and not resumed", "check the cable and the Pi")
    unreachable = parse_nc_failure(stderr) if remote_exit["nc"] not in (0, None) else None
    if unreachable:
        # The camera only failed because its pipe broke: the cause to report is the connection.
        return CameraProblem(
            f"the Pi could not send to the laptop at {laptop_ip}:{receiver.port} ({unreachable})",
            f"allow TCP port {receiver.port} in the laptop's firewall (e.g. sudo ufw allow {receiver.port}/tcp) "
            "and check --laptop-ip is the laptop's address on the Pi link",
        )
    if remote_exit["camera"] not in (0, None):
        return parse_camera_failure(tool, stderr, remote_exit["camera"])
    if remote_exit["camera"] is None and not session.pending:
        return CameraProblem(f"the camera pipeline on {pi} ended without reporting",
                             stderr.strip().splitlines()[-1] if stderr.strip() else "run `piorch doctor`")
    return None


def check_disk_space(out_dir: Path, camera: CameraSettings) -> None:
    """Refuse a recording the disk cannot hold: bitrate x duration + 10% (until Ctrl+C: one minute)."""
    seconds = camera.duration_ms / 1000 or 60
    needed = camera.bitrate / 8 * seconds * 1.1
    free = shutil.disk_usage(out_dir).free
    if needed > free:
        raise ReceiverError(
            f"{out_dir} has {free / 1e9:.2f} GB free but this recording needs about {needed / 1e9:.2f} GB",
            "free space, pick another --out, record for less time, or pass --force",
        )


def _settings_dict(settings: RecordSettings) -> dict[str, object]:
    camera = asdict(settings.camera)
    return {**camera, "port": settings.receive.port, "backend": settings.receive.backend.value,
            "camera_tool": settings.camera_tool.value, "laptop_ip": settings.laptop_ip,
            "segment_s": settings.segment_s, "container": settings.container, "keep_raw": settings.keep_raw}
