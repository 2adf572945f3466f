"""`listen`: the receiver alone, for a Pi started by other means. Every connection becomes a UUID file."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from orchestrator.events import EventSink, FileFinished, FileStatus, State, StateChanged
from orchestrator.manifest import Manifest, write_manifest
from orchestrator.progress import ProgressClock
from orchestrator.receiver import ReceivedFile, make_receiver
from orchestrator.settings import ReceiveSettings


@dataclass(frozen=True)
class ListenResult:
    state: State
    files: tuple[FileFinished, ...]
    port: int


def run_listen(settings: ReceiveSettings, on_event: EventSink, stop: threading.Event) -> ListenResult:
    finished: list[FileFinished] = []

    def on_file(item: ReceivedFile) -> None:
        # Written as each connection ends: a long `listen` keeps every finished file safe on disk.
        if item.ended_by.startswith("error"):
            status, reason = FileStatus.FAILED, item.ended_by
        elif item.ended_by == "stopped":
            status, reason = FileStatus.INTERRUPTED, "stopped by the user"
        else:
            status, reason = FileStatus.COMPLETE, ""
        removed = status is FileStatus.INTERRUPTED and settings.discard_partial
        manifest_path = item.path.with_name(item.id + ".json")
        if removed:
            item.path.unlink(missing_ok=True)
        else:
            write_manifest(manifest_path, Manifest(
                id=item.id, file=item.path.name, status=status.value, bytes=item.bytes, sha256=item.sha256,
                started_utc=item.started_utc, ended_utc=item.ended_utc, peer=item.peer,
                settings={"port": settings.port, "backend": settings.backend.value}, reason=reason,
            ))
        event = FileFinished(item.path, None if removed else manifest_path, item.bytes, item.sha256, status,
                             item.duration_s, removed)
        finished.append(event)
        on_event(event)

    receiver = make_receiver(settings, on_file, on_event)
    receiver.start()
    clock = ProgressClock(receiver, on_event, settings.out_dir, None, None)
    on_event(StateChanged(State.LISTENING, f"port {receiver.port}"))
    interrupted = False
    try:
        while not receiver.finished:
            if stop.wait(0.2):
                interrupted = True
                break
            clock.tick()
    finally:
        receiver.stop()
        clock.tick(force=True)
    state = State.INTERRUPTED if interrupted else State.DONE
    on_event(StateChanged(state))
    return ListenResult(state, tuple(finished), receiver.port)
