"""One worker thread per receiver that does, in order, the slow steps after a file ends.

The receiving thread must only read and write: fsync, waiting for the hash, renames, manifests, remux
submission and log lines would stall the socket behind a slow disk or a slow terminal. They are queued
here instead and run one after the other, so files are finished in the order they ended and events reach
the subscribers in the order they happened.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

Job = Callable[[], None]


class Closer:
    """`put(job)` queues; `close(timeout)` lets the queue drain and stops. A job that raises is reported
    through `on_error` and the next job runs: the worker never dies with a traceback. A job put after the
    worker has stopped (a connection that ended after `stop`) runs on the caller's thread.

    The worker starts with the first job it is given (a file's start, announced once its first bytes are
    written), not with the receiver: a recording's start (every Pi's of a fleet at once) has one thread
    less to start before the camera starts."""

    def __init__(self, on_error: Callable[[str], None], name: str = "piorch-closer") -> None:
        self._on_error = on_error
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._exited = False
        self.thread = threading.Thread(target=self._work, daemon=True, name=name)

    @property
    def queued(self) -> int:
        with self._ready:
            return len(self._jobs)

    def put(self, job: Job) -> None:
        with self._ready:
            if not self._exited and self.thread.ident is None and not self._closing:
                try:
                    self.thread.start()
                except RuntimeError:
                    # No thread to be had (the system's limit, the interpreter ending): every job, this one
                    # first, runs on its caller's thread, so none is left waiting for a worker.
                    self._exited = True
            if not self._exited:
                self._jobs.append(job)
                self._ready.notify()
                return
        self._run(job)

    def _run(self, job: Job) -> None:
        try:
            job()
        except Exception as exc:  # reported as a line, never a dead worker: the files after it still finish
            self._on_error(f"finishing a received file failed ({type(exc).__name__}: {exc})")

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._closing:
                    self._ready.wait()
                if not self._jobs:
                    self._exited = True
                    return
                job = self._jobs.popleft()
            self._run(job)

    def close(self, timeout: float) -> bool:
        """Finish what is queued, then stop; False when the deadline came first (the worker goes on)."""
        with self._ready:
            self._closing = True
            if self.thread.ident is None:
                # Never started: nothing was ever queued. Later jobs run on their callers' threads.
                self._exited = True
                return True
            self._ready.notify()
        self.thread.join(timeout)
        return not self.thread.is_alive()
