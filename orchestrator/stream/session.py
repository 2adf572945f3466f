"""The files of one recording: segments finished as they close, remuxed off the receiving thread, and one
session manifest (`session-<uuid>.json`) that lists them in order with a common start time."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.events import EventSink, FileFinished, Notice
from orchestrator.stream.finishing import finish_received_file
from orchestrator.stream.manifest import utc_now, write_json_atomically
from orchestrator.stream.receiver import ReceivedFile
from orchestrator.stream.remux import Remuxer, RemuxResult

# A remux reads and writes the file once: allow for a slow disk before giving up waiting.
REMUX_WAIT_S = 120.0


class SessionFiles:
    def __init__(self, out_dir: Path, container: str, fps: float, keep_raw: bool, discard_partial: bool,
                 on_event: EventSink) -> None:
        self.id = str(uuid.uuid4())
        self.started_utc = utc_now()
        self._out_dir = out_dir
        self._container = container
        self._keep_raw = keep_raw
        self._discard_partial = discard_partial
        self._on_event = on_event
        self._remuxer = Remuxer(container, fps) if container != "h264" else None
        self._lock = threading.Lock()
        self._finished: list[tuple[ReceivedFile, FileFinished]] = []
        self._open_tail: list[ReceivedFile] = []
        self.context: dict[str, Any] = {}

    def on_file(self, item: ReceivedFile) -> None:
        """Receiver callback: a segment cut mid-stream is complete now; the last file waits for the end."""
        if item.ended_by == "segment":
            self._finalize(item, interrupted=False, failure=None)
        else:
            with self._lock:
                self._open_tail.append(item)

    def mark_pending(self, ended_by: str) -> None:
        """Files that ended but are not finalised yet ended because of a fault, not the camera."""
        with self._lock:
            self._open_tail = [replace(item, ended_by=ended_by) if item.ended_by == "eof" else item
                               for item in self._open_tail]

    @property
    def pending(self) -> list[ReceivedFile]:
        with self._lock:
            return list(self._open_tail)

    def finish(self, interrupted: bool, failure: str | None) -> tuple[FileFinished, ...]:
        """Finalise what is left, wait for the remuxes, write the session manifest; files in stream order."""
        with self._lock:
            tail, self._open_tail = self._open_tail, []
        for item in tail:
            self._finalize(item, interrupted, failure)
        if self._remuxer is not None and not self._remuxer.close(REMUX_WAIT_S):
            self._on_event(Notice("error", "remuxing did not finish in time; the raw .h264 files are kept"))
        with self._lock:
            done = sorted(self._finished, key=lambda pair: (pair[0].started_utc, pair[0].segment))
        files = tuple(finished for _, finished in done)
        if files:
            self._write_session_manifest(done, interrupted, failure)
        return files

    def _record(self, item: ReceivedFile, finished: FileFinished) -> None:
        with self._lock:
            self._finished.append((item, finished))

    def finish_pending(self, attempt_context: dict[str, Any]) -> None:
        """Finalise the files of an attempt that a fault ended, with that attempt's own argv and exits."""
        with self._lock:
            tail, self._open_tail = self._open_tail, []
        for item in tail:
            self._finalize(item, interrupted=False, failure=None, extra=attempt_context)

    def _finalize(self, item: ReceivedFile, interrupted: bool, failure: str | None,
                  extra: dict[str, Any] | None = None) -> None:
        # Gaps belong to the session manifest: a file finished at a gap cannot know when it ends.
        context = {k: v for k, v in {**self.context, **(extra or {})}.items() if k != "gaps"}
        context["container"] = "h264"
        finish: Callable[..., FileFinished] = finish_received_file
        if self._remuxer is None or not item.frames:
            # Nothing to remux (raw wanted, or a stream with no frame in it): the raw file is the file.
            self._record(item, finish(item, interrupted=interrupted, failure=failure,
                                      discard_partial=self._discard_partial, context=context,
                                      on_event=self._on_event))
            return

        def then(result: RemuxResult | None, error: str | None) -> None:
            # On the remux thread: the playable file replaces the raw one unless --keep-raw (or it failed).
            if result is not None and not self._keep_raw:
                item.path.unlink(missing_ok=True)
            extra = {
                "container": self._container if result else "h264",
                "duration_s": round(result.duration_s, 3) if result else None,
                "remux_error": error,
                "raw_file": item.path.name if result is None or self._keep_raw else None,
            }
            if error:
                self._on_event(Notice("error", f"{error}; the raw {item.path.name} is kept"))
            self._record(item, finish(item, interrupted=interrupted, failure=failure,
                                      discard_partial=self._discard_partial, context={**context, **extra},
                                      on_event=self._on_event, playable=result.path if result else None))

        self._remuxer.submit(item.path, then)

    def _write_session_manifest(self, done: list[tuple[ReceivedFile, FileFinished]], interrupted: bool,
                                failure: str | None) -> None:
        status = "interrupted" if interrupted else "failed" if failure else "complete"
        data = {
            "session": self.id, "started_utc": self.started_utc, "ended_utc": utc_now(), "status": status,
            "reason": failure or "",
            **{k: v for k, v in self.context.items() if k in ("pi", "tool", "settings", "health_warnings", "gaps")},
            "files": [
                {"id": item.id, "file": finished.path.name, "segment": item.segment, "status": finished.status.value,
                 "bytes": item.bytes, "sha256": item.sha256, "frames": item.frames, "removed": finished.removed}
                for item, finished in done
            ],
        }
        try:
            write_json_atomically(self._out_dir / f"session-{self.id}.json", data)
        except OSError as exc:
            self._on_event(Notice("error", f"could not write the session manifest ({exc.strerror or exc})"))
