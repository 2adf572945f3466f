"""`snap`'s pure parts (command lines, `--name` templates, image checks) and the still simulator.

The command lines are checked twice: against literal tables, and by the simulator's strict parser of each
tool's real option language, so a spelling the real tool would refuse cannot pass.
"""

from __future__ import annotations

import os
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.errors import RemoteError, UsageError
from orchestrator.events import FileFinished, FileStatus, State
from orchestrator.jobs.snap import (
    FIRST_COUNTER,
    SnapProgress,
    build_image_names,
    check_image_bytes,
    check_image_name,
    place_image,
    read_image_ends,
    refuse_existing,
    render_image_name,
    run_snap,
)
from orchestrator.pi.host import LocalHost
from orchestrator.pi.scripts import PiProbe, build_probe_script, parse_probe_output
from orchestrator.pi.still import build_still_argv, choose_still_tool
from orchestrator.settings import (
    Backend,
    CameraTool,
    ImageFormat,
    ReceiveSettings,
    SnapSettings,
    StillSettings,
    StillTool,
)
from orchestrator.sim import still as sim_still
from orchestrator.sim import still_options
from orchestrator.sim.options import SimUsageError
from orchestrator.sim.stand_in import SIM_STILL_TOOLS, install_stand_ins
from tests.system_tools import require_reference, require_tool

JPG, PNG, BMP, GIF = ImageFormat.JPG, ImageFormat.PNG, ImageFormat.BMP, ImageFormat.GIF
SAMPLES = Path(sim_still.__file__).with_name("stills")
DEADLINE_S = 20


# ------------------------------------------------------------------------------------------ command lines


@pytest.mark.parametrize(
    ("tool", "still", "expected"),
    [
        (StillTool.RASPISTILL, StillSettings(),
         ["raspistill", "-o", "-", "-e", "jpg", "-t", "1000", "-n"]),
        (StillTool.RASPISTILL, StillSettings(GIF, 1024, 768, vflip=True, hflip=True, settle_ms=2000),
         ["raspistill", "-o", "-", "-e", "gif", "-t", "2000", "-n", "-w", "1024", "-h", "768", "-vf", "-hf"]),
        (StillTool.RASPISTILL, StillSettings(BMP, hflip=True),
         ["raspistill", "-o", "-", "-e", "bmp", "-t", "1000", "-n", "-hf"]),
        (StillTool.RPICAM_STILL, StillSettings(PNG),
         ["rpicam-still", "-o", "-", "--encoding", "png", "-t", "1000", "-n"]),
        (StillTool.RPICAM_STILL, StillSettings(JPG, 4056, 3040, vflip=True),
         ["rpicam-still", "-o", "-", "--encoding", "jpg", "-t", "1000", "-n", "--width", "4056", "--height", "3040",
          "--vflip"]),
        (StillTool.LIBCAMERA_STILL, StillSettings(BMP, 640, 480, vflip=True, hflip=True),
         ["libcamera-still", "-o", "-", "--encoding", "bmp", "-t", "1000", "-n", "--width", "640", "--height", "480",
          "--vflip", "--hflip"]),
    ],
)
def test_still_argv(tool: StillTool, still: StillSettings, expected: list[str]) -> None:
    assert build_still_argv(still, tool) == expected


VALID = [(tool, fmt) for tool in (StillTool.RASPISTILL, StillTool.RPICAM_STILL, StillTool.LIBCAMERA_STILL)
         for fmt in ImageFormat if fmt is not GIF or tool is StillTool.RASPISTILL]


@pytest.mark.parametrize(("tool", "fmt"), VALID)
def test_every_argv_is_accepted_by_the_tools_own_option_language(tool: StillTool, fmt: ImageFormat) -> None:
    still = StillSettings(fmt, 800, 600, vflip=True, hflip=True, settle_ms=1500)
    argv = build_still_argv(still, tool)
    parsed = still_options.parse_still_args(tool.value, argv[1:])
    assert (parsed.encoding, parsed.output, parsed.timeout_ms) == (fmt.value, "-", 1500)
    assert (parsed.width, parsed.height, parsed.vflip, parsed.hflip, parsed.nopreview) == (800, 600, True, True, True)


def test_argv_refuses_what_the_tool_cannot_do() -> None:
    with pytest.raises(ValueError):
        build_still_argv(StillSettings(), StillTool.AUTO)
    for tool in (StillTool.RPICAM_STILL, StillTool.LIBCAMERA_STILL):
        with pytest.raises(ValueError):
            build_still_argv(StillSettings(GIF), tool)
    # What piorch must not send: raspistill's -h is height and rpicam's -h is help.
    with pytest.raises(SimUsageError):
        still_options.parse_still_args("rpicam-still", ["--encoding", "gif"])
    assert still_options.parse_still_args("rpicam-still", ["-h", "480"]).show_help


