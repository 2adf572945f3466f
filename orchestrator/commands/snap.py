"""`piorch snap`: stills and timelapses from the Pi's still tool, each picture in a file of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from orchestrator.commands.common import CONFIG_HELP, finish
from orchestrator.commands.record import build_record_settings
from orchestrator.errors import UsageError
from orchestrator.settings import ImageFormat, SnapSettings, SshSettings, StillSettings, StillTool

MAX_INTERVAL_S = 7 * 24 * 3600


def snap(
    pi: str = typer.Option(None, "--pi", help="[user@]host[:port] or an ~/.ssh/config alias (config: pi)."),
    image_format: str = typer.Option("jpg", "--format", help="jpg, png, bmp or gif (gif: raspistill only)."),
    count: int = typer.Option(1, "--count", help="How many pictures; more than 1 is a timelapse."),
    interval: float = typer.Option(None, "--interval",
                                   help="Seconds from the start of one picture to the start of the next [0]."),
    name: str = typer.Option(None, "--name",
                             help="File names from a template, e.g. 'img{counter:03d}' -> img001.jpg, ... "
                                  "(counter from 1) [<uuid>.jpg]."),
    width: int = typer.Option(None, "--width", help="Width in pixels [the sensor's full resolution]."),
    height: int = typer.Option(None, "--height", help="Height in pixels (with --width)."),
    vflip: bool = typer.Option(None, "--vflip/--no-vflip", help="Flip vertically (config: vflip)."),
    hflip: bool = typer.Option(None, "--hflip/--no-hflip", help="Flip horizontally (config: hflip)."),
    camera_tool: str = typer.Option(None, "--camera-tool",
                                    help="auto|raspistill|libcamera-still|rpicam-still [auto: the Pi's own, "
                                         "or the sibling of the config's camera_tool]."),
    laptop_ip: str = typer.Option(None, "--laptop-ip",
                                  help="Where the Pi sends (default: config, else this end of the SSH link)."),
    port: int = typer.Option(None, "--port", help="TCP port the laptop receives on [10401]."),
    out: Path = typer.Option(None, "--out", help="Folder for the pictures [./recv]."),
    backend: str = typer.Option(None, "--backend", help="Laptop receiver: builtin or nc [builtin]."),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key",
                                             help="Record an unknown Pi host key in known_hosts."),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Take a picture (or a timelapse) with the Pi's still camera into OUT/<uuid>.<format>.

    Over SSH, piorch runs `rpicam-still|libcamera-still|raspistill -o - | nc LAPTOP PORT` once per picture,
    in the tool's own encoding and option language, and writes a JSON manifest beside every picture.
    Ctrl+C stops between or during pictures with the camera freed on the Pi, and exits 130.
    """
    from orchestrator.commands.common import stop_on_signals
    from orchestrator.jobs.snap import run_snap
    from orchestrator.pi.ssh import SshHost

    settings, ssh = build_snap_settings(
        {"pi": pi, "laptop_ip": laptop_ip, "port": port, "out": None if out is None else str(out),
         "vflip": vflip, "hflip": hflip, "backend": backend},
        config, accept_new_host_key, image_format=image_format, count=count, interval=interval, name=name,
        width=width, height=height, camera_tool=camera_tool,
    )
    display = pick_snap_display(f"piorch snap: {ssh.target}", settings.count)
    with stop_on_signals() as stop:
        host = SshHost.connect(ssh, stop)
        try:
            with display.running():
                result = run_snap(settings, host, display, stop)
        finally:
            host.close()
    finish(result)


def build_snap_settings(
    flags: dict[str, object], config_file: Path | None, accept_new_host_key: bool, *, image_format: str,
    count: int, interval: float | None, name: str | None, width: int | None, height: int | None,
    camera_tool: str | None,
) -> tuple[SnapSettings, SshSettings]:
    """Check every snap option before anything starts, so bad input creates nothing."""
    from orchestrator.jobs.snap import MAX_COUNT, STILL_SIBLING, build_image_names, refuse_existing

    # The keys snap shares with record (Pi, link, receiver, flips) come through the same four layers.
    record, ssh = build_record_settings(flags, config_file, 0, accept_new_host_key, False)
    try:
        fmt = ImageFormat(image_format.lower())
    except ValueError:
        raise UsageError(f"--format {image_format!r} is not an image format piorch takes",
                         "use jpg, png, bmp or gif") from None
    if not 1 <= count <= MAX_COUNT:
        raise UsageError(f"--count {count} is out of range", f"give 1 up to {MAX_COUNT}")
    if interval is not None and count == 1:
        raise UsageError("--interval without --count", "add --count N for a timelapse of N pictures")
    if interval is not None and not 0 <= interval <= MAX_INTERVAL_S:
        raise UsageError(f"--interval {interval:g} is out of range", f"give 0 up to {MAX_INTERVAL_S} seconds")
    if (width is None) != (height is None):
        raise UsageError("--width and --height go together", "give both, or neither for the full resolution")
    for option, value in (("--width", width), ("--height", height)):
        if value is not None and not 16 <= value <= 16384:
            raise UsageError(f"{option} {value} is out of range", "give 16 up to 16384 pixels")
    if camera_tool is None:
        tool = STILL_SIBLING[record.camera_tool]
    else:
        try:
            tool = StillTool(camera_tool)
        except ValueError:
            raise UsageError(f"--camera-tool {camera_tool!r} is not a still tool",
                             "use auto, raspistill, libcamera-still or rpicam-still") from None
    # A hostile or ambiguous --name, or one that would overwrite a picture, is refused here.
    refuse_existing(record.receive.out_dir, build_image_names(name, count, fmt) or ())
    still = StillSettings(image_format=fmt, width=width, height=height, vflip=record.camera.vflip,
                          hflip=record.camera.hflip)
    return SnapSettings(still=still, receive=record.receive, still_tool=tool, laptop_ip=record.laptop_ip,
                        count=count, interval_s=interval or 0.0, name_template=name), ssh


def pick_snap_display(title: str, count: int) -> Any:
    """A progress bar on a terminal, plain lines otherwise (pipes, CI, cron)."""
    from orchestrator.ui.log import PlainLog
    from orchestrator.ui.snap import SnapBar

    return SnapBar(title, count) if sys.stderr.isatty() else PlainLog(announce_files=False)
