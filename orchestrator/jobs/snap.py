"""`snap`: stills and timelapses, each picture one `still-tool -o - | nc LAPTOP PORT` into its own file.

The still tools' command lines are in `pi/still.py`; here are the `--name` template, the check that
received bytes are one whole image of the format, and `run_snap`, built on the one capture runner
(`pi/capture.py`): the probe, the netcat checks, the pipeline with its status marks, and its stop.

One receiver stays up for the whole timelapse; each capture is one connection, so one file. Capture i
starts at start + i * interval: a schedule, not a sleep after each capture, so the interval never drifts.
"""

from __future__ import annotations

import errno
import os
import re
import string
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from orchestrator.errors import UsageError
from orchestrator.events import (
    Ending,
    Event,
    FileFinished,
    FileStatus,
    Notice,
    RawLayout,
    SnapProgress,
    State,
    StateChanged,
)
from orchestrator.netcat import build_nc_send_argv
from orchestrator.pi.camera import CameraProblem
from orchestrator.pi.capture import (
    DRAIN_S,
    Pipeline,
    ProbeGuard,
    camera_stack,
    check_pi_netcat,
    describe_tools,
    explain_pipeline,
    resolve_laptop_ip,
    run_with_probe,
)
from orchestrator.pi.host import Host
from orchestrator.pi.raw import RawStillPlan, check_raw_still_tool, plan_raw_still
from orchestrator.pi.scripts import PiProbe, build_pipeline_script
from orchestrator.pi.stack import CameraStack
from orchestrator.pi.still import build_still_argv, check_still_to_stdout, choose_still_tool, explain_still_failure
from orchestrator.settings import Backend, ImageFormat, PictureFormat, RawFormat, SnapSettings, StillTool
from orchestrator.stream.finishing import finish_received_file
from orchestrator.stream.manifest import stream_container
from orchestrator.stream.raw import amend_manifest, convert_received, require_scaler
from orchestrator.stream.receiver import Receiver, make_receiver, wait_until_listening
from orchestrator.stream.recovery import recover_leftovers
from orchestrator.stream.writer import ReceivedFile

FIRST_COUNTER = 1
MAX_NAME_BYTES = 255
# A still tool runs its settle time, then writes one picture: anything much longer is a hung camera.
CAPTURE_GRACE_S = 30.0
TICK_S = 0.5


# ------------------------------------------------------------------------------------------ file names


# A format spec for an integer: [[fill]align][sign][#][0][width][grouping][type]; width at most 3 digits,
# so a spec cannot ask for a gigabyte of padding.
_INT_SPEC = re.compile(r"(?:[^{}]?[<>=^])?[-+ ]?#?0?(?:\d{1,3})?[,_]?[bdoxX]?")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", *(fmt.suffix for fmt in RawFormat))


def check_name_template(template: str, image_format: PictureFormat) -> str:
    """The template without the format's extension, or a UsageError saying what is wrong with it.

    Only `{counter}` fields with an integer format spec (`{counter:03d}`); `{{` and `}}` are literal braces.
    """
    stem = template[: -len(image_format.suffix)] if template.lower().endswith(image_format.suffix) else template
    if stem.lower().endswith(_IMAGE_SUFFIXES):
        raise UsageError(f"--name {template!r} ends in another format's extension than .{image_format.value}",
                         "give the name without an extension; piorch adds it")
    try:
        fields = list(string.Formatter().parse(stem))
    except ValueError as exc:
        raise UsageError(f"--name {template!r} is not a valid template ({exc})",
                         "use {counter} for the image number, {{ and }} for braces") from None
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if name != "counter" or conversion is not None:
            raise UsageError(f"--name {template!r} has the field {{{name}}}, but only {{counter}} is known",
                             "for example --name 'img{counter:03d}'")
        if not _INT_SPEC.fullmatch(spec or ""):
            raise UsageError(f"--name {template!r}: '{spec}' is not a number format",
                             "for example {counter:03d} for 001, 002, ...")
    return stem