def test_probe_finds_still_tools_and_keeps_video_tools() -> None:
    assert "raspistill" in build_probe_script() and "rpicam-still" in build_probe_script()
    probe = parse_probe_output("piorch-tool rpicam-vid /usr/bin/rpicam-vid\n"
                               "piorch-tool rpicam-still /usr/bin/rpicam-still\n"
                               "piorch-tool raspistill /opt/vc/bin/raspistill\npiorch-probe-done\n")
    assert probe.tools == {CameraTool.RPICAM_VID: "/usr/bin/rpicam-vid"}
    assert probe.still_tools == {StillTool.RPICAM_STILL: "/usr/bin/rpicam-still",
                                 StillTool.RASPISTILL: "/opt/vc/bin/raspistill"}


def test_choose_still_tool() -> None:
    both = PiProbe(still_tools={StillTool.RASPISTILL: "/x", StillTool.RPICAM_STILL: "/y"}, complete=True)
    assert choose_still_tool(both, StillTool.AUTO, JPG) is StillTool.RPICAM_STILL
    assert choose_still_tool(both, StillTool.RASPISTILL, GIF) is StillTool.RASPISTILL
    with pytest.raises(UsageError, match="cannot write gif"):
        choose_still_tool(both, StillTool.AUTO, GIF)
    with pytest.raises(RemoteError, match="libcamera-still is not installed"):
        choose_still_tool(both, StillTool.LIBCAMERA_STILL, JPG)
    with pytest.raises(RemoteError, match="no still camera tool"):
        choose_still_tool(PiProbe(tools={CameraTool.RPICAM_VID: "/z"}), StillTool.AUTO, JPG)


# ------------------------------------------------------------------------------------------ --name


@pytest.mark.parametrize(
    ("template", "counter", "fmt", "name"),
    [
        ("img{counter:03d}", 7, JPG, "img007.jpg"),
        ("img{counter:03d}.jpg", 7, JPG, "img007.jpg"),  # the format's own extension is not doubled
        ("img{counter:03d}.JPG", 7, JPG, "img007.jpg"),
        ("shot-{counter}", 12, PNG, "shot-12.png"),
        ("frame_{counter:04x}", 255, BMP, "frame_00ff.bmp"),
        ("{{x}}{counter}", 1, GIF, "{x}1.gif"),
        ("garden {counter:>4}", 42, JPG, "garden   42.jpg"),
        ("été_{counter}", 3, PNG, "été_3.png"),
        ("latest", 1, JPG, "latest.jpg"),
    ],
)
def test_names_from_a_template(template: str, counter: int, fmt: ImageFormat, name: str) -> None:
    names = build_image_names(template, counter - FIRST_COUNTER + 1, fmt)  # the last name has `counter`
    assert names is not None and names[-1] == name


@pytest.mark.parametrize(
    ("template", "count", "words"),
    [
        ("../img{counter}", 1, "start with"),
        ("img..{counter}", 1, "'..'"),
        ("x/../../y{counter}", 1, "'/'"),
        ("a/b{counter}", 1, "'/'"),
        ("a\\b{counter}", 1, "'/'"),
        ("{counter:/>5}", 1, "'/'"),  # the fill character must not smuggle a separator in
        ("x{counter:.>3}", 1, "'..'"),
        ("/etc/passwd{counter}", 1, "'/'"),
        (".hidden{counter}", 1, "start with"),
        ("-rf{counter}", 1, "start with"),
        ("x\n{counter}", 1, "control"),
        ("x\x00{counter}", 1, "control"),
        ("{counter:>999}", 1, "bytes"),
        ("{counter:>99999999}", 1, "number format"),  # no gigabyte of padding
        ("{counter!r}", 1, "only {counter}"),
        ("{0}", 1, "only {counter}"),
        ("{}", 1, "only {counter}"),
        ("{counter.real}", 1, "only {counter}"),
        ("{counter[0]}", 1, "only {counter}"),
        ("{name}", 1, "only {counter}"),
        ("{counter:{w}}", 1, "number format"),
        ("{counter:c}", 1, "number format"),
        ("{counter:.2f}", 1, "number format"),
        ("{counter:s}", 1, "number format"),
        ("{counter:,b}", 1, "cannot number"),
        ("img{counter", 1, "not a valid template"),
        ("img}", 1, "not a valid template"),
        ("img", 3, "no {counter}"),
        ("img{counter:.0}", 3, "number format"),
        ("img{counter}.png", 1, "another format"),
        ("", 1, "empty"),
    ],
)
def test_hostile_or_ambiguous_names_are_refused(template: str, count: int, words: str) -> None:
    with pytest.raises(UsageError) as error:
        build_image_names(template, count, JPG)
    assert words in str(error.value)


