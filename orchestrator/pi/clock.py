"""How far the Pi's clock is from the laptop's: several round trips over SSH, the tightest one kept.

Each sample has the Pi run `date +%s.%N` between two readings of the laptop's clock. The Pi read its clock
somewhere inside that round trip, so offset = pi_time - midpoint, and the error is at most half the round
trip. Clips from several Pis line up on the laptop's clock with these offsets.

One command serves every sample: a shell loop that answers each line sent to it with the time. A sample is
then one packet each way (the first also opens the channel); a command per sample would open a channel and
start a login shell on the Pi each time, round trips and CPU that a Pi Zero recording video can spare less.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.errors import PiorchError
from orchestrator.pi.host import STOP_POLL_S, Host, Process

SAMPLES = 5
CLOCK_COMMAND = "date +%s.%N"
# Each answer carries the number of the line it answers: whatever else the login prints (a .bashrc that
# echoes) is no answer, and a late answer is never taken for the next sample's. Ends when its input does:
# piorch closes the channel once it has its samples.
CLOCK_MARK = "piorch-clock"
CLOCK_LOOP = f'while read -r n; do echo "{CLOCK_MARK} $n $({CLOCK_COMMAND})"; done'
# How long one answer may take (a command per sample was given as long).
ANSWER_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ClockOffset:
    # Pi clock minus laptop clock, in seconds (positive: the Pi is ahead).
    offset_s: float
    # Half the tightest round trip: the offset is right to within this.
    uncertainty_s: float
    samples: int


def parse_pi_time(text: str) -> float | None:
    """`1764633600.123456789` -> seconds; None for anything else (a `date` without %N prints `...N`)."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value > 0 else None


def best_offset(samples: Sequence[tuple[float, float, float]]) -> ClockOffset | None:
    """(laptop before, pi, laptop after) triples -> the offset from the tightest round trip (pure)."""
    valid = [(after - before, pi - (before + after) / 2) for before, pi, after in samples if after >= before]
    if not valid:
        return None
    round_trip, offset = min(valid)
    return ClockOffset(round(offset, 6), round(round_trip / 2, 6), len(valid))


def measure_clock_offset(host: Host, samples: int = SAMPLES, clock: Callable[[], float] = time.time,
                         stop: threading.Event | None = None) -> ClockOffset | None:
    """Sample the Pi's clock `samples` times; None when the Pi's `date` cannot say sub-seconds. A sample that
    fails ends the sampling (the link is failing: more tries would only wait); so does `stop`."""
    try:
        process = host.start(CLOCK_LOOP)
    except PiorchError:
        return None
    if not process.takes_input:  # a Host of someone else's making: a command a sample, as piorch did before
        process.close()
        return sample_by_commands(host, samples, clock, stop)
    triples = []
    try:
        for number in range(1, samples + 1):
            if stop is not None and stop.is_set():
                break
            before = clock()
            if not process.send(f"{number}\n".encode()):
                break
            answer = _answer(process, number, stop)
            after = clock()
            if answer is None:
                break  # no answer in time, the loop ended, or stopped
            pi = parse_pi_time(answer)
            if pi is not None:
                triples.append((before, pi, after))
    finally:
        process.close()
    return best_offset(triples)


def sample_by_commands(host: Host, samples: int, clock: Callable[[], float],
                       stop: threading.Event | None) -> ClockOffset | None:
    """One `date` command a sample, timed around the whole command (a channel and a shell each time): for a
    Host whose commands take no input, and benchmarks/clock_offset.py's baseline."""
    triples = []
    for _ in range(samples):
        if stop is not None and stop.is_set():
            break
        before = clock()
        try:
            result = host.run(CLOCK_COMMAND, timeout=ANSWER_TIMEOUT_S, stop=stop)
        except PiorchError:
            break
        after = clock()
        pi = parse_pi_time(result.stdout)
        if pi is not None:
            triples.append((before, pi, after))
    return best_offset(triples)


def _answer(process: Process, number: int, stop: threading.Event | None) -> str | None:
    """What the loop printed for line `number` (the Pi's time, as `date` wrote it); None when it did not come
    in time, the loop ended, or `stop` was set. Other lines are passed over."""
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0 and not (stop is not None and stop.is_set()):
        line = process.next_line(min(STOP_POLL_S, left))
        if line is None:
            return None
        mark, _, rest = line.partition(" ")
        said, _, pi_time = rest.partition(" ")
        if mark == CLOCK_MARK and said == str(number):
            return pi_time
    return None
