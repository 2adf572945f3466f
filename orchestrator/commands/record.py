"""`piorch record`: start the camera on the Pi over SSH and receive its stream into UUID files."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from orchestrator.commands.common import (
    CONFIG_HELP,
    duration_ms,
    finish,
    load,
    pick_display,
    segment_seconds,
    stdout_console,
)
from orchestrator.config import check_pi_target

if TYPE_CHECKING:
    pass
from orchestrator.errors import PiorchError, UsageError
from orchestrator.events import State
from orchestrator.settings import Backend, CameraSettings, CameraTool, ReceiveSettings, RecordSettings, SshSettings

RESUME_CONNECT_TIMEOUT_S = 1.5


def record(
    pi: list[str] = typer.Option(None, "--pi",
                                 help="[user@]host[:port] or an ~/.ssh/config alias (config: pi); give it "
                                      "several times to record several Pis at once (config: pis)."),
    minutes: float = typer.Option(None, "--minutes", help="Record this many minutes; 0 = until Ctrl+C."),
    seconds: float = typer.Option(None, "--seconds", help="Record this many seconds; 0 = until Ctrl+C."),
    laptop_ip: str = typer.Option(None, "--laptop-ip",
                                  help="Where the Pi sends (default: config, else this end of the SSH link)."),
    port: str = typer.Option(None, "--port",
                             help="TCP port the laptop receives on [10401]; `auto`: the first free one from "
                                  "the configured port up; 0: any free port (builtin backend)."),
    out: Path = typer.Option(None, "--out", help="Folder for the files [./recv]."),
    bitrate: int = typer.Option(None, "--bitrate", help="H.264 bitrate in bit/s [16000000]."),
    width: int = typer.Option(None, "--width", help="Width in pixels [1920]."),
    height: int = typer.Option(None, "--height", help="Height in pixels [1080]."),
    fps: int = typer.Option(None, "--fps", help="Frames per second [30]."),
    vflip: bool = typer.Option(None, "--vflip/--no-vflip", help="Flip vertically."),
    hflip: bool = typer.Option(None, "--hflip/--no-hflip", help="Flip horizontally."),
    camera_tool: str = typer.Option(None, "--camera-tool",
                                    help="auto|raspivid|libcamera-vid|rpicam-vid [auto: the Pi's own]."),
    backend: str = typer.Option(None, "--backend",
                                help="Laptop receiver: builtin (Python; accepts only the Pi) or nc (local netcat; "
                                     "cannot refuse other peers) [builtin]."),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key",
                                             help="Record an unknown Pi host key in known_hosts (a changed key "
                                                  "is always refused)."),
    discard_partial: bool = typer.Option(False, "--discard-partial",
                                         help="Delete what arrived when the recording is interrupted."),
    segment: str = typer.Option(None, "--segment",
                                help="Cut into gapless files of this length (5s, 90s, 10m, 1h), at I-frames."),
    container: str = typer.Option(None, "--container",
                                  help="mp4 or mkv (remuxed with the true frame rate, no re-encoding) or h264 "
                                       "(the raw stream) [mp4]."),
    keep_raw: bool = typer.Option(False, "--keep-raw", help="Keep the raw .h264 beside the mp4/mkv."),
    view: bool = typer.Option(False, "--view",
                              help="Show the live picture in mpv (else ffplay), fed from the received stream."),
    codec: str = typer.Option("h264", "--codec", help="h264, or mjpeg (JPEG images back to back)."),
    frames: bool = typer.Option(False, "--frames",
                                help="With --codec mjpeg: one file a frame, OUT/<uuid>/frame_000001.jpg, ..."),
    stall_timeout: float = typer.Option(10.0, "--stall-timeout",
                                        help="Seconds without data before the link counts as lost."),
    no_resume: bool = typer.Option(False, "--no-resume",
                                   help="Stop when the link is lost instead of reconnecting and resuming "
                                        "into a new file until the deadline."),
    force: bool = typer.Option(False, "--force", help="Start even when the disk cannot hold the recording."),
    kill_stale: bool = typer.Option(False, "--kill-stale",
                                    help="Camera busy: stop whatever holds it (an orphan of an earlier piorch "
                                         "run is always stopped)."),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Record from the Pi's camera into OUT/<uuid>.mp4 (or .mkv, .h264) with a JSON manifest beside it.

    Over SSH, piorch starts `camera | nc LAPTOP PORT` on the Pi in a process session of its own and
    receives the stream here. At the time limit the camera stops by itself and piorch exits 0. Ctrl+C
    stops the whole pipeline on the Pi (the camera is free again), keeps what arrived as `interrupted`
    and exits 130. A lost link is resumed into a new file until the same deadline (gaps in the session
    manifest); several --pi record together, each into OUT/<pi>/.
    """

    from orchestrator.commands.common import stop_on_signals
    from orchestrator.jobs.record import run_recording
    from orchestrator.pi.ssh import SshHost

    several = pi is not None and len(pi) > 1
    for target in pi or []:
        if (problem := check_pi_target(target)) is not None:
            raise UsageError(f"--pi {target!r} {problem}", "give [user@]host[:port] or an alias")
    settings, ssh = build_record_settings(
        {"pi": None if several or not pi else pi[0], "laptop_ip": laptop_ip,
         "port": None if port in (None, "auto") else port,
         "out": None if out is None else str(out), "bitrate": bitrate, "width": width, "height": height,
         "fps": fps, "vflip": vflip, "hflip": hflip,
         "camera_tool": camera_tool, "backend": backend, "container": container},
        config, duration_ms(minutes, seconds), accept_new_host_key, discard_partial,
        segment_seconds(segment), keep_raw, view, codec, frames, targets_given=several,
    )
    if stall_timeout < 1 or stall_timeout > 3600:
        raise UsageError(f"--stall-timeout {stall_timeout:g} is out of range", "give 1 to 3600 seconds")
    settings = replace(settings, force=force, stall_timeout_s=stall_timeout, no_resume=no_resume,
                       kill_stale=kill_stale)
    if port == "auto":
        from orchestrator.stream.receiver import find_free_port

        settings = replace(settings, receive=replace(
            settings.receive, port=find_free_port(settings.laptop_ip, settings.receive.port or 10401)))
    if settings.view:
        from orchestrator.stream.viewer import require_player

        require_player()  # said before anything starts on the Pi
    targets = list(pi) if several else [ssh.target] if ssh.target else ssh_targets_from_config(config)
    if len(targets) > 1:
        if settings.view:
            raise UsageError("--view shows one Pi", "record that Pi alone to watch it")
        record_fleet(targets, settings, ssh, config)
        return
    display = pick_display(f"piorch record: {ssh.target}")
    def reconnect() -> SshHost:
        # While the link is down, short connection attempts: recording resumes soon after it returns.
        return SshHost.connect(replace(ssh, connect_timeout=RESUME_CONNECT_TIMEOUT_S), stop)

    with stop_on_signals() as stop:
        host = SshHost.connect(ssh, stop)
        try:
            with display.running():
                result = run_recording(settings, host, display, stop, reconnect)
        finally:
            host.close()
    finish(result)