def test_uuid_names_by_default_and_counter_order() -> None:
    assert build_image_names(None, 5, PNG) is None
    assert build_image_names("t{counter:02d}", 3, PNG) == ("t01.png", "t02.png", "t03.png")
    assert check_image_name("img001.jpg") is None
    assert render_image_name("img{counter:03d}", 12, GIF) == "img012.gif"


def test_existing_pictures_are_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "img002.jpg").write_bytes(b"precious")
    with pytest.raises(UsageError, match=r"img002\.jpg already exists"):
        refuse_existing(tmp_path, ("img001.jpg", "img002.jpg"))
    received = tmp_path / "f0e1.jpg"
    received.write_bytes(b"new")
    with pytest.raises(FileExistsError):
        place_image(received, "img002.jpg")
    assert (tmp_path / "img002.jpg").read_bytes() == b"precious" and received.read_bytes() == b"new"
    placed = place_image(received, "img003.jpg")
    assert placed.read_bytes() == b"new" and not received.exists()


# ------------------------------------------------------------------------------------------ image bytes


@pytest.mark.parametrize("fmt", list(ImageFormat))
def test_whole_images_pass_and_cut_ones_fail(tmp_path: Path, fmt: ImageFormat) -> None:
    data = sim_still.build_marked_image(fmt.value, (SAMPLES / f"sample.{fmt.value}").read_bytes(), b"note")
    path = tmp_path / f"x{fmt.suffix}"
    path.write_bytes(data)
    assert check_image_bytes(fmt, *read_image_ends(path)) is None
    path.write_bytes(data[: len(data) - 40])
    assert "not a whole" in (check_image_bytes(fmt, *read_image_ends(path)) or "")
    other = next(f for f in ImageFormat if f is not fmt)
    path.write_bytes(data)
    assert check_image_bytes(other, *read_image_ends(path)) is not None
    path.write_bytes(b"")
    assert "0 bytes" in (check_image_bytes(fmt, *read_image_ends(path)) or "")


@pytest.mark.parametrize("fmt", list(ImageFormat))
def test_marked_samples_decode_and_differ(tmp_path: Path, fmt: ImageFormat) -> None:
    import av  # a runtime dependency: missing means a broken install
    sample = (SAMPLES / f"sample.{fmt.value}").read_bytes()
    assert len(sample) < 32_000
    first = sim_still.build_marked_image(fmt.value, sample, b"piorch run 1" * 40)  # several GIF sub-blocks
    second = sim_still.build_marked_image(fmt.value, sample, b"piorch run 2" * 40)
    assert first != second
    for index, data in enumerate((first, second)):
        path = tmp_path / f"{index}{fmt.suffix}"
        path.write_bytes(data)
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == (96, 72)


# ------------------------------------------------------------------------------------------ simulator


