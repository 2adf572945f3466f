"""The sidecar `<uuid>.json` that says what a received file is, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator import __version__


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_at(timestamp: float) -> str:
    """A Unix time (time.time()) in the manifests' UTC form."""
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Manifest:
    id: str
    file: str
    status: str
    bytes: int
    sha256: str
    started_utc: str
    ended_utc: str
    peer: str
    pi: str | None = None
    tool: str | None = None
    remote_argv: list[str] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    remote_exit: dict[str, int | None] = field(default_factory=dict)
    reason: str = ""
    # From the H.264 parser: frames and I-frames in this file, frames/s measured on arrival.
    frames: int | None = None
    iframes: int | None = None
    fps_measured: float | None = None
    segment: int = 1
    # The raw stream this file was remuxed from, when kept (--keep-raw); sha256 and bytes are the raw stream's.
    raw_file: str | None = None
    container: str = "h264"
    duration_s: float | None = None
    remux_error: str | None = None
    # What the Pi's health readings warned about during the recording (heat, under-voltage, ...).
    health_warnings: list[str] = field(default_factory=list)
    # MJPEG split into frames: index, file, arrival_utc, bytes, complete for each frame file.
    frame_list: list[dict[str, Any]] | None = None
    # Frames that arrived cut short (no end-of-image marker): kept apart as `frame_NNNNNN.jpg.partial`.
    partial_frames: int | None = None
    # Which clock the frame times come from: "camera" (its own timestamps, in `pts_file`, timecode format v2,
    # and in the MP4/MKV) or "frame-rate" (frame i at i / fps: the tool could not send them).
    timestamps: str | None = None
    pts_file: str | None = None
    # On the camera's clock (timestamps: camera): the file's first frame time in milliseconds (0 for a run's
    # first file), frames the camera dropped (gaps over 1.5 frame intervals, the gap into the file included),
    # the longest gap, and frames of the file with no timestamp (the camera ended before writing it).
    # fps_measured is then the camera's rate too.
    first_pts_ms: float | None = None
    frames_dropped: int | None = None
    longest_gap_ms: float | None = None
    timestamps_missing: int | None = None
    piorch_version: str = __version__


def stream_container(path: Path) -> str:
    """What a manifest's `container` says of the file it names: its kind by its suffix (`.tmp` aside): h264,
    mjpeg or yuv as the stream arrived, mp4 or mkv once remuxed, a picture's jpg, png, gif, bmp, rgb, ...;
    `frames` for an MJPEG stream kept as a folder of frames (named by its id alone)."""
    return Path(path.name.removesuffix(".tmp")).suffix.lstrip(".") or "frames"


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """temp file + fsync + rename + fsync of the folder: the old file or the whole new one, never half."""
    tmp = path.with_name(path.name + ".piorch-tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename durable. Windows cannot open a folder; there the rename is all it offers."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """temp file + fsync + rename: a reader sees the old file or the whole new one, never half of it."""
    write_text_atomically(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text_atomically(path: Path, text: str) -> None:
    """As write_json_atomically, for any text (the timestamps sidecar)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # never leave half a file behind
        raise


# Room kept for a manifest from the moment its file opens, so a disk that fills during the recording can
# still say so in the manifest.
RESERVED_BYTES = 64 * 1024
_PADDING = b" " * RESERVED_BYTES


RECEIVING = "receiving"


def reserve_manifest(path: Path, file_id: str, receiving: str, started_utc: str, peer: str,
                     raw: Mapping[str, object] | None = None) -> None:
    """A placeholder `<uuid>.json` (status `receiving`) padded to RESERVED_BYTES; best effort. It says when
    and from whom the file started (and, for raw video, how its frames lie), so `recover` can tell the truth
    about a file a killed run left."""
    said: dict[str, object] = {"id": file_id, "file": receiving, "status": RECEIVING, "started_utc": started_utc,
                               "peer": peer}
    if raw is not None:
        said["raw"] = dict(raw)
    # ASCII (json.dumps escapes the rest), padded from bytes made once: no 64 KiB string to build and encode
    # again for each file, which each Pi of a fleet pays while the others start.
    text = (json.dumps(said) + "\n").encode("ascii")
    # os.open and os.write: three system calls where open() makes six (its stat, tty check and seek too), each a
    # let-go of the GIL while a fleet's other Pis want it (benchmarks/README.md, twelfth round).
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError:
        return  # no placeholder (a name taken, no room): the final manifest is tried all the same
    try:
        view = memoryview(text + _PADDING[len(text):])
        while view and (written := os.write(descriptor, view)) > 0:
            view = view[written:]
    except OSError:
        pass  # no room even for that: the final manifest is tried all the same
    finally:
        os.close(descriptor)


def read_placeholder(path: Path) -> dict[str, Any] | None:
    """What a `receiving` placeholder says; None for a finished manifest or one that cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.loads(handle.read(RESERVED_BYTES * 2).strip() or "{}")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") == RECEIVING else None


def write_manifest(path: Path, manifest: Manifest) -> str | None:
    """Write the manifest; on failure (a full disk) return why instead of raising, so the data file and
    the rest of the run are not lost over a sidecar. The caller reports the reason.

    Atomically when possible; when the disk is full, over the space reserved when the file opened (in
    place, then truncated: no new blocks are needed)."""
    data = asdict(manifest)
    try:
        write_json_atomically(path, data)
        return None
    except OSError as exc:
        problem = f"could not write {path.name} ({exc.strerror or exc})"
    encoded = (json.dumps(data, indent=2) + "\n").encode()
    try:
        if path.stat().st_size >= len(encoded):
            with open(path, "r+b") as handle:
                handle.write(encoded)
                handle.truncate(len(encoded))
                handle.flush()
                os.fsync(handle.fileno())
            return None
    except OSError:
        pass  # no reserved room either: report the first reason
    return problem
