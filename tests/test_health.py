"""Pi health: the script, the parser (real vcgencmd and /proc outputs, odd ones too), warnings, and a real
run through a local Host with a real process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import RemoteError
from orchestrator.pi.health import (
    PiHealth,
    build_health_script,
    decode_throttled,
    health_warnings,
    parse_health,
    read_health,
)
from orchestrator.pi.host import LocalHost
from tests.stand_in_pi import install_vcgencmd

M = "piorch-health"


def reading(*lines: str, done: bool = True) -> str:
    return "\n".join([*lines, *([f"{M}-done"] if done else [])]) + "\n"


@pytest.mark.parametrize(
    ("value", "now", "since"),
    [
        (0x0, (), ()),
        (0x50005, ("under-voltage", "throttled"), ("under-voltage", "throttled")),
        (0x50000, (), ("under-voltage", "throttled")),
        (0x80008, ("soft temperature limit",), ("soft temperature limit",)),
        (0xE0000, (), ("frequency capped", "throttled", "soft temperature limit")),
        (0x2, ("frequency capped",), ()),
        (0xF000F, ("under-voltage", "frequency capped", "throttled", "soft temperature limit"),
         ("under-voltage", "frequency capped", "throttled", "soft temperature limit")),
        # Bits the documentation does not name (4-15, 20+) are ignored, not misread.
        (0x7FF0FFF0, (), ()),
    ],
)
def test_decode_throttled_follows_the_documented_bits(value: int, now: tuple[str, ...],
                                                      since: tuple[str, ...]) -> None:
    assert decode_throttled(value) == (now, since)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # A Pi 4 with vcgencmd: the vcgencmd temperature wins over the thermal zone.
        ((f"{M}-vctemp temp=48.3'C", f"{M}-throttled throttled=0x0", f"{M}-zonetemp 48686"),
         {"temp_c": 48.3, "temp_source": "vcgencmd", "throttled_raw": 0, "throttled_now": (),
          "throttled_reply": "throttled=0x0"}),
        ((f"{M}-vctemp temp=61.0'C", f"{M}-throttled throttled=0x50005"),
         {"temp_c": 61.0, "throttled_raw": 0x50005, "throttled_now": ("under-voltage", "throttled"),
          "throttled_since_boot": ("under-voltage", "throttled")}),
        # No vcgencmd (not Raspberry Pi OS): the thermal zone in millidegrees.
        ((f"{M}-zonetemp 52616",), {"temp_c": 52.616, "temp_source": "thermal_zone0", "throttled_raw": None,
                                    "throttled_reply": None}),
        # vcgencmd without access to /dev/vchiq (user not in the video group): its words, no numbers.
        ((f"{M}-vctemp VCHI initialization failed", f"{M}-throttled VCHI initialization failed",
          f"{M}-zonetemp 47236"),
         {"temp_c": 47.236, "temp_source": "thermal_zone0", "throttled_raw": None,
          "throttled_reply": "VCHI initialization failed"}),
        ((f"{M}-vctemp error=1 error_msg=\"Command not registered\"",), {"temp_c": None, "temp_source": None}),
        # Below zero is a real reading (a Pi outdoors), not an error.
        ((f"{M}-vctemp temp=-3.5'C",), {"temp_c": -3.5}),
        ((f"{M}-zonetemp -2000",), {"temp_c": -2.0}),
        ((f"{M}-throttled throttled=0xzz",), {"throttled_raw": None, "throttled_reply": "throttled=0xzz"}),
        ((f"{M}-load 0.52 0.58 0.59 1/312 12345", f"{M}-cores 4"),
         {"load1": 0.52, "load5": 0.58, "load15": 0.59, "cores": 4}),
        ((f"{M}-load", f"{M}-cores"), {"load1": None, "load15": None, "cores": None}),
        ((f"{M}-load 0.1 x", f"{M}-cores 0"), {"load1": 0.1, "load5": None, "load15": None, "cores": None}),
        ((f"{M}-mem MemAvailable:     712340 kB",), {"mem_available_mb": 695}),
        ((f"{M}-mem",), {"mem_available_mb": None}),
        ((f"{M}-mem MemAvailable: lots",), {"mem_available_mb": None}),
        ((f"{M}-time 1718000000.123456789",), {"pi_time": pytest.approx(1718000000.123456789)}),
        # busybox date has no %N.
        ((f"{M}-time 1718000000.%N",), {"pi_time": 1718000000.0}),
        ((f"{M}-time Tue Jun 11 2024",), {"pi_time": None}),
        ((f"{M}-pipeline alive",), {"pipeline_alive": True}),
        ((f"{M}-pipeline gone",), {"pipeline_alive": False}),
        ((), {"pipeline_alive": None, "temp_c": None, "load1": None, "laptop_time": None}),
        # Unrelated lines (a chatty login banner) and a repeated mark: the first reading counts.
        (("Welcome to Raspberry Pi OS", f"{M}-vctemp temp=40.0'C", f"{M}-vctemp temp=90.0'C", "piorch-other 3"),
         {"temp_c": 40.0}),
    ],
)
def test_parse_health(lines: tuple[str, ...], expected: dict[str, object]) -> None:
    health = parse_health(reading(*lines))
    assert health.complete
    for name, value in expected.items():
        assert getattr(health, name) == value, name


def test_a_reading_cut_short_is_not_complete() -> None:
    assert not parse_health(reading(f"{M}-vctemp temp=48.3'C", done=False)).complete
    assert not parse_health("").complete


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        (PiHealth(temp_c=48.3, throttled_raw=0, load1=0.5, cores=4, mem_available_mb=700, pi_time=100.0,
                  laptop_time=100.4, pipeline_alive=True), []),
        (PiHealth(), []),
        (PiHealth(temp_c=76.0), ["the Pi is warm (76.0 °C); it throttles at 80 °C"]),
        (PiHealth(temp_c=83.1), ["the Pi is hot (83.1 °C): it slows down to cool off; give it air or a heatsink"]),
        (PiHealth(throttled_now=("under-voltage", "throttled"), throttled_since_boot=("under-voltage", "throttled")),
         ["the Pi reports under-voltage, throttled now: use a better power supply"]),
        (PiHealth(throttled_now=("soft temperature limit",),
                  throttled_since_boot=("under-voltage", "soft temperature limit")),
         ["the Pi reports soft temperature limit now", "the Pi had under-voltage since boot"]),
        (PiHealth(load1=9.0, cores=4), ["the Pi is busy (load 9.0 on 4 cores): frames may be dropped"]),
        (PiHealth(load1=9.0), []),
        (PiHealth(mem_available_mb=42), ["the Pi is low on memory (42 MB available)"]),
        (PiHealth(pi_time=1000.0, laptop_time=1003.5), ["the Pi's clock is 3.5 s behind the laptop's"]),
        (PiHealth(pi_time=1060.0, laptop_time=1000.0), ["the Pi's clock is 60.0 s ahead of the laptop's"]),
        (PiHealth(pi_time=1000.0), []),
        (PiHealth(pipeline_alive=False), ["the camera pipeline on the Pi is no longer running"]),
    ],
)
def test_health_warnings(health: PiHealth, expected: list[str]) -> None:
    assert health_warnings(health) == expected


@pytest.mark.parametrize("pgid", [0, 1, -5])
def test_the_script_refuses_to_watch_init_or_every_process(pgid: int) -> None:
    with pytest.raises(ValueError, match="refusing"):
        build_health_script(pgid)


def test_read_health_on_a_real_shell_with_stand_in_vcgencmd(tmp_path: Path) -> None:
    install_vcgencmd(tmp_path, temp="temp=55.5'C", throttled="throttled=0x50000")
    health = read_health(LocalHost(path_prepend=tmp_path))
    assert health.complete and health.temp_c == 55.5 and health.temp_source == "vcgencmd"
    assert health.throttled_since_boot == ("under-voltage", "throttled") and health.throttled_now == ()
    # /proc and date are the real ones of this machine.
    assert health.load1 is not None and health.mem_available_mb is not None and health.mem_available_mb > 0
    assert health.cores is not None and health.cores >= 1
    assert health.clock_skew_s is not None and abs(health.clock_skew_s) < 2
    assert health.pipeline_alive is None
    # In, not last: a loaded test machine adds its own "busy" warning after it.
    assert "the Pi had under-voltage, throttled since boot" in health_warnings(health)


def test_read_health_follows_a_real_process_group() -> None:
    # A stand-in pipeline in a session of its own, like `setsid -w sh -c 'camera | nc'`.
    pipeline = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        assert read_health(LocalHost(), pgid=pipeline.pid).pipeline_alive is True
    finally:
        os.killpg(pipeline.pid, signal.SIGKILL)
        pipeline.wait(10)
    assert read_health(LocalHost(), pgid=pipeline.pid).pipeline_alive is False


def test_read_health_reports_a_shell_that_does_not_run_it() -> None:
    class Broken(LocalHost):
        def start(self, command: str):  # type: ignore[no-untyped-def]
            return super().start("echo 'sh: 1: Syntax error: word unexpected' >&2; exit 2")

    with pytest.raises(RemoteError, match=r"could not read the health of .*Syntax error"):
        read_health(Broken(name="pi"))


def test_the_laptop_time_is_taken_around_the_round_trip() -> None:
    before = time.time()
    health = read_health(LocalHost())
    assert health.laptop_time is not None and before <= health.laptop_time <= time.time()
