"""Frame timestamps (timecode format v2) and the Pi's clock offset: pure tables, plus the offset measured
for real against the local host (offset ~0, uncertainty half a real round trip)."""

from __future__ import annotations

import threading
import time

import pytest

from orchestrator.pi.clock import CLOCK_LOOP, CLOCK_MARK, best_offset, measure_clock_offset, parse_pi_time
from orchestrator.pi.host import LocalHost, Process, PumpedProcess
from orchestrator.stream.timecodes import (
    HEADER,
    IntegrityCounter,
    build_timecode_text,
    measure,
    parse_timecode_line,
)


@pytest.mark.parametrize("line,value", [("33.370", 33.37), ("0.000\n", 0.0), (HEADER, None), ("", None),
                                        ("  # comment", None), ("1000", 1000.0)])
def test_timecode_lines(line: str, value: float | None) -> None:
    assert parse_timecode_line(line) == value


@pytest.mark.parametrize("line", ["abc", "-1.0", "nan", "12.5.3"])
def test_bad_timecode_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse_timecode_line(line)


def test_sidecar_text_reads_back_exactly() -> None:
    times = [0.0, 33.366, 66.733, 100.1]
    text = build_timecode_text(times)
    assert text.splitlines()[0] == HEADER
    assert [parse_timecode_line(line) for line in text.splitlines()[1:]] == times


@pytest.mark.parametrize("times,fps,frames,dropped,longest", [
    ([0, 40, 80, 120], 25, 4, 0, 40),
    ([0, 40, 120, 160], 25, 4, 1, 80),  # one frame missing
    ([0, 40, 200, 240], 25, 4, 3, 160),  # three missing
    ([0, 40, 99, 139], 25, 4, 0, 59),  # 59 ms is under 1.5 intervals (60 ms): late, not dropped
    ([], 25, 0, 0, 0),
    ([5.0], 25, 1, 0, 0),
])
def test_dropped_frames_are_gaps_over_one_and_a_half_intervals(
        times: list[float], fps: float, frames: int, dropped: int, longest: float) -> None:
    result = measure(times, fps)
    assert (result.frames, result.frames_dropped, result.longest_gap_ms) == (frames, dropped, longest)


def test_without_the_asked_rate_the_typical_gap_decides() -> None:
    times = [i * 33.333 for i in range(30)] + [30 * 33.333 + 100]  # then a gap of ~4 intervals
    counter = IntegrityCounter()
    drops = [counter.add(time) for time in times]
    assert drops[-1] == 3 and sum(drops) == 3
    assert counter.result().fps_measured is not None


def test_offset_keeps_the_tightest_round_trip() -> None:
    samples = [(100.0, 105.2, 100.4), (200.0, 205.05, 200.1), (300.0, 305.5, 301.0)]
    offset = best_offset(samples)
    assert offset is not None and offset.offset_s == pytest.approx(5.0) and offset.uncertainty_s == 0.05
    assert best_offset([]) is None and best_offset([(2.0, 1.0, 1.0)]) is None


@pytest.mark.parametrize("text,value", [("1764633600.123456789\n", 1764633600.123456789), ("1764633600.N", None),
                                        ("", None), ("-5", None)])
def test_pi_time(text: str, value: float | None) -> None:
    assert parse_pi_time(text) == value


class CountingHost(LocalHost):
    """The local shell, counting the commands started on it."""

    def __init__(self) -> None:
        super().__init__("laptop")
        self.commands: list[str] = []

    def start(self, command: str) -> Process:
        self.commands.append(command)
        return super().start(command)


def test_offset_measured_against_this_machine_is_near_zero() -> None:
    host = CountingHost()
    offset = measure_clock_offset(host)
    assert offset is not None and offset.samples == 5
    assert abs(offset.offset_s) <= offset.uncertainty_s + 0.001
    # Every sample through one command (on a Pi: one channel, one shell), not one command a sample.
    assert host.commands == [CLOCK_LOOP]


def test_a_date_without_subseconds_gives_no_offset_and_ends_the_loop() -> None:
    # busybox's `date` prints `%N` as is: no offset, and the loop command is still closed at the end.
    class NoNanoseconds(CountingHost):
        def start(self, command: str) -> Process:
            return super().start(command.replace("%N", "N"))

    host = NoNanoseconds()
    assert measure_clock_offset(host) is None
    assert len(host.commands) == 1


def test_what_the_login_prints_is_no_answer() -> None:
    # A .bashrc that echoes, even a line that looks like an answer to a later sample: passed over.
    class Chatty(CountingHost):
        def start(self, command: str) -> Process:
            return super().start(f'echo "welcome"; echo "{CLOCK_MARK} 2 1.5"; {command}')

    offset = measure_clock_offset(Chatty())
    assert offset is not None and offset.samples == 5
    assert abs(offset.offset_s) <= offset.uncertainty_s + 0.001


def test_a_host_whose_commands_take_no_input_is_sampled_a_command_at_a_time() -> None:
    # A Host of someone else's making (its Process has no writer): one `date` command a sample, as before.
    class Deaf(CountingHost):
        def start(self, command: str) -> Process:
            process = super().start(command)
            if command != CLOCK_LOOP:
                return process
            process.close()
            return PumpedProcess(lambda size: b"", lambda size: b"", lambda timeout: 0, lambda: None)

    host = Deaf()
    offset = measure_clock_offset(host)
    assert offset is not None and offset.samples == 5
    assert host.commands == [CLOCK_LOOP] + ["date +%s.%N"] * 5


def test_a_loop_that_has_already_ended_gives_no_offset_and_no_traceback() -> None:
    # The command is gone before the first line (a ControlMaster that just died): its input is a broken
    # pipe; sending says so, and closing it raises nothing.
    class Gone(CountingHost):
        def start(self, command: str) -> Process:
            process = super().start("exit 255")
            time.sleep(0.2)
            return process

    assert measure_clock_offset(Gone()) is None


def test_a_stop_ends_the_sampling() -> None:
    stop = threading.Event()
    stop.set()
    assert measure_clock_offset(CountingHost(), stop=stop) is None
