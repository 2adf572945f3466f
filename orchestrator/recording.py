"""`record`: camera on the Pi -> netcat -> the laptop's receiver -> UUID files with manifests.

The order of starting is: probe the Pi, start the receiver, start the remote pipeline. One finally-chain
stops them in reverse: the remote pipeline (TERM, then KILL, then check its process group is gone), the
receiver (keeping every byte that arrived), then the files are finalised.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, replace

from orchestrator.annexb import frames_for, intra_period_for
from orchestrator.camera import TOOL_PACKAGE, TOOL_PREFERENCE, CameraProblem, build_camera_argv, parse_camera_failure
from orchestrator.errors import PiorchError, RemoteError
from orchestrator.events import EventSink, FileFinished, Notice, PiHealthReport, State, StateChanged
from orchestrator.health import health_warnings, read_health
from orchestrator.host import Host, Process
from orchestrator.netcat import NetcatFlavour, build_nc_send_argv, parse_nc_failure
from orchestrator.progress import ProgressClock
from orchestrator.receiver import make_receiver
from orchestrator.recovery import recover_leftovers
from orchestrator.remote import (
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
from orchestrator.session import SessionFiles
from orchestrator.settings import CameraTool, RecordSettings
from orchestrator.viewer import ViewFeeder, require_player

# How long the pipeline may run past its own time limit before piorch stops it (camera start-up on a Pi
# takes 1-3 s; a camera that never stops by itself must not hang the run).
OVERRUN_GRACE_S = 15.0
# After the camera ends, how long the sender's nc may take to deliver the tail and close.
DRAIN_S = 10.0
# Pi health (temperature, throttling, load, memory) every few seconds: cheap, and slow to change.
HEALTH_EVERY_S = 5.0


@dataclass(frozen=True)
class RecordResult:
    state: State
    files: tuple[FileFinished, ...]
    tool: CameraTool | None
    remote_argv: tuple[str, ...]
    problem: CameraProblem | None = None
    camera_freed: bool = True
    remote_exit: dict[str, int | None] = field(default_factory=dict)


def probe_pi(host: Host) -> PiProbe:
    result = host.run(build_probe_script(), timeout=20)
    probe = parse_probe_output(result.stdout)
    if not probe.complete:
        detail = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.exit_code}"]
        raise RemoteError(f"could not inspect {host.name} ({detail[0]})", "check that its shell is sh-compatible")
    return probe


def choose_tool(probe: PiProbe, wanted: CameraTool) -> CameraTool:
    if wanted is not CameraTool.AUTO:
        if wanted not in probe.tools:
            raise RemoteError(f"{wanted.value} is not installed on the Pi",
                              f"install {TOOL_PACKAGE[wanted]} there, or use --camera-tool auto")
        return wanted
    for tool in TOOL_PREFERENCE:
        if tool in probe.tools:
            return tool
    raise RemoteError("no camera tool (rpicam-vid, libcamera-vid, raspivid) on the Pi",
                      "install rpicam-apps there (sudo apt install rpicam-apps)")


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


def run_recording(settings: RecordSettings, host: Host, on_event: EventSink, stop: threading.Event) -> RecordResult:
    """Record until the camera's time limit or `stop`; never raises for a stop, only for a failure to start."""
    on_event(StateChanged(State.PROBING, host.name))
    probe = probe_pi(host)
    tool = choose_tool(probe, settings.camera_tool)
    flavour = check_pi_netcat(probe)
    laptop_ip = settings.laptop_ip or host.local_address()
    if not laptop_ip:
        raise RemoteError("cannot tell which laptop address the Pi should send to",
                          "pass --laptop-ip with the laptop's address on the Pi link")
    receive = settings.receive
    if receive.bind is None:
        receive = replace(receive, bind=laptop_ip)
    camera = settings.camera
    if settings.segment_s:
        # Every segment must open on an I-frame: an intra period that divides the segment length.
        camera = replace(camera, intra_period=intra_period_for(settings.segment_s, camera.fps))
    camera_argv = build_camera_argv(camera, tool)
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
    duration_s = settings.camera.duration_ms / 1000 or None
    clock = ProgressClock(receiver, on_event, receive.out_dir, duration_s, settings.camera.bitrate)
    remote_exit: dict[str, int | None] = {"camera": None, "nc": None, "pipeline": None}
    health_warnings_seen: list[str] = []
    interrupted = False
    overran = False
    freed = True
    process: Process | None = None
    pgid: int | None = None
    try:
        on_event(StateChanged(State.STARTING, f"{tool.value} on {host.name}"))
        process = host.start(build_pipeline_script(camera_argv, nc_argv))
        pgid = _read_pgid(process, timeout=15)
        if pgid is None:
            remote_exit["pipeline"] = process.wait(5)
            stderr = process.stderr_text()
            raise RemoteError(f"the camera pipeline did not start on {host.name} "
                              f"({stderr.strip().splitlines()[-1] if stderr.strip() else 'no output'})",
                              "run `piorch doctor` to check the Pi")
        clock.restart()
        on_event(StateChanged(State.RECORDING, f"{tool.value} -> {laptop_ip}:{receiver.port}"))
        deadline = None if duration_s is None else time.monotonic() + duration_s + OVERRUN_GRACE_S
        next_health = time.monotonic() + 1.0
        while True:
            if stop.is_set():
                interrupted = True
                break
            if deadline is not None and time.monotonic() > deadline:
                overran = True
                on_event(Notice("error", "the camera did not stop at its time limit; piorch stopped it"))
                break
            line = process.next_line(0.2)
            if line is None:
                break  # the pipeline ended: its stdout closed
            status = parse_status_line(line) if line else None
            if status and status[0] == CAMERA_EXIT_MARK:
                remote_exit["camera"] = status[1]
                on_event(StateChanged(State.STOPPING, "camera finished"))
            elif status and status[0] == NC_EXIT_MARK:
                remote_exit["nc"] = status[1]
            clock.tick()
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + HEALTH_EVERY_S
                report_health(host, pgid, on_event, health_warnings_seen)
    finally:
        if process is not None:
            if pgid is not None and (interrupted or overran or remote_exit["nc"] is None):
                on_event(StateChanged(State.STOPPING, "stopping the camera on the Pi"))
                freed = stop_remote(host, pgid, on_event)
            remote_exit["pipeline"] = process.wait(5)
            process.close()
        # Bytes still in flight reach the laptop once the sender closes; then stop accepting.
        receiver.wait_idle(3.0 if interrupted else DRAIN_S)
        receiver.stop()
        if viewer is not None:
            viewer.stop()
            if viewer.dropped_bytes:
                on_event(Notice("info", f"the live view skipped {viewer.dropped_bytes} bytes to keep up"))
        clock.tick(force=True)
    stderr = process.stderr_text() if process is not None else ""
    camera_failed = not interrupted and remote_exit["camera"] not in (0, None)
    problem = parse_camera_failure(tool, stderr, remote_exit["camera"]) if camera_failed else None
    unreachable = parse_nc_failure(stderr) if not interrupted and remote_exit["nc"] not in (0, None) else None
    if unreachable:
        # The camera only failed because its pipe broke: the cause to report is the connection.
        problem = CameraProblem(
            f"the Pi could not send to the laptop at {laptop_ip}:{receiver.port} ({unreachable})",
            f"allow TCP port {receiver.port} in the laptop's firewall (e.g. sudo ufw allow {receiver.port}/tcp) "
            "and check --laptop-ip is the laptop's address on the Pi link",
        )
    if overran:
        problem = CameraProblem("the camera did not stop at its time limit", "run `piorch doctor` to check the Pi")
    if problem is None and not interrupted and remote_exit["camera"] is None and not session.pending:
        problem = CameraProblem(f"the camera pipeline on {host.name} ended without reporting",
                                stderr.strip().splitlines()[-1] if stderr.strip() else "run `piorch doctor`")
    session.context.update({"pi": host.name, "tool": tool.value, "remote_argv": list(camera_argv),
                            "settings": _settings_dict(settings), "remote_exit": dict(remote_exit),
                            "health_warnings": list(health_warnings_seen)})
    files = session.finish(interrupted, problem.message if problem else None)
    state = State.INTERRUPTED if interrupted else State.FAILED if problem else State.DONE
    on_event(StateChanged(state, problem.message if problem else ""))
    return RecordResult(state, files, tool, tuple(camera_argv), problem, freed, remote_exit)


def _settings_dict(settings: RecordSettings) -> dict[str, object]:
    camera = asdict(settings.camera)
    return {**camera, "port": settings.receive.port, "backend": settings.receive.backend.value,
            "camera_tool": settings.camera_tool.value, "laptop_ip": settings.laptop_ip,
            "segment_s": settings.segment_s, "container": settings.container, "keep_raw": settings.keep_raw}