def ssh_targets_from_config(config_file: Path | None) -> list[str]:
    return list(load({}, config_file)["pis"])


def record_fleet(targets: list[str], settings: RecordSettings, ssh: SshSettings,
                 config_file: Path | None = None) -> None:
    """Several Pis: one dashboard row each, one summary; exit 0 only when every Pi succeeded."""
    from orchestrator.commands.common import fleet_display, stop_on_signals
    from orchestrator.config import parse_pi_ports
    from orchestrator.jobs.fleet import plan_fleet, run_fleet
    from orchestrator.pi.ssh import SshHost
    from orchestrator.ui.summary import render_summary

    plan = plan_fleet(targets, settings, parse_pi_ports(load({}, config_file)["pi_ports"]))
    display = fleet_display(targets)
    with stop_on_signals() as stop, display.running():
        result = run_fleet(plan, lambda target: SshHost.connect(replace(ssh, target=target), stop), display, stop)
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


def build_record_settings(
    flags: dict[str, object], config_file: Path | None, duration: int, accept_new_host_key: bool,
    discard_partial: bool, segment_s: float = 0.0, keep_raw: bool = False, view: bool = False,
    codec: str = "h264", frames: bool = False, targets_given: bool = False,
) -> tuple[RecordSettings, SshSettings]:
    if codec not in ("h264", "mjpeg"):
        raise UsageError(f"unknown --codec {codec!r}", "use h264 or mjpeg")
    if frames and codec != "mjpeg":
        raise UsageError("--frames splits MJPEG only", "add --codec mjpeg")
    if segment_s and codec != "h264":
        raise UsageError("--segment cuts H.264 at I-frames", "drop --segment, or record with --codec h264")
    config = load(flags, config_file)
    if not (config["pi"] or config["pis"] or targets_given):
        raise UsageError("no Pi given", "pass --pi HOST or set `pi` in the config (piorch setup-link does)")
    backend = Backend(config["backend"])
    if backend is Backend.NC and config["port"] == 0:
        raise UsageError("--port 0 needs the builtin backend", "give a port number with --backend nc")
    settings = RecordSettings(
        camera=CameraSettings(
            bitrate=config["bitrate"], width=config["width"], height=config["height"], fps=config["fps"],
            vflip=config["vflip"], hflip=config["hflip"], duration_ms=duration, codec=codec,
        ),
        receive=ReceiveSettings(port=config["port"], out_dir=Path(config["out"]).expanduser(), backend=backend,
                                discard_partial=discard_partial),
        camera_tool=CameraTool(config["camera_tool"]),
        laptop_ip=config["laptop_ip"] or None,
        segment_s=segment_s, container=config["container"], keep_raw=keep_raw, view=view, frames=frames,
    )
    if keep_raw and (settings.container == "h264" or codec == "mjpeg"):
        raise UsageError("--keep-raw with --container h264", "the raw stream is the file already: drop --keep-raw")
    ssh = SshSettings(
        target=config["pi"], ssh_config=Path(config["ssh_config"]).expanduser() if config["ssh_config"] else None,
        accept_new_host_key=accept_new_host_key, connect_timeout=config["connect_timeout"],
    )
    return settings, ssh


