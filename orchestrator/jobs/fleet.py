"""Several Pis at once: one recording per Pi, each in its own thread with its own SSH connection, port
and folder, all sharing the stop signal. One failing Pi does not stop the others. A session manifest at
the top of the output folder ties the runs together with their common start time."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import Interrupted, PiorchError
from orchestrator.events import Event, FileFinished, Notice, State, StateChanged
from orchestrator.jobs.record import RecordResult, run_recording
from orchestrator.pi.host import Host
from orchestrator.settings import RecordSettings
from orchestrator.stream.manifest import utc_now, write_json_atomically

# Each Pi's recording joins within its own deadlines; this only bounds a thread stuck beyond them.
# How often the main thread wakes while it waits (to run a pending signal handler).
WAKE_S = 0.2
JOIN_S = 60.0


@dataclass(frozen=True)
class FromPi:
    """An event of one Pi's recording, tagged with the Pi's name for the shared display."""

    pi: str
    event: Event


FleetSink = Callable[[FromPi], None]


@dataclass(frozen=True)
class PiOutcome:
    pi: str
    folder: Path
    result: RecordResult | None
    error: str = ""
    fix: str = ""
    # Stopped (Ctrl+C, SIGTERM) before its recording began: while connecting or probing.
    interrupted: bool = False

    @property
    def state(self) -> State:
        if self.result is not None:
            return self.result.state
        return State.INTERRUPTED if self.interrupted else State.FAILED


@dataclass(frozen=True)
class FleetResult:
    session: str
    outcomes: tuple[PiOutcome, ...] = field(default_factory=tuple)

    @property
    def files(self) -> tuple[FileFinished, ...]:
        return tuple(f for outcome in self.outcomes if outcome.result for f in outcome.result.files)


def _new_thread(target: str, work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, name=f"piorch-{target}", daemon=True)
    thread.start()
    return thread


def run_fleet(
    plan: list[tuple[str, RecordSettings]], connect: Callable[[str], Host], on_event: FleetSink,
    stop: threading.Event, reconnect: Callable[[str], Host] | None = None,
    start: Callable[[str, Callable[[], None]], threading.Thread] = _new_thread,
    on_stop: Callable[[], None] | None = None,
) -> FleetResult:
    """`start(target, work)` runs one Pi's work on a thread and returns it (by default a new thread; the
    record command runs it on the thread that is logging in to that Pi). `on_stop` is called once when the
    stop event is seen while Pis still run (to cut short logins nobody waits on)."""
    session = str(uuid.uuid4())
    started = utc_now()
    outcomes: dict[str, PiOutcome] = {}
    lock = threading.Lock()

    def one(target: str, settings: RecordSettings) -> None:
        def tagged(event: Event) -> None:
            on_event(FromPi(target, event))

        outcome: PiOutcome
        host: Host | None = None
        try:
            host = connect(target)
            # After a link loss: `reconnect` when given (it may connect otherwise), else `connect` again.
            again = reconnect or connect
            result = run_recording(settings, host, tagged, stop, reconnect=lambda: again(target))
            outcome = PiOutcome(target, settings.receive.out_dir, result)
        except Interrupted as exc:
            tagged(StateChanged(State.INTERRUPTED, exc.message))
            outcome = PiOutcome(target, settings.receive.out_dir, None, exc.message, exc.fix, interrupted=True)
        except PiorchError as exc:
            tagged(StateChanged(State.FAILED, exc.message))
            outcome = PiOutcome(target, settings.receive.out_dir, None, exc.message, exc.fix)
        except Exception as exc:  # one Pi's bug must not take the others down: reported, never hidden
            tagged(StateChanged(State.FAILED, f"{type(exc).__name__}: {exc}"))
            outcome = PiOutcome(target, settings.receive.out_dir, None, f"{type(exc).__name__}: {exc}")
        finally:
            if host is not None:
                host.close()
        with lock:
            outcomes[target] = outcome

    threads = []
    for target, settings in plan:
        # Said here, not by the Pi's thread: started on a login's thread, its work begins once logged in.
        on_event(FromPi(target, StateChanged(State.CONNECTING, target)))
        threads.append(start(target, functools.partial(one, target, settings)))
    told = False
    for thread in threads:
        # Short joins, never one without a deadline: a signal the kernel hands to another thread reaches the
        # main thread's handler only when it wakes, and Ctrl+C must set `stop` at once. While recording each
        # run has its own deadline; after Ctrl+C each thread gets JOIN_S more.
        while thread.is_alive() and not stop.is_set():
            thread.join(WAKE_S)
        if stop.is_set() and on_stop is not None and not told:
            told = True
            on_stop()
        thread.join(JOIN_S)
    result = FleetResult(session, tuple(outcomes.get(target, PiOutcome(target, settings.receive.out_dir, None,
                                                                      "did not finish in time"))
                                        for target, settings in plan))
    _write_fleet_manifest(plan[0][1].receive.out_dir.parent, result, started, on_event)
    return result


def _write_fleet_manifest(out: Path, result: FleetResult, started: str, on_event: FleetSink) -> None:
    data = {
        "session": result.session, "started_utc": started, "ended_utc": utc_now(),
        "pis": [
            {"pi": o.pi, "folder": o.folder.name, "state": o.state.value, "error": o.error,
             # The Pi's clock minus the laptop's (and half the round trip it is sure to): with each file's
             # first_frame_utc in the Pi's own session manifest, what lines the Pis' clips up.
             **_offset_fields(o.result),
             "files": [str(f.path.relative_to(out)) for f in (o.result.files if o.result else ())
                       if not f.removed]}
            for o in result.outcomes
        ],
    }
    try:
        # No Pi may have got as far as its folder (all stopped while connecting): the run is still told.
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomically(out / f"session-{result.session}.json", data)
    except OSError as exc:
        on_event(FromPi("", Notice("error", f"could not write the session manifest ({exc.strerror or exc})")))


def _offset_fields(result: RecordResult | None) -> dict[str, float | None]:
    offset = result.clock_offset if result is not None else None
    return {"clock_offset_s": offset.offset_s if offset else None,
            "clock_uncertainty_s": offset.uncertainty_s if offset else None}
