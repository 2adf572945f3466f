"""`piorch demo`: the whole `record` job against a simulated Pi on this laptop (no hardware, sshd or root).

The simulated Pi is the local `Host` with a camera simulator first on its PATH: it speaks raspivid's real
option language and sends a real H.264 stream (a clip shipped with piorch, looped and paced at the
bitrate) through the laptop's own netcat, exactly as a Pi would.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import typer

from orchestrator.commands.common import finish, pick_display
from orchestrator.errors import UsageError
from orchestrator.resolve import segment_seconds
from orchestrator.settings import Backend, CameraSettings, CameraTool, ReceiveSettings, RecordSettings


def demo(
    seconds: float = typer.Option(10.0, "--seconds", help="Length of the demo recording; 0 = until Ctrl+C."),
    out: Path = typer.Option(Path("recv"), "--out", help="Folder for the files."),
    bitrate: int = typer.Option(16_000_000, "--bitrate", help="Bitrate the simulated camera sends, bit/s."),
    backend: str = typer.Option("builtin", "--backend", help="Laptop receiver: builtin or nc."),
    camera_tool: str = typer.Option("raspivid", "--camera-tool",
                                    help="Which tool the simulated Pi has: raspivid, libcamera-vid, rpicam-vid."),
    segment: str = typer.Option(None, "--segment", help="Cut into gapless files of this length (e.g. 5s)."),
    container: str = typer.Option("mp4", "--container", help="mp4, mkv or h264 (raw)."),
    view: bool = typer.Option(False, "--view", help="Show the live picture in mpv or ffplay."),
) -> None:
    """Record from a built-in simulated Pi, with the live dashboard, into OUT/<uuid>.mp4 (or .mkv, .h264)."""
    from orchestrator.commands.common import stop_on_signals
    from orchestrator.config import check_bitrate
    from orchestrator.jobs.record import run_recording
    from orchestrator.pi.host import LocalHost
    from orchestrator.sim.stand_in import install_stand_ins
    from orchestrator.stream.receiver import find_free_port

    if seconds < 0 or seconds > 24 * 3600:
        raise UsageError(f"--seconds {seconds:g} is out of range", "give 0 (until Ctrl+C) up to 86400")
    if (problem := check_bitrate(bitrate)) is not None:
        raise UsageError(f"--bitrate {problem}", "for example --bitrate 16000000")
    try:
        tool = CameraTool(camera_tool)
        chosen_backend = Backend(backend)
    except ValueError:
        raise UsageError(f"unknown --camera-tool {camera_tool!r} or --backend {backend!r}",
                         "camera tools: raspivid, libcamera-vid, rpicam-vid; backends: builtin, nc") from None
    if tool is CameraTool.AUTO:
        tool = CameraTool.RASPIVID
    if container not in ("mp4", "mkv", "h264"):
        raise UsageError(f"unknown --container {container!r}", "use mp4, mkv or h264")
    settings = RecordSettings(
        # The shipped clip is 640x360 at 25 fps; the simulator checks the options like the real tool.
        camera=CameraSettings(bitrate=bitrate, width=640, height=360, fps=25, duration_ms=round(seconds * 1000)),
        # nc needs a number up front; the builtin receiver takes port 0 and reports what it got.
        receive=ReceiveSettings(port=0 if chosen_backend is Backend.BUILTIN else find_free_port("127.0.0.1", 10401),
                                out_dir=out.expanduser(),
                                backend=chosen_backend, bind="127.0.0.1"),
        camera_tool=tool,
        laptop_ip="127.0.0.1",
        segment_s=segment_seconds(segment), container=container, view=view,
    )
    if view:
        from orchestrator.stream.viewer import require_player

        require_player()  # said before anything starts
    display = pick_display("piorch demo: simulated Pi")
    with tempfile.TemporaryDirectory(prefix="piorch-demo-") as scratch:
        bin_dir = Path(scratch) / "bin"
        bin_dir.mkdir()
        # The lock file stands for the camera: a second simulator run while this one records finds it busy.
        install_stand_ins(bin_dir, (tool.value,), extra_env={"PIORCH_SIM_LOCK": str(Path(scratch) / "camera.lock")})
        if shutil.which("nc") is None:
            install_stand_ins(bin_dir, ("nc",))
        host = LocalHost("simulated-pi", path_prepend=bin_dir)
        with stop_on_signals() as stop, display.running():
            result = run_recording(settings, host, display, stop)
    finish(result)