def check_image_name(name: str) -> str | None:
    """Why `name` cannot be a file name in the output folder, or None when it can."""
    if not name or name.startswith((".", "-")):
        return "must not be empty or start with '.' or '-'"
    if "/" in name or "\\" in name or ".." in name:
        return "must not contain '/', '\\' or '..' (images stay in the --out folder)"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "must not contain control characters"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"must be at most {MAX_NAME_BYTES} bytes long"
    return None


def render_image_name(stem: str, counter: int, image_format: PictureFormat) -> str:
    """One file name from a checked template: `img{counter:03d}` and 7 -> `img007.jpg`."""
    return stem.format(counter=counter) + image_format.suffix


def build_image_names(template: str | None, count: int, image_format: PictureFormat) -> tuple[str, ...] | None:
    """The `count` file names of a timelapse, checked; None when images are named by their UUID."""
    if template is None:
        return None
    stem = check_name_template(template, image_format)
    has_counter = any(name is not None for _, name, _, _ in string.Formatter().parse(stem))
    if count > 1 and not has_counter:
        raise UsageError(f"--name {template!r} has no {{counter}}, so {count} images would share one name",
                         "add {counter}, for example --name 'img{counter:03d}'")
    try:
        names = tuple(render_image_name(stem, FIRST_COUNTER + i, image_format) for i in range(count))
    except ValueError as exc:  # a spec the pattern lets through but Python refuses, such as ',b'
        raise UsageError(f"--name {template!r} cannot number the images ({exc})",
                         "for example --name 'img{counter:03d}'") from None
    for name in names:
        if (problem := check_image_name(name)) is not None:
            raise UsageError(f"--name {template!r} gives the file name {name!r}, which {problem}",
                             "for example --name 'img{counter:03d}'")
    if len(set(names)) != len(names):
        raise UsageError(f"--name {template!r} gives the same file name to several images",
                         "for example --name 'img{counter:03d}'")
    return names


def refuse_existing(out_dir: Path, names: Sequence[str]) -> None:
    """piorch never overwrites a picture: refuse before anything starts."""
    for name in names:
        if (out_dir / name).exists():
            raise UsageError(f"{out_dir / name} already exists", "pick another --name or --out")


