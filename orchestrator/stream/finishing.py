"""What happens to a received file when its connection ends: its status, its manifest, its fate.

Shared by `record` and `listen`, so a file means the same thing whichever command received it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from orchestrator.events import Ending, EventSink, FileFinished, FileStatus, Notice
from orchestrator.stream.manifest import Manifest, write_manifest
from orchestrator.stream.writer import ReceivedFile


def decide_status(item: ReceivedFile, interrupted: bool, failure: str | None) -> tuple[FileStatus, str]:
    """Pure, and the one place a file's status is decided: a receiving or write error fails the file; a lost
    link marks it; a stop interrupts it; a failed camera fails it; else it is complete."""
    if item.ended_by is Ending.FAILED:
        return FileStatus.FAILED, item.error
    if item.ended_by.link_fault:
        return FileStatus.LINK_LOST, "the link to the Pi was lost here; see the session manifest's gaps"
    if interrupted or item.ended_by is Ending.STOPPED:
        return FileStatus.INTERRUPTED, "stopped by the user"
    if failure:
        return FileStatus.FAILED, failure
    return FileStatus.COMPLETE, ""


def finish_received_file(
    item: ReceivedFile, *, interrupted: bool, failure: str | None, discard_partial: bool,
    context: dict[str, Any], on_event: EventSink, playable: Path | None = None,
) -> FileFinished:
    """Write the manifest beside the file, or remove an interrupted file when the user asked to.

    `context` carries what only the caller knows (pi, tool, remote_argv, settings, remote_exit, container
    details, remux_error). `playable` is the remuxed file that replaces the raw one in the manifest, when
    there is one. The file's lock is released once its manifest is final.
    """
    try:
        status, reason = decide_status(item, interrupted, failure)
        removed = status is FileStatus.INTERRUPTED and discard_partial
        manifest_path = item.path.with_name(item.id + ".json")
        manifest: Any = None
        shown = playable or item.path
        fps = item.frames / item.duration_s if item.frames and item.duration_s > 0 else None
        if removed:
            manifest_path.unlink(missing_ok=True)  # the placeholder reserved when the file opened
            if item.path.is_dir():
                shutil.rmtree(item.path)  # the frames folder of an interrupted MJPEG recording
            else:
                item.path.unlink(missing_ok=True)
            if playable is not None:
                playable.unlink(missing_ok=True)
            if context.get("pts_file"):
                item.path.with_name(context["pts_file"]).unlink(missing_ok=True)
        else:
            fields: dict[str, Any] = {
                "fps_measured": round(fps, 3) if fps else None,  # on arrival; the camera's clock overrides it
                **context,
            }
            problem = write_manifest(manifest_path, Manifest(
                id=item.id, file=shown.name, status=status.value, bytes=item.bytes, sha256=item.sha256,
                started_utc=item.started_utc, ended_utc=item.ended_utc, peer=item.peer, reason=reason,
                frames=item.frames, iframes=item.iframes,
                segment=item.segment, frame_list=list(item.frame_list) or None,
                partial_frames=sum(not frame["complete"] for frame in item.frame_list) if item.frame_list else None,
                **fields,
            ))
            if problem is None:
                manifest = manifest_path
            else:
                on_event(Notice("error", f"{problem}; {item.path.name} itself is kept"))
        finished = FileFinished(shown, manifest, item.bytes, item.sha256, status, item.duration_s, removed,
                                remux_error=context.get("remux_error"), frames_dropped=context.get("frames_dropped"))
        on_event(finished)
        return finished
    finally:
        item.release()