def _reference_rows(name: str) -> list[list[str]]:
    path = require_reference(name)
    return [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_raspistill_table_matches_the_real_one() -> None:
    rows = _reference_rows("raspistill_options.txt")
    ours = {option.long: option for option in still_options.RASPISTILL_OPTIONS}
    assert len(rows) == len(ours) == len(still_options.RASPISTILL_OPTIONS)
    for short, long, params, *_ in rows:
        assert ours[long[2:]].short == short[1:] and ours[long[2:]].params == int(params), long


def test_rpicam_still_table_matches_the_real_one() -> None:
    rows = _reference_rows("rpicam_still_options.txt")
    ours = {option.long: option for option in still_options.RPICAM_STILL_OPTIONS}
    assert len(rows) == len(ours)
    for short, long, ctype, _default, implicit, *_ in rows:
        option = ours[long[2:]]
        assert option.short == (short[1:] or None), long
        assert (option.implicit is None) == (implicit == ""), long
        assert (ctype == "bool") == (option.ctype == "bool"), long


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("raspistill", ["-encoding", "png"], "Invalid command line option (-encoding)"),  # one dash, long name
        ("raspistill", ["-e", "jpeg"], "Invalid command line option (-e)"),
        ("raspistill", ["-e", "PNG"], "Invalid command line option (-e)"),  # strcmp: case matters
        ("raspistill", ["-w", "wide"], "Invalid command line option (-w)"),
        ("raspistill", ["-fps", "30"], "Invalid command line option (-fps)"),  # raspivid's, not raspistill's
        ("raspistill", ["-o"], "Invalid command line option (-o)"),
        ("rpicam-still", ["--encoding", "gif"], "invalid encoding format gif"),
        ("rpicam-still", ["-e", "jpeg"], "invalid encoding format jpeg"),
        ("rpicam-still", ["--codec", "h264"], "unrecognised option '--codec'"),  # rpicam-vid's, not still's
        ("rpicam-still", ["--e", "png"], "is ambiguous"),
        ("rpicam-still", ["--width"], "the required argument for option '--width' is missing"),
        ("rpicam-still", ["--width", "-n"], "the required argument for option '--width' is missing"),
        ("rpicam-still", ["-t", "1", "-t", "2"], "cannot be specified more than once"),
        ("rpicam-still", ["--thumb", "64x48"], "bad thumbnail parameters 64x48"),
        ("libcamera-still", ["--timelapse", "1s", "-s"], "mutually exclusive"),
    ],
)
def test_simulator_refuses_like_the_tool(tool: str, args: list[str], message: str) -> None:
    with pytest.raises(SimUsageError) as error:
        still_options.parse_still_args(tool, args)
    assert message in error.value.message


def test_simulator_accepts_the_tools_own_spellings() -> None:
    parse = still_options.parse_still_args
    assert parse("raspistill", ["--encoding", "gif", "--output", "-x", "--timeout", "10"]).encoding == "gif"
    assert parse("raspistill", ["-o", "-", "-t", "0"]).timeout_ms == 0
    assert parse("rpicam-still", ["-ePNG"]).encoding == "png"  # strcasecmp, value attached to the short name
    assert parse("rpicam-still", ["--enc=BMP"]).encoding == "bmp"
    assert parse("rpicam-still", ["--encod", "bmp", "-t", "2s"]).timeout_ms == 2000
    assert parse("libcamera-still", ["-x", "a=1", "-x", "b=2", "--thumb", "none"]).encoding == "jpg"