def place_image(path: Path, name: str) -> Path:
    """Give a received image its final name without ever replacing a file (FileExistsError if taken).

    A hard link fails when the name exists, atomically, which a rename cannot promise; the UUID name is
    then unlinked. A filesystem without hard links (FAT and exFAT on a USB disk) gets check-then-rename.
    """
    target = path.with_name(name)
    try:
        os.link(path, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        if target.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.rename(path, target)
        return target
    path.unlink()
    return target


# ------------------------------------------------------------------------------------------ image check

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"


def check_image_bytes(image_format: ImageFormat, head: bytes, tail: bytes, size: int) -> str | None:
    """Why `size` bytes starting with `head` and ending with `tail` are not one whole image, else None.

    Start: the format's magic bytes. End: JPEG's EOI marker (FF D9, which entropy-coded data never
    contains), PNG's IEND chunk, GIF's trailer (3B), or for BMP the size its header declares.
    """
    label = image_format.value.upper()
    if size == 0:
        return f"no {label} image arrived (0 bytes)"
    if image_format is ImageFormat.JPG:
        whole = head.startswith(b"\xff\xd8\xff") and b"\xff\xd9" in tail[-64:]
    elif image_format is ImageFormat.PNG:
        whole = head.startswith(_PNG_SIGNATURE) and tail.endswith(_PNG_END)
    elif image_format is ImageFormat.GIF:
        whole = head.startswith((b"GIF87a", b"GIF89a")) and tail.endswith(b";")
    else:
        whole = len(head) >= 6 and head.startswith(b"BM") and int.from_bytes(head[2:6], "little") <= size
    return None if whole else f"the {size} bytes that arrived are not a whole {label} image"


def check_raw_bytes(layout: RawLayout, size: int) -> str | None:
    """Why `size` bytes are not one whole raw picture of `layout` (the tool writes exactly one), else None."""
    if size == layout.frame_bytes:
        return None
    what = f"{layout.width}x{layout.height} {layout.pixel_format} picture"
    if size == 0:
        return f"no {what} arrived (0 bytes)"
    return f"{size} bytes arrived, but one {what} from this tool is {layout.frame_bytes} bytes"


def read_image_ends(path: Path, length: int = 64) -> tuple[bytes, bytes, int]:
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(length)
        handle.seek(max(0, size - length))
        return head, handle.read(length), size


# ------------------------------------------------------------------------------------------ events, results


SnapEvent = Event | SnapProgress
SnapSink = Callable[[SnapEvent], None]


@dataclass(frozen=True)
class SnapResult:
    state: State
    files: tuple[FileFinished, ...]
    tool: StillTool | None
    remote_argv: tuple[str, ...]
    images: int = 0  # complete images
    problem: CameraProblem | None = None
    camera_freed: bool = True


@dataclass(frozen=True)
class _Capture:  # how one `tool | nc` run on the Pi ended
    pipeline: Pipeline
    interrupted: bool
    overran: bool


# ------------------------------------------------------------------------------------------ effects


def _run_capture(host: Host, script: str, limit_s: float, stop: threading.Event, on_event: SnapSink,
                 guard: ProbeGuard | None = None) -> _Capture:
    """Start one capture pipeline and follow its status marks until it ends, `stop` or its time limit."""
    pipeline = Pipeline(host, script, guard=guard)
    interrupted = overran = False
    if not pipeline.start():
        return _Capture(pipeline, interrupted, overran)
    try:
        deadline = time.monotonic() + limit_s
        while not (interrupted := stop.is_set()) and not (overran := time.monotonic() > deadline):
            if not pipeline.poll(0.2):
                break  # the pipeline ended: its stdout closed
    finally:
        if interrupted or overran or not pipeline.reported_end:
            on_event(StateChanged(State.STOPPING, "stopping the camera on the Pi"))
            pipeline.stop(on_event)
        pipeline.finish()
    return _Capture(pipeline, interrupted, overran)


def _wait_for_file(receiver: Receiver, received: list[ReceivedFile], before: int, timeout: float) -> None:
    """Until the capture's connection has become a file (it may still sit in the accept queue when the
    Pi reports success) and no connection is open, or the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (len(received) <= before or receiver.active):
        time.sleep(0.02)


def _explain_capture(capture: _Capture, tool: StillTool, laptop_ip: str, port: int,
                     arrived: bool) -> CameraProblem | None:
    """The one problem to report for a capture that did not give a picture (record's rules)."""
    if capture.interrupted:
        return None
    if capture.overran and capture.pipeline.pgid is not None:
        return CameraProblem("the camera did not take its picture in time", "run `piorch doctor` to check the Pi")
    problem = explain_pipeline(capture.pipeline, lambda stderr, code: explain_still_failure(tool, stderr, code),
                               laptop_ip, port)
    if problem is None and not arrived:
        return CameraProblem(f"the picture did not arrive at {laptop_ip}:{port}",
                             "check the cable and that nothing else listens on --port")
    return problem


def _settings_dict(settings: SnapSettings, index: int, stack: CameraStack) -> dict[str, object]:
    return {**asdict(settings.still), "image": FIRST_COUNTER + index, "count": settings.count,
            "interval_s": settings.interval_s, "name_template": settings.name_template, "port": settings.receive.port,
            "backend": settings.receive.backend.value, "camera_tool": settings.still_tool.value,
            "laptop_ip": settings.laptop_ip, "board": stack.board, "tool_version": stack.tool_version}


def run_snap(settings: SnapSettings, host: Host, on_event: SnapSink, stop: threading.Event) -> SnapResult:
    """Take `count` pictures on the schedule; never raises for a stop, only for a failure to start."""
    still = settings.still
    image_format = still.image_format
    names = build_image_names(settings.name_template, settings.count, image_format)
    if still.resize is not None:
        require_scaler()
    on_event(StateChanged(State.PROBING, host.name))

    def snap(probe: PiProbe, guard: ProbeGuard, said: SnapSink) -> SnapResult:
        return _snap(settings, names, host, probe, guard, said, stop)

    return run_with_probe(host, describe_tools(settings.still_tool), stop, on_event, settings.remember_pi, snap)


def _snap(settings: SnapSettings, names: tuple[str, ...] | None, host: Host, probe: PiProbe, guard: ProbeGuard,
          on_event: SnapSink, stop: threading.Event) -> SnapResult:
    still = settings.still
    image_format = still.image_format
    tool, flavour = choose_still_tool(probe, settings.still_tool, image_format), check_pi_netcat(probe)
    stack = camera_stack(probe, tool)
    check_still_to_stdout(tool, stack.facts)
    raw_plan: RawStillPlan | None = None
    if isinstance(image_format, RawFormat):
        raw_plan = plan_raw_still(image_format, still, tool)
        check_raw_still_tool(tool, probe.raw_tools, stack.facts)
    laptop_ip = resolve_laptop_ip(settings.laptop_ip, host)
    receive = settings.receive if settings.receive.bind else replace(settings.receive, bind=laptop_ip)
    camera_argv = build_still_argv(still, tool)
    recover_leftovers(receive.out_dir, on_event, twins=False)  # `.tmp` files a killed piorch left, as record does
    received: list[ReceivedFile] = []
    receiver = make_receiver(receive, received.append, on_event, suffix=image_format.suffix)
    receiver.start()
    script = build_pipeline_script(camera_argv, build_nc_send_argv(flavour, laptop_ip, receiver.port))
    files: list[FileFinished] = []
    problem: CameraProblem | None = None
    interrupted = False
    freed = True
    images = 0
    finished = 0  # how many of `received` have their manifest

    def finish(index: int, capture: _Capture | None, failure: CameraProblem | None,
               rename: bool = True) -> CameraProblem | None:
        """Check, name and write the manifest of what arrived for capture `index`; the problem, if any."""
        nonlocal finished, images
        remote_exit = {"camera": None, "nc": None, "pipeline": None} if capture is None else \
            capture.pipeline.exits.as_dict()
        context = {"pi": host.name, "tool": camera_argv[0], "remote_argv": list(camera_argv),
                   "settings": _settings_dict(settings, index, stack), "remote_exit": remote_exit}
        for position, item in enumerate(received[finished:]):
            if item.ended_by is Ending.FAILED and failure is None:
                failure = CameraProblem(f"saving {item.path.name} failed ({item.error})",
                                        "check the disk of the --out folder")
            reason = failure.message if failure else None
            stopped = capture is None or capture.interrupted or item.ended_by is Ending.STOPPED
            raw: dict[str, object] | None = None
            if reason is None and not stopped:
                if raw_plan is not None:
                    item, raw, reason = _finish_raw_picture(item, raw_plan)
                elif isinstance(image_format, ImageFormat):
                    reason = check_image_bytes(image_format, *read_image_ends(item.path))
                if reason is not None:
                    failure = CameraProblem(reason, f"look at {item.path.name}; run `piorch doctor` to check the Pi")
            if reason is None and not stopped and names is not None and rename and position == 0:
                try:
                    item = replace(item, path=place_image(item.path, names[index]))
                except FileExistsError:
                    on_event(Notice("warning", f"{names[index]} appeared during the snap: the picture is kept "
                                               f"as {item.path.name}"))
            done = finish_received_file(item, interrupted=stopped, failure=reason, discard_partial=False,
                                        context={**context, "container": stream_container(item.path)},
                                        on_event=on_event)
            if raw_plan is not None and done.manifest is not None:
                # What the file holds: the converted picture, or (also when cut short) the camera's own bytes.
                amend_manifest(done.manifest, {"raw": raw or raw_plan.camera.describe()})
            files.append(done)
            images += 1 if done.status is FileStatus.COMPLETE else 0
        finished = len(received)
        return failure

    on_event(StateChanged(State.STARTING, f"{tool.value} on {host.name} -> {laptop_ip}:{receiver.port}"))
    start: float | None = None
    warned_late = False
    index = 0
    last: _Capture | None = None
    try:
        for index in range(settings.count):
            if start is not None:
                due = start + index * settings.interval_s
                if not warned_late and time.monotonic() > due and settings.interval_s > 0:
                    warned_late = True
                    on_event(Notice("warning", f"a capture takes longer than --interval {settings.interval_s:g} s:"
                                               " the next ones start as soon as the camera is free"))
                if _wait_for_turn(due, stop, lambda left: on_event(SnapProgress(images, settings.count, 0, left))):
                    interrupted = True
                    break
            if stop.is_set():
                interrupted = True
                break
            # The local nc takes one connection per run; the Pi's nc must not connect before it listens again.
            if receive.backend is Backend.NC and start is not None and \
                    not wait_until_listening(receive.bind, receiver.port, 10.0, lambda: stop.is_set()):
                problem = CameraProblem(f"the laptop's nc did not listen again on port {receiver.port}",
                                        "use --backend builtin")
                break
            start = time.monotonic() if start is None else start
            on_event(SnapProgress(images, settings.count, index + 1))
            before = len(received)
            capture = _run_capture(host, script, still.settle_ms / 1000 + CAPTURE_GRACE_S, stop, on_event, guard)
            freed = freed and capture.pipeline.freed
            last = capture
            if capture.interrupted:
                receiver.wait_idle(3.0)
            else:
                # A failed camera may have sent part of a picture: its connection gets a moment to land too.
                ok = capture.pipeline.exits.camera == 0 and capture.pipeline.exits.nc == 0
                _wait_for_file(receiver, received, before, DRAIN_S if ok else 2.0)
            problem = _explain_capture(capture, tool, laptop_ip, receiver.port, len(received) > before)
            problem = finish(index, capture, problem)
            on_event(SnapProgress(images, settings.count, 0))
            if capture.interrupted:
                interrupted = True
            if interrupted or problem is not None:
                break
    finally:
        receiver.wait_idle(3.0 if interrupted else DRAIN_S)
        receiver.stop()
        if len(received) > finished:  # late, stray or cut short by an error: kept with a manifest, not renamed
            finish(index, last, problem, rename=False)
    state = State.INTERRUPTED if interrupted else State.FAILED if problem else State.DONE
    on_event(StateChanged(state, problem.message if problem else f"{images} image(s)"))
    return SnapResult(state, tuple(files), tool, tuple(camera_argv), images, problem, freed)


def _finish_raw_picture(item: ReceivedFile, plan: RawStillPlan) -> tuple[ReceivedFile, dict[str, object], str | None]:
    """Check a received raw picture's size and convert it where the tool could not write what was asked
    (the file keeps its name): the file, its manifest's `raw` object, and why it is not a picture, if so."""
    reason = check_raw_bytes(plan.camera, item.bytes)
    if reason is not None or not plan.converts:
        return item, plan.camera.describe(), reason
    try:
        size, digest, received = convert_received(item.path, plan.camera, plan.output, item.path)
    except (OSError, ValueError) as exc:
        return item, plan.camera.describe(), f"converting {item.path.name} to {plan.output.pixel_format} failed ({exc})"
    # The manifest's bytes and sha256 are the file's; what the camera sent is kept beside, under `camera`.
    camera = {**plan.camera.describe(), "bytes": item.bytes, "sha256": received}
    return replace(item, bytes=size, sha256=digest), {**plan.output.describe(), "camera": camera}, None


def _wait_for_turn(due: float, stop: threading.Event, tick: Callable[[float], None]) -> bool:
    """Sleep until `due` (monotonic clock), reporting the time left twice a second; True if stopped first."""
    while (left := due - time.monotonic()) > 0:
        tick(left)
        if stop.wait(min(TICK_S, left)):
            return True
    return stop.is_set()
