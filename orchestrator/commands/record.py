"""`piorch record`: start the camera on the Pi over SSH and receive its stream into UUID files."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated

import typer

from orchestrator.commands.common import finish, load, pick_display, stdout_console
from orchestrator.commands.options import (
    AcceptNewHostKeyOption,
    BackendOption,
    ConfigOption,
    HflipOption,
    LaptopIpOption,
    OutOption,
    PortOption,
    VflipOption,
)
from orchestrator.config import Config, check_pi_target
from orchestrator.errors import PiorchError, UsageError
from orchestrator.resolve import RecordChoices, build_record_settings, duration_ms, plan_fleet, segment_seconds
from orchestrator.settings import RecordSettings, SshSettings

RESUME_CONNECT_TIMEOUT_S = 1.5


def record(
    pi: Annotated[list[str] | None, typer.Option(
        "--pi", help="[user@]host[:port] or an ~/.ssh/config alias (config: pi); give it several times to "
                     "record several Pis at once (config: pis).")] = None,
    minutes: Annotated[float | None, typer.Option(
        "--minutes", help="Record this many minutes; 0 = until Ctrl+C.")] = None,
    seconds: Annotated[float | None, typer.Option(
        "--seconds", help="Record this many seconds; 0 = until Ctrl+C.")] = None,
    laptop_ip: LaptopIpOption = None,
    port: PortOption = None,
    out: OutOption = None,
    bitrate: Annotated[int | None, typer.Option(
        "--bitrate", help="H.264 bitrate in bit/s, up to 62500000 [16000000]. With --codec mjpeg: raspivid's "
                          "MJPEG takes up to 25000000; rpicam-vid's ignores it (quality only).")] = None,
    width: Annotated[int | None, typer.Option("--width", help="Width in pixels [1920].")] = None,
    height: Annotated[int | None, typer.Option("--height", help="Height in pixels [1080].")] = None,
    fps: Annotated[int | None, typer.Option("--fps", help="Frames per second [30].")] = None,
    vflip: VflipOption = None,
    hflip: HflipOption = None,
    camera_tool: Annotated[str | None, typer.Option(
        "--camera-tool", help="auto|raspivid|libcamera-vid|rpicam-vid [auto: the Pi's own].")] = None,
    backend: BackendOption = None,
    accept_new_host_key: AcceptNewHostKeyOption = False,
    discard_partial: Annotated[bool, typer.Option(
        "--discard-partial", help="Delete what arrived when the recording is interrupted.")] = False,
    segment: Annotated[str | None, typer.Option(
        "--segment", help="Cut into gapless files of this length (5s, 90s, 10m, 1h), at I-frames.")] = None,
    container: Annotated[str | None, typer.Option(
        "--container", help="mp4 or mkv (remuxed with the true frame rate, no re-encoding) or h264 "
                            "(the raw stream) [mp4]. With --codec yuv420: a .y4m beside the .yuv, unless "
                            "h264.")] = None,
    keep_raw: Annotated[bool, typer.Option("--keep-raw", help="Keep the raw .h264 beside the mp4/mkv.")] = False,
    view: Annotated[bool, typer.Option(
        "--view", help="Show the live picture in mpv (else ffplay), fed from the received stream.")] = False,
    codec: Annotated[str, typer.Option(
        "--codec", help="h264, mjpeg (JPEG images back to back) or yuv420 (raw I420 frames, byte for byte: "
                        "OUT/<uuid>.yuv, and a .y4m that players open).")] = "h264",
    frames: Annotated[bool, typer.Option(
        "--frames", help="With --codec mjpeg: one file a frame, OUT/<uuid>/frame_000001.jpg, ...")] = False,
    stall_timeout: Annotated[float, typer.Option(
        "--stall-timeout", help="Seconds without data before the link counts as lost.")] = 10.0,
    no_resume: Annotated[bool, typer.Option(
        "--no-resume", help="Stop when the link is lost instead of reconnecting and resuming into a new file "
                            "until the deadline.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Start even when the disk cannot hold the recording.")] = False,
    kill_stale: Annotated[bool, typer.Option(
        "--kill-stale", help="Camera busy: stop whatever holds it (an orphan of an earlier piorch run is always "
                             "stopped).")] = False,
    timestamps: Annotated[bool | None, typer.Option(
        "--timestamps/--no-timestamps", help="Ask the camera for its own frame timestamps (.pts files, true "
                                             "frame times, dropped frames counted) where its tool can send them "
                                             "[on] (config: timestamps).")] = None,
    config: ConfigOption = None,
) -> None:
    """Record from the Pi's camera into OUT/<uuid>.mp4 (or .mkv, .h264) with a JSON manifest beside it.

    Over SSH, piorch starts `camera | nc LAPTOP PORT` on the Pi in a process session of its own and
    receives the stream here. At the time limit the camera stops by itself and piorch exits 0. Ctrl+C
    stops the whole pipeline on the Pi (the camera is free again), keeps what arrived as `interrupted`
    and exits 130. A lost link is resumed into a new file until the same deadline (gaps in the session
    manifest); several --pi record together, each into OUT/<pi>/.
    """
    from orchestrator.commands.common import resolve_port, stop_on_signals
    from orchestrator.pi.host import Host
    from orchestrator.pi.ssh import PendingHost, connect_pi

    several = pi is not None and len(pi) > 1
    for target in pi or []:
        if (problem := check_pi_target(target)) is not None:
            raise UsageError(f"--pi {target!r} {problem}", "give [user@]host[:port] or an alias")
    values = load({"pi": None if several or not pi else pi[0], "laptop_ip": laptop_ip,
                   "port": None if port == "auto" else port, "out": None if out is None else str(out),
                   "bitrate": bitrate, "width": width, "height": height, "fps": fps, "vflip": vflip,
                   "hflip": hflip, "camera_tool": camera_tool, "backend": backend, "container": container,
                   "timestamps": timestamps}, config)
    choices = RecordChoices(
        duration_ms=duration_ms(minutes, seconds), segment_s=segment_seconds(segment), codec=codec, frames=frames,
        keep_raw=keep_raw, view=view, discard_partial=discard_partial, accept_new_host_key=accept_new_host_key,
        stall_timeout_s=stall_timeout, no_resume=no_resume, force=force, kill_stale=kill_stale,
        targets_given=several,
    )
    settings, ssh = build_record_settings(resolve_port(values, port == "auto"), choices)
    if settings.view:
        from orchestrator.stream.viewer import require_player

        require_player()  # said before anything starts on the Pi
    targets = list(pi or []) if several else [ssh.target] if ssh.target else list(values["pis"])
    if len(targets) > 1:
        if settings.view:
            raise UsageError("--view shows one Pi", "record that Pi alone to watch it")
        record_fleet(targets, settings, ssh, values)
        return
    def reconnect() -> Host:
        # While the link is down, short connection attempts: recording resumes soon after it returns.
        return connect_pi(replace(ssh, connect_timeout=RESUME_CONNECT_TIMEOUT_S), stop, verify=True)

    with stop_on_signals() as stop:
        # The Pi answers over the network while this process imports the recorder and builds the display.
        pending = PendingHost(ssh, stop, learn_addresses=settings.needs_link_addresses)
        try:
            from orchestrator.jobs.record import run_recording

            display = pick_display(f"piorch record: {ssh.target}")
            host = pending.result()
        except BaseException:
            pending.abandon()
            raise
        try:
            with display.running():
                result = run_recording(settings, host, display, stop, reconnect)
        finally:
            host.close()
    finish(result)


def record_fleet(targets: list[str], settings: RecordSettings, ssh: SshSettings, values: Config) -> None:
    """Several Pis: one dashboard row each, one summary; exit 0 only when every Pi succeeded."""
    from orchestrator.commands.common import stop_on_signals
    from orchestrator.config import parse_pi_ports
    from orchestrator.pi.mux import may_have_master
    from orchestrator.pi.ssh import PendingHost, connect_pi

    plan = plan_fleet(targets, settings, parse_pi_ports(values["pi_ports"]))
    with stop_on_signals() as stop:
        # Every Pi answers over the network while this process imports the recorder and builds the display.
        pending: dict[str, PendingHost] = {}
        try:
            master_possible = may_have_master(ssh)  # the same for every Pi: the files, not the target
            for target, pi_settings in plan:
                pending[target] = PendingHost(replace(ssh, target=target), stop, master_possible, hold=True,
                                              learn_addresses=pi_settings.needs_link_addresses)
            from orchestrator.commands.common import fleet_display
            from orchestrator.jobs.fleet import run_fleet

            display = fleet_display(targets)
            logins = list(pending.values())

            def cut_logins() -> None:  # on Ctrl+C: nobody waits in a login that run_fleet's threads own
                for login in logins:
                    login.interrupt_login()

            with display.running():
                # Each Pi records on the thread that logged in to it (PendingHost.continue_with).
                result = run_fleet(plan, lambda target: pending.pop(target).result(), display, stop,
                                   lambda target: connect_pi(replace(ssh, target=target), stop, verify=True),
                                   start=lambda target, work: pending[target].continue_with(work, f"piorch-{target}"),
                                   on_stop=cut_logins)
        finally:
            for waiting in list(pending.values()):  # those no recording took (each takes its own at its start)
                waiting.abandon()
    from orchestrator.events import State
    from orchestrator.ui.summary import render_summary

    if result.files:
        render_summary(result.files, stdout_console())
    failed = [o for o in result.outcomes if o.state is State.FAILED]
    for outcome in failed:
        problem = outcome.result.problem if outcome.result and outcome.result.problem else None
        message = problem.message if problem else outcome.error
        fix = problem.fix if problem else outcome.fix
        print(f"piorch: {outcome.pi}: {message}{': ' + fix if fix else ''}", file=sys.stderr)
    if any(o.state is State.INTERRUPTED for o in result.outcomes):
        raise typer.Exit(130)
    if failed:
        raise PiorchError(f"{len(failed)} of {len(result.outcomes)} Pis failed", "see the lines above")
