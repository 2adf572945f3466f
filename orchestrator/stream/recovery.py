"""Finalising what a killed piorch left behind; its bytes are never changed or deleted.

A crash can leave a data file still named `<uuid>.<ext>.tmp`, a frame folder `<uuid>.tmp/`, or a file that
was renamed (or is being remuxed) while its `<uuid>.json` is still the `receiving` placeholder reserved when
it opened. Each becomes a file with a `recovered` manifest. Its times are the true ones: the start comes from
the placeholder (written when the first byte came), the end from the data's last write. A file or folder a
live piorch still holds (an exclusive flock from its first byte until its manifest is final) is left alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.events import EventSink, FileFinished, FileStatus, Notice, RawLayout
from orchestrator.settings import ImageFormat, RawFormat
from orchestrator.stream.manifest import Manifest, read_placeholder, stream_container, utc_at, write_manifest
from orchestrator.stream.raw import finish_raw_video

# Data files only; a half-written manifest (`<uuid>.json.tmp`) is rewritten from the data file instead.
# Streams (H.264, MJPEG, raw I420 video) and pictures (snap's image and raw formats).
DATA_SUFFIXES = tuple(f"{suffix}.tmp" for suffix in (".h264", ".mjpeg", ".yuv", *(f.suffix for f in ImageFormat),
                                                      *(f.suffix for f in RawFormat)))
# The frame rates a raw recording's placeholder may say (the cameras' own range is far inside it).
MIN_FPS, MAX_FPS = 0.01, 1000.0
# What a remux left when it was cut short: never received bytes, only an unfinished copy of them.
REMUX_LEFTOVERS = (".mp4.partial", ".mkv.partial")


@dataclass(frozen=True)
class Leftover:
    folder: Path
    id: str
    # Where the bytes are now: a `.tmp` file or folder, or already the final name. None: gone.
    data: Path | None
    # What the `receiving` placeholder said (started_utc, peer), when there is one.
    placeholder: dict[str, Any] | None
    # When the placeholder was written: the file's start, for placeholders without `started_utc`.
    placeholder_mtime: float | None = None


def _file_id(name: str) -> str:
    return name.split(".", 1)[0]


def _held(path: Path) -> bool:
    """A live piorch holds an exclusive flock on a file or folder it is still receiving or finishing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def _is_leftover_tmp(path: Path) -> bool:
    if path.name.endswith(DATA_SUFFIXES):
        return path.is_file()
    # A frame folder: `<uuid>.tmp/` (MJPEG split into frames).
    return path.name.endswith(".tmp") and path.name.count(".") == 1 and path.is_dir()


def find_leftovers(out_dir: Path) -> list[Leftover]:
    """Everything a killed run left unfinished in `out_dir` that no running piorch holds."""
    if not out_dir.is_dir():
        return []
    tmps: dict[str, Path] = {}
    placeholders: dict[str, tuple[dict[str, Any], float]] = {}
    finished: set[str] = set()
    for path in sorted(out_dir.iterdir()):
        if _is_leftover_tmp(path):
            tmps[_file_id(path.name)] = path
        elif path.suffix == ".json" and not path.name.startswith("session-"):
            said = read_placeholder(path)
            if said is None:
                finished.add(path.stem)
            else:
                placeholders[path.stem] = (said, path.stat().st_mtime)
    found = []
    for file_id in sorted(tmps.keys() | placeholders.keys()):
        if file_id in finished:
            continue  # its manifest is final (e.g. a rename that failed): reported already, says why
        said, mtime = placeholders.get(file_id, (None, None))
        data = tmps.get(file_id) or _data_named_by(out_dir, file_id, said)
        if data is not None and _held(data):
            continue  # being written or finished right now
        found.append(Leftover(out_dir, file_id, data, said, mtime))
    return found


