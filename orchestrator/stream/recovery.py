"""Finalising `.tmp` files that a killed piorch left behind: never deleted, hashed and marked `recovered`."""

from __future__ import annotations

import fcntl
import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

from orchestrator.events import EventSink, FileFinished, FileStatus, Notice
from orchestrator.stream.manifest import Manifest, write_manifest

# Data files only; a half-written manifest (`<uuid>.json.tmp`) is rewritten from the data file instead.
DATA_SUFFIXES = (".h264.tmp", ".mjpeg.tmp", ".jpg.tmp", ".png.tmp", ".bmp.tmp", ".gif.tmp")


def _iso(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def find_leftovers(out_dir: Path) -> list[Path]:
    """`.tmp` data files no running piorch holds (a live writer keeps an exclusive flock on its file)."""
    if not out_dir.is_dir():
        return []
    found = []
    for path in sorted(out_dir.iterdir()):
        if not path.name.endswith(DATA_SUFFIXES) or not path.is_file():
            continue
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being written right now
            fcntl.flock(handle, fcntl.LOCK_UN)
        found.append(path)
    return found


def recover_file(tmp: Path, on_event: EventSink) -> FileFinished:
    """Hash, rename to the final name and write a `recovered` manifest; the bytes are never changed."""
    digest = hashlib.sha256()
    size = 0
    with open(tmp, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    stat = tmp.stat()
    final = tmp.with_name(tmp.name.removesuffix(".tmp"))
    if final.exists():
        # Never overwrite: keep both, the leftover under a name that says what it is.
        final = final.with_name(final.stem + ".recovered" + final.suffix)
    os.replace(tmp, final)
    file_id = final.name.split(".", 1)[0]
    manifest_path = final.with_name(file_id + ".json")
    old_manifest = tmp.with_name(file_id + ".json.tmp")
    old_manifest.unlink(missing_ok=True)
    problem = write_manifest(manifest_path, Manifest(
        id=file_id, file=final.name, status=FileStatus.RECOVERED.value, bytes=size, sha256=digest.hexdigest(),
        started_utc=_iso(stat.st_ctime), ended_utc=_iso(stat.st_mtime), peer="unknown",
        reason="left as .tmp by a piorch run that was killed; finalised by recover",
    ))
    if problem:
        on_event(Notice("error", problem))
    finished = FileFinished(final, None if problem else manifest_path, size, digest.hexdigest(),
                            FileStatus.RECOVERED, max(0.0, stat.st_mtime - stat.st_ctime))
    on_event(finished)
    return finished


def recover_leftovers(out_dir: Path, on_event: EventSink) -> list[FileFinished]:
    files = [recover_file(path, on_event) for path in find_leftovers(out_dir)]
    if files:
        on_event(Notice("warning", f"recovered {len(files)} file(s) left by an earlier run in {out_dir}"))
    return files
