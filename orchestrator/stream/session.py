"""The files of one recording: segments finished as they close, remuxed off the receiving thread, and one
session manifest (`session-<uuid>.json`) that lists them in order with a common start time.

When the camera sends its frame timestamps (frame_times.py), each file gets a sidecar `<uuid>.pts` in
timecode format v2 with exactly the camera's times of its frames (a segment's continue the run's clock), its
manifest says `timestamps: camera` with the frames dropped, the longest gap and the rate measured on the
camera's clock, and its MP4/MKV carries those times; otherwise `timestamps: frame-rate`.

Every file that arrived ends with a finished manifest, whatever fails after its bytes came: a remux that
fails, raises or outlives its wait leaves the raw stream as the file (status kept, `remux_error` said);
a file whose connection ends after `finish` (a receiving thread that `stop` could not join) is finished
when it comes, and the session manifest is written again with it.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.events import Ending, EventSink, FileFinished, FileStatus, Notice
from orchestrator.stream.finishing import finish_received_file
from orchestrator.stream.frame_times import FileTimes
from orchestrator.stream.manifest import stream_container, utc_now, write_json_atomically, write_text_atomically
from orchestrator.stream.remux import Remuxer, RemuxResult
from orchestrator.stream.timecodes import build_timecode_text
from orchestrator.stream.writer import ReceivedFile

# A remux reads and writes the file once: allow for a slow disk before giving up waiting.
REMUX_WAIT_S = 120.0
# A segment cut mid-stream waits this long for the timestamps of its last frames, which travel over SSH
# while its bytes came over the data connection (flushed frame by frame, they are normally there already).
TIMES_WAIT_S = 5.0
# What a file's manifest and its session entry carry about its frame times.
CLOCK_KEYS = ("timestamps", "pts_file", "first_pts_ms", "frames_dropped", "longest_gap_ms", "timestamps_missing")
# Context that only the session manifest carries.
SESSION_ONLY = ("gaps", "clock_offset_s", "clock_uncertainty_s")
# Context the session manifest carries.
SESSION_KEYS = ("pi", "tool", "settings", "health_warnings", "gaps", "timestamps", "clock_offset_s",
                "clock_uncertainty_s")


@dataclass
class _Remux:
    """A file waiting for its remux. `claimed` once someone finishes it: the remux, or `finish` giving up."""

    item: ReceivedFile
    interrupted: bool
    failure: str | None
    context: dict[str, Any]
    claimed: bool = False


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
        self._remuxer = Remuxer(container, fps, on_event) if container != "h264" else None
        self._lock = threading.Lock()
        # Each finished file with what its manifest said about its frame times (CLOCK_KEYS).
        self._finished: list[tuple[ReceivedFile, FileFinished, dict[str, Any]]] = []
        self._open_tail: list[ReceivedFile] = []
        self._remuxing: list[_Remux] = []
        # Set by `finish` (interrupted, failure): files that come later are finished as they come.
        self._ended: tuple[bool, str | None] | None = None
        self._manifest_lock = threading.Lock()
        self.context: dict[str, Any] = {}

    def on_file(self, item: ReceivedFile) -> None:
        """Receiver callback: a segment cut mid-stream is complete now; the last file waits for the end."""
        with self._lock:
            ended = self._ended
            if ended is None and item.ended_by is not Ending.SEGMENT:
                self._open_tail.append(item)
                return
        if ended is None:
            self._finalize(item, interrupted=False, failure=None)
            return
        # A straggler: its connection ended after the recording was finished.
        self._finalize(item, *ended, late=True)
        self._write_session_manifest()

    def mark_pending(self, ended_by: Ending) -> None:
        """Files that ended but are not finalised yet ended because of a fault, not the camera."""
        with self._lock:
            self._open_tail = [replace(item, ended_by=ended_by) if item.ended_by is Ending.DONE else item
                               for item in self._open_tail]

    @property
    def pending(self) -> list[ReceivedFile]:
        with self._lock:
            return list(self._open_tail)

    def finish(self, interrupted: bool, failure: str | None) -> tuple[FileFinished, ...]:
        """Finalise what is left, wait for the remuxes, write the session manifest; files in stream order."""
        with self._lock:
            tail, self._open_tail = self._open_tail, []
            self._ended = (interrupted, failure)
        for item in tail:
            self._finalize(item, interrupted, failure)
        if self._remuxer is not None and not self._remuxer.close(REMUX_WAIT_S):
            with self._lock:
                left = [job for job in self._remuxing if not job.claimed]
                for job in left:
                    job.claimed = True
                self._remuxing.clear()
            for job in left:
                self._complete_remux(job, None, f"remuxing {job.item.path.name} did not finish within "
                                                f"{REMUX_WAIT_S:g} s")
        return self._write_session_manifest()

    def abandon(self) -> None:
        """The recording never started (its start raised): the remux worker ends, no manifest is written."""
        if self._remuxer is not None:
            self._remuxer.close(0)

    def finish_pending(self, attempt_context: dict[str, Any]) -> None:
        """Finalise the files of an attempt that a fault ended, with that attempt's own argv and exits."""
        with self._lock:
            tail, self._open_tail = self._open_tail, []
        for item in tail:
            self._finalize(item, interrupted=False, failure=None, extra=attempt_context)

    def _finish_file(self, item: ReceivedFile, interrupted: bool, failure: str | None, context: dict[str, Any],
                     playable: Path | None = None) -> None:
        finished = finish_received_file(item, interrupted=interrupted, failure=failure,
                                        discard_partial=self._discard_partial, context=context,
                                        on_event=self._on_event, playable=playable)
        clock = {key: context.get(key) for key in CLOCK_KEYS if key in context}
        with self._lock:
            self._finished.append((item, finished, clock))

    def _finalize(self, item: ReceivedFile, interrupted: bool, failure: str | None,
                  extra: dict[str, Any] | None = None, late: bool = False) -> None:
        # Gaps and clock offsets belong to the session manifest: a file finished at a gap cannot know when
        # it ends, and the offset is the Pi's, not the file's.
        context = {k: v for k, v in {**self.context, **(extra or {})}.items() if k not in SESSION_ONLY}
        context["container"] = stream_container(item.path)
        times = self._file_times(item)
        item = self._add_frame_times(item, times, context)
        job = _Remux(item, interrupted, failure, context)
        if self._remuxer is None or not item.frames or item.path.name.endswith(".tmp"):
            # Nothing to remux (raw wanted, a stream with no frame in it, or bytes that could not even be
            # renamed: the file failed and stays exactly as it is): the raw file is the file.
            self._finish_file(item, interrupted, failure, context)
        elif late:
            self._complete_remux(job, None, f"{item.path.name} arrived after the recording ended and was not "
                                            "remuxed")
        else:
            with self._lock:
                self._remuxing.append(job)
            self._remuxer.submit(item.path, lambda result, error: self._remuxed(job, result, error),
                                 times.times if times is not None else ())

    def _file_times(self, item: ReceivedFile) -> FileTimes | None:
        """The camera's timestamps of this file's frames, None when the camera sends none."""
        run = item.camera_run
        if run is None:
            return None
        # Split MJPEG counts whole pictures in `frames`; every picture the camera wrote has its time.
        count = len(item.frame_list) if item.frame_list else item.frames
        return run.take(item.first_frame, count, TIMES_WAIT_S)

    def _add_frame_times(self, item: ReceivedFile, times: FileTimes | None, context: dict[str, Any]) -> ReceivedFile:
        """The sidecar `<uuid>.pts` and what the manifest says of the file's clock; split MJPEG frames each
        get their time in the frame list."""
        if times is None or not times.times:
            context["timestamps"] = "frame-rate"
            return item
        sidecar = item.path.parent / f"{item.id}.pts"
        try:
            write_text_atomically(sidecar, build_timecode_text(times.times))
        except OSError as exc:
            self._on_event(Notice("error", f"could not write {sidecar.name} ({exc.strerror or exc}); "
                                           f"{item.path.name} itself is kept"))
            context["timestamps"] = "frame-rate"
            return item
        integrity = times.integrity()
        context.update({
            "timestamps": "camera", "pts_file": sidecar.name, "first_pts_ms": min(times.times),
            "frames_dropped": integrity.frames_dropped, "longest_gap_ms": integrity.longest_gap_ms,
            "timestamps_missing": times.missing, "fps_measured": integrity.fps_measured,
        })
        if item.frame_list:
            stamps = times.times
            item = replace(item, frame_list=tuple({**frame, "pts_ms": stamps[index] if index < len(stamps) else None}
                                                  for index, frame in enumerate(item.frame_list)))
        return item

    def _remuxed(self, job: _Remux, result: RemuxResult | None, error: str | None) -> None:
        """On the remux thread."""
        with self._lock:
            lost = job.claimed
            job.claimed = True
            if job in self._remuxing:
                self._remuxing.remove(job)
        if lost:
            # `finish` gave up waiting and finished the file with its raw stream: the late result goes.
            if result is not None:
                result.path.unlink(missing_ok=True)
            return
        self._complete_remux(job, result, error)

    def _complete_remux(self, job: _Remux, result: RemuxResult | None, error: str | None) -> None:
        """The playable file replaces the raw one unless --keep-raw; without it the raw file is the file."""
        item = job.item
        extra = {
            "container": self._container if result else stream_container(item.path),
            "duration_s": round(result.duration_s, 3) if result else None,
            "remux_error": error,
            "raw_file": item.path.name if result is None or self._keep_raw else None,
        }
        if error:
            self._on_event(Notice("warning", f"{error}; the raw {item.path.name} is kept"))
        self._finish_file(item, job.interrupted, job.failure, {**job.context, **extra},
                          playable=result.path if result else None)
        if result is not None and not self._keep_raw:
            # After the manifest names the playable file: a crash in between leaves both, never neither.
            item.path.unlink(missing_ok=True)

    def _write_session_manifest(self) -> tuple[FileFinished, ...]:
        with self._lock:
            done = sorted(self._finished, key=lambda entry: (entry[0].started_utc, entry[0].segment))
            interrupted, failure = self._ended or (False, None)
        files = tuple(finished for _, finished, _ in done)
        if not files:
            return files
        failed = sum(finished.status is FileStatus.FAILED for finished in files)
        status = "interrupted" if interrupted else "failed" if failure or failed else "complete"
        dropped = [clock["frames_dropped"] for _, _, clock in done if clock.get("frames_dropped") is not None]
        data = {
            "session": self.id, "started_utc": self.started_utc, "ended_utc": utc_now(), "status": status,
            "reason": failure or (f"{failed} file(s) failed: their manifests say why" if failed else ""),
            **{k: v for k, v in self.context.items() if k in SESSION_KEYS},
            # Over every file with camera timestamps; None when no file has any.
            "frames_dropped": sum(dropped) if dropped else None,
            "files": [
                {"id": item.id, "file": finished.path.name, "segment": item.segment, "status": finished.status.value,
                 "bytes": item.bytes, "sha256": item.sha256, "frames": item.frames, "removed": finished.removed,
                 # When the file's first bytes reached the laptop, on the laptop's clock: with clock_offset_s,
                 # what lines up the files of several Pis.
                 "first_frame_utc": item.started_utc,
                 **({k: v for k, v in clock.items() if k != "pts_file" or not finished.removed})}
                for item, finished, clock in done
            ],
        }
        with self._manifest_lock:
            try:
                write_json_atomically(self._out_dir / f"session-{self.id}.json", data)
            except OSError as exc:
                self._on_event(Notice("error", f"could not write the session manifest ({exc.strerror or exc})"))
        return files