def _data_named_by(out_dir: Path, file_id: str, said: dict[str, Any] | None) -> Path | None:
    """Where the bytes of a placeholder whose `.tmp` is gone are: renamed, or already remuxed."""
    if said is None:
        return None
    receiving = str(said.get("file", ""))
    candidates = [receiving.removesuffix(".tmp")] if receiving.endswith(".tmp") else []
    candidates += [f"{file_id}.mp4", f"{file_id}.mkv"]
    for name in candidates:
        if name and "/" not in name and (out_dir / name).exists():
            return out_dir / name
    return None


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _frames_in(folder: Path) -> tuple[str, int, list[dict[str, Any]], float]:
    """A frame folder: the SHA-256 of its frames joined in order (the stream, which has nothing between
    frames), their bytes, the frame list, the last write."""
    digest = hashlib.sha256()
    size, last = 0, folder.stat().st_mtime
    frames: list[dict[str, Any]] = []
    for path in sorted(folder.glob("frame_*.jpg*")):
        data = path.read_bytes()
        digest.update(data)
        size += len(data)
        stat = path.stat()
        last = max(last, stat.st_mtime)
        frames.append({"index": len(frames) + 1, "file": path.name, "arrival_utc": utc_at(stat.st_mtime),
                       "bytes": len(data), "complete": path.suffix == ".jpg"})
    return digest.hexdigest(), size, frames, last


def _seconds(utc: str) -> float:
    return datetime.fromisoformat(utc.replace("Z", "+00:00")).timestamp()


