"""`listen`: the receiver alone, for a Pi started by other means. Every connection becomes a UUID file."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from orchestrator.events import EventSink, FileFinished, Notice, State, StateChanged
from orchestrator.settings import Backend, ReceiveSettings
from orchestrator.stream.finishing import finish_received_file
from orchestrator.stream.progress import ProgressClock
from orchestrator.stream.receiver import make_receiver
from orchestrator.stream.recovery import recover_leftovers
from orchestrator.stream.writer import ReceivedFile


@dataclass(frozen=True)
class ListenResult:
    state: State
    files: tuple[FileFinished, ...]
    port: int


def run_listen(settings: ReceiveSettings, on_event: EventSink, stop: threading.Event) -> ListenResult:
    finished: list[FileFinished] = []

    def on_file(item: ReceivedFile) -> None:
        # Finished as each connection ends: a long `listen` keeps every finished file safe on disk.
        finished.append(finish_received_file(
            item, interrupted=False, failure=None, discard_partial=settings.discard_partial,
            context={"settings": {"port": settings.port, "backend": settings.backend.value}}, on_event=on_event,
        ))

    recover_leftovers(settings.out_dir, on_event, twins=False)
    if settings.backend is Backend.NC and settings.bind is None:
        # nc takes whoever connects first; on every address that may be anyone on the laptop's networks.
        on_event(Notice("warning", "the nc backend accepts any peer and listens on every address: "
                                   "use --bind with the link address, or the builtin backend"))
    receiver = make_receiver(settings, on_file, on_event)
    receiver.start()
    clock = ProgressClock(receiver, on_event, settings.out_dir, None, None)
    on_event(StateChanged(State.LISTENING, f"port {receiver.port}"))
    interrupted = False
    try:
        # Short waits on the receiver's own event: `--once` exits as soon as its connection is finished.
        while not receiver.wait_finished(0.05):
            if stop.is_set():
                interrupted = True
                break
            clock.tick()
    finally:
        receiver.stop()
        clock.tick(force=True)
    state = State.INTERRUPTED if interrupted else State.DONE
    on_event(StateChanged(state))
    return ListenResult(state, tuple(finished), receiver.port)
