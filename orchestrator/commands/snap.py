"""`piorch snap`: stills and timelapses from the Pi's still tool, each picture in a file of its own."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from orchestrator.commands.common import finish, load
from orchestrator.commands.options import (
    AcceptNewHostKeyOption,
    BackendOption,
    ConfigOption,
    HflipOption,
    LaptopIpOption,
    OutOption,
    PiOption,
    PortOption,
    VflipOption,
)
from orchestrator.resolve import SnapChoices, build_snap_settings


def snap(
    pi: PiOption = None,
    image_format: Annotated[str, typer.Option(
        "--format", help="jpg, png, bmp or gif (gif: raspistill only); or raw pixels (with --width/--height): "
                         "yuv (I420), rgb, bgr, rgba or bgra, the camera's own bytes where its tool writes that "
                         "order, else converted here.")] = "jpg",
    count: Annotated[int, typer.Option("--count", help="How many pictures; more than 1 is a timelapse.")] = 1,
    interval: Annotated[float | None, typer.Option(
        "--interval", help="Seconds from the start of one picture to the start of the next [0].")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="File names from a template, e.g. 'img{counter:03d}' -> img001.jpg, ... (counter from 1) "
                       "[<uuid>.jpg].")] = None,
    width: Annotated[int | None, typer.Option(
        "--width", help="Width in pixels [the sensor's full resolution].")] = None,
    height: Annotated[int | None, typer.Option("--height", help="Height in pixels (with --width).")] = None,
    resize: Annotated[str | None, typer.Option(
        "--resize", help="Raw formats: scale to WIDTHxHEIGHT on the laptop (swscale, bilinear), e.g. 320x240.")] = None,
    vflip: VflipOption = None,
    hflip: HflipOption = None,
    camera_tool: Annotated[str | None, typer.Option(
        "--camera-tool", help="auto|raspistill|libcamera-still|rpicam-still [auto: the Pi's own, or the sibling "
                              "of the config's camera_tool].")] = None,
    laptop_ip: LaptopIpOption = None,
    port: PortOption = None,
    out: OutOption = None,
    backend: BackendOption = None,
    accept_new_host_key: AcceptNewHostKeyOption = False,
    config: ConfigOption = None,
) -> None:
    """Take a picture (or a timelapse) with the Pi's still camera into OUT/<uuid>.<format>.

    Over SSH, piorch runs `rpicam-still|libcamera-still|raspistill -o - | nc LAPTOP PORT` once per picture,
    in the tool's own encoding and option language, and writes a JSON manifest beside every picture.
    Ctrl+C stops between or during pictures with the camera freed on the Pi, and exits 130.
    """
    from orchestrator.commands.common import resolve_port, stop_on_signals
    from orchestrator.jobs.snap import build_image_names, refuse_existing, run_snap
    from orchestrator.pi.ssh import connect_pi

    values = load({"pi": pi, "laptop_ip": laptop_ip, "port": None if port == "auto" else port,
                   "out": None if out is None else str(out), "vflip": vflip, "hflip": hflip, "backend": backend},
                  config)
    settings, ssh = build_snap_settings(resolve_port(values, port == "auto"), SnapChoices(
        image_format=image_format, count=count, interval_s=interval, name=name, width=width, height=height,
        camera_tool=camera_tool, accept_new_host_key=accept_new_host_key, resize=resize))
    # A hostile or ambiguous --name, or one that would overwrite a picture, is refused here.
    refuse_existing(settings.receive.out_dir,
                    build_image_names(settings.name_template, settings.count, settings.still.image_format) or ())
    display = pick_snap_display(f"piorch snap: {ssh.target}", settings.count)
    with stop_on_signals() as stop:
        host = connect_pi(ssh, stop)
        try:
            with display.running():
                result = run_snap(settings, host, display, stop)
        finally:
            host.close()
    finish(result)


def pick_snap_display(title: str, count: int) -> Any:
    """A progress bar on a terminal, plain lines otherwise (pipes, CI, cron)."""
    from orchestrator.ui.log import PlainLog
    from orchestrator.ui.snap import SnapBar

    return SnapBar(title, count) if sys.stderr.isatty() else PlainLog(announce_files=False)