def recover_file(leftover: Leftover, on_event: EventSink, twins: bool = True) -> FileFinished:
    """Finalise one leftover: rename a `.tmp` to its final name (never over another file), hash it, and
    write a `recovered` manifest with its true start; the bytes are never changed."""
    folder, said = leftover.folder, leftover.placeholder or {}
    if leftover.data is None:
        return _gone(leftover, on_event)
    data = leftover.data
    container = stream_container(data)  # by the name it was received under (a kept twin's says `.recovered`)
    if data.name.endswith(".tmp"):
        final = data.with_name(data.name.removesuffix(".tmp"))
        if final.exists():
            # Never overwrite: keep both, the leftover under a name that says what it is.
            final = final.with_name(final.name.split(".", 1)[0] + ".recovered" + "".join(final.suffixes))
        os.replace(data, final)
        data = final
    frame_list: list[dict[str, Any]] | None = None
    if data.is_dir():
        sha256, size, frame_list, last_write = _frames_in(data)
    else:
        sha256, size = _hash_file(data)
        last_write = data.stat().st_mtime
    started = str(said.get("started_utc") or "")
    if not started and leftover.placeholder_mtime is not None:
        started = utc_at(leftover.placeholder_mtime)
    if started:
        # The placeholder's start is taken just after the first bytes were written, so a file that came in
        # one write can have an mtime a moment (or the file system's granularity) before it: never an end
        # before the start.
        last_write = max(last_write, _seconds(started))
    ended = utc_at(last_write)
    how = "left unfinished by a piorch run that was killed; finalised by recover"
    if not started:
        started, how = ended, how + " (no placeholder manifest: its start time is unknown)"
    # A raw recording's placeholder says how its frames lie (ReceiveSettings.raw_layout).
    said_raw = said.get("raw")
    raw: dict[str, Any] = said_raw if isinstance(said_raw, dict) else {}
    layout = _layout_from(raw) if data.suffix == ".yuv" else None
    if data.suffix == ".yuv" and layout is None:
        how += ("; no .y4m made: its placeholder does not say how frames lie (a raw picture, or a recording "
                "by an older piorch)")
    elif layout is not None and not twins and raw.get("y4m", True):
        how += "; no .y4m made while a run was starting (`raw` says how to read it)"
    remuxed = [name for name in (f"{leftover.id}.mp4", f"{leftover.id}.mkv") if (folder / name).is_file()]
    if remuxed and data.suffix not in (".mp4", ".mkv"):
        how += f"; its remuxed {remuxed[0]} is kept too"
    for suffix in REMUX_LEFTOVERS:
        (folder / f"{leftover.id}{suffix}").unlink(missing_ok=True)
    (folder / f"{leftover.id}.json.tmp").unlink(missing_ok=True)
    manifest_path = folder / f"{leftover.id}.json"
    problem = write_manifest(manifest_path, Manifest(
        id=leftover.id, file=data.name, status=FileStatus.RECOVERED.value, bytes=size, sha256=sha256,
        started_utc=started, ended_utc=ended, peer=str(said.get("peer") or "unknown"), reason=how,
        container=container,
        frames=(sum(frame["complete"] for frame in frame_list) if frame_list is not None
                else size // layout.frame_bytes if layout is not None else None),
        frame_list=frame_list,
        partial_frames=sum(not frame["complete"] for frame in frame_list) if frame_list is not None else None,
    ))
    if problem:
        on_event(Notice("error", problem))
    finished = FileFinished(data, None if problem else manifest_path, size, sha256, FileStatus.RECOVERED,
                            max(0.0, last_write - _seconds(started)))
    if layout is not None and not problem:
        # The .y4m twin (when the run wanted one) and the manifest's `raw`, as the run would have written them.
        finish_raw_video([finished], layout, twins and bool(raw.get("y4m", True)), on_event)
    on_event(finished)
    return finished


def _layout_from(raw: dict[str, Any]) -> RawLayout | None:
    """The I420 video layout a placeholder's `raw` describes (RawLayout.describe()), or None when it says none
    or says something no camera writes (the file is then recovered without a .y4m)."""
    try:
        fps, color = float(raw["fps"]), raw.get("color_range")
        layout = RawLayout(str(raw["pixel_format"]), int(raw["width"]), int(raw["height"]), int(raw["stride"]),
                           int(raw["rows"]), fps, None if color is None else color == "full")
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    sizes = 0 < layout.width <= layout.stride and 0 < layout.height <= layout.rows
    # A YUV4MPEG2 header carries the rate as a fraction with a denominator up to 1001 (raw.build_y4m_header).
    rate = math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS
    return layout if layout.pixel_format == "yuv420p" and sizes and rate else None


def _gone(leftover: Leftover, on_event: EventSink) -> FileFinished:
    """A placeholder whose bytes are nowhere: its manifest says so instead of `receiving` for ever."""
    said = leftover.placeholder or {}
    name = str(said.get("file") or leftover.id)
    started = str(said.get("started_utc") or "")
    if not started and leftover.placeholder_mtime is not None:
        started = utc_at(leftover.placeholder_mtime)
    manifest_path = leftover.folder / f"{leftover.id}.json"
    problem = write_manifest(manifest_path, Manifest(
        id=leftover.id, file=name, status=FileStatus.FAILED.value, bytes=0, sha256="", started_utc=started,
        ended_utc=started, peer=str(said.get("peer") or "unknown"),
        container=stream_container(Path(name)) if said.get("file") else Manifest.container,
        reason=f"left unfinished by a piorch run that was killed, and its data ({name}) is gone",
    ))
    if problem:
        on_event(Notice("error", problem))
    finished = FileFinished(leftover.folder / name, None if problem else manifest_path, 0, "", FileStatus.FAILED, 0.0)
    on_event(finished)
    return finished


def recover_leftovers(out_dir: Path, on_event: EventSink, twins: bool = True) -> list[FileFinished]:
    """Finalise every leftover in `out_dir`. `twins`: also write what a file would have had beside it (a raw
    recording's .y4m): `piorch recover` does; a run starting in that folder does not, so that a leftover
    of gigabytes does not hold up its start (the manifest's `raw` still says how to read the .yuv)."""
    files = [recover_file(leftover, on_event, twins) for leftover in find_leftovers(out_dir)]
    if files:
        on_event(Notice("warning", f"recovered {len(files)} file(s) left by an earlier run in {out_dir}"))
    return files