def _sim_env(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bin_dir = tmp_path / "bin"
    install_stand_ins(bin_dir, SIM_STILL_TOOLS)
    env = {**os.environ, "PIORCH_SIM_LOG": str(tmp_path / "log"), "PIORCH_SIM_LOCK": str(tmp_path / "lock")}
    env.pop("PIORCH_SIM_FAULT", None)
    return bin_dir, env


@pytest.mark.parametrize("tool", SIM_STILL_TOOLS)
def test_simulator_busy_and_missing_camera(tmp_path: Path, tool: str) -> None:
    import fcntl

    bin_dir, env = _sim_env(tmp_path)
    argv = [str(bin_dir / tool), "-o", "-", "-t", "10", "-n"]
    legacy = tool == "raspistill"
    with open(tmp_path / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        busy = subprocess.run(argv, capture_output=True, env=env, timeout=DEADLINE_S)
    assert busy.returncode == (70 if legacy else 255) and busy.stdout == b""
    assert (b"ENOSPC" if legacy else b"failed to acquire camera") in busy.stderr
    gone = subprocess.run(argv, capture_output=True, env={**env, "PIORCH_SIM_FAULT": "no-camera"}, timeout=DEADLINE_S)
    assert gone.returncode == (70 if legacy else 255) and gone.stdout == b""
    ok = subprocess.run(argv, capture_output=True, env=env, timeout=DEADLINE_S)
    assert ok.returncode == 0 and ok.stdout.startswith(b"\xff\xd8\xff")
    runs = [line for line in (tmp_path / "log" / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 3 and not list((tmp_path / "log").glob("running-*"))


def test_simulator_signal_during_settle_gives_no_picture(tmp_path: Path) -> None:
    import json
    import signal
    import time

    bin_dir, env = _sim_env(tmp_path)
    proc = subprocess.Popen([str(bin_dir / "raspistill"), "-o", "-", "-t", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + DEADLINE_S
    while not list((tmp_path / "log").glob("running-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # past the handler installation, holding the camera
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 143 and out == b""
    (run,) = [json.loads(line) for line in (tmp_path / "log" / "runs.jsonl").read_text().splitlines()]
    assert run["reason"] == "signal" and run["bytes"] == 0


# ------------------------------------------------------------------------------------------ core, local Pi


def _settings(tmp_path: Path, **changes: object) -> SnapSettings:
    base = SnapSettings(still=StillSettings(PNG, settle_ms=50), receive=ReceiveSettings(port=0, out_dir=tmp_path / "o"),
                        laptop_ip="127.0.0.1", count=3, name_template="p{counter}")
    from dataclasses import replace

    return replace(base, **changes)  # type: ignore[arg-type]


def _local_pi(tmp_path: Path, tools: tuple[str, ...] = ("libcamera-still",)) -> LocalHost:
    require_tool("nc")  # the simulated Pi streams through this machine's netcat, as a Pi does
    bin_dir = tmp_path / "pi-bin"
    install_stand_ins(bin_dir, tools, extra_env={"PIORCH_SIM_LOCK": str(tmp_path / "lock"),
                                                 "PIORCH_SIM_LOG": str(tmp_path / "log")})
    return LocalHost("simulated-pi", path_prepend=bin_dir)


def test_core_timelapse_events_and_files(tmp_path: Path) -> None:
    events: list[object] = []
    result = run_snap(_settings(tmp_path), _local_pi(tmp_path), events.append, threading.Event())
    assert result.state is State.DONE and result.images == 3 and result.tool is StillTool.LIBCAMERA_STILL
    assert [f.path.name for f in result.files] == ["p1.png", "p2.png", "p3.png"]
    taking = [e.taking for e in events if isinstance(e, SnapProgress) and e.taking]
    assert taking == [1, 2, 3]
    finished = [e for e in events if isinstance(e, FileFinished)]
    assert finished == list(result.files) and all(f.status is FileStatus.COMPLETE for f in finished)


def test_core_nc_backend_between_captures(tmp_path: Path) -> None:
    import socket

    require_tool("nc")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = _settings(tmp_path, receive=ReceiveSettings(port=port, out_dir=tmp_path / "o", backend=Backend.NC),
                         name_template=None, interval_s=0.0)
    result = run_snap(settings, _local_pi(tmp_path, ("raspistill",)), lambda event: None, threading.Event())
    assert result.state is State.DONE and result.images == 3
    assert len({f.sha256 for f in result.files}) == 3  # three captures, three different pictures


def test_core_camera_failure_stops_the_timelapse(tmp_path: Path) -> None:
    import fcntl

    with open(tmp_path / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        result = run_snap(_settings(tmp_path), _local_pi(tmp_path), lambda event: None, threading.Event())
    assert result.state is State.FAILED and result.problem is not None
    assert "camera busy" in result.problem.message and "snap again" in result.problem.fix
    assert result.files == () and not list((tmp_path / "o").glob("*.png"))


def test_core_cut_picture_fails_with_the_reason(tmp_path: Path) -> None:
    require_tool("nc")  # the simulated Pi streams through this machine's netcat
    bin_dir = tmp_path / "pi-bin"
    install_stand_ins(bin_dir, ("rpicam-still",), extra_env={"PIORCH_SIM_LOCK": str(tmp_path / "lock"),
                                                             "PIORCH_SIM_FAULT": "crash-after=300"})
    result = run_snap(_settings(tmp_path), LocalHost("simulated-pi", path_prepend=bin_dir), lambda event: None,
                      threading.Event())
    assert result.state is State.FAILED and result.problem is not None and result.images == 0
    assert "rpicam-still failed on the Pi" in result.problem.message
    (cut,) = result.files
    assert cut.status is FileStatus.FAILED and cut.bytes == 300
    assert cut.path.name != "p1.png"  # a broken picture never takes the template's name


def test_config_camera_tool_picks_the_still_sibling(tmp_path: Path) -> None:
    from orchestrator.config import load_config
    from orchestrator.resolve import SnapChoices, build_snap_settings

    config = tmp_path / "piorch.toml"
    config.write_text('pi = "pi@192.0.2.1"\ncamera_tool = "raspivid"\nvflip = true\n')
    choices = SnapChoices(image_format="PNG", count=2, interval_s=3.0)
    settings, ssh = build_snap_settings(load_config({}, config, environ={}), choices)
    assert settings.still_tool is StillTool.RASPISTILL and settings.still.vflip and ssh.target == "pi@192.0.2.1"
    assert (settings.still.image_format, settings.count, settings.interval_s) == (PNG, 2, 3.0)
    settings, _ = build_snap_settings(load_config({"vflip": False}, config, environ={}),
                                      replace(choices, camera_tool="rpicam-still"))
    assert settings.still_tool is StillTool.RPICAM_STILL and not settings.still.vflip  # flags win
