"""Pi health: temperature, throttling, load, free memory, clock and the camera pipeline, in one round trip.

`build_health_script` and `parse_health` are pure; `read_health` is the one effect and runs over any `Host`
(the recording's own SSH connection: a new channel on it, no second camera client, no new login). The
dashboard polls it every few seconds, `doctor` once.

`vcgencmd get_throttled` prints `throttled=0x50005`; the bits, as documented by Raspberry Pi
(raspberrypi/documentation, "vcgencmd" page):
    0 under-voltage detected          16 under-voltage has occurred
    1 arm frequency capped            17 arm frequency capping has occurred
    2 currently throttled             18 throttling has occurred
    3 soft temperature limit active   19 soft temperature limit has occurred
"""

from __future__ import annotations

import re
import shlex
import time
from dataclasses import dataclass, replace

from orchestrator.errors import RemoteError
from orchestrator.pi.host import Host

MARK = "piorch-health"
DONE_MARK = f"{MARK}-done"

# Word for each documented get_throttled bit; "now" bits are 0-3, their "since boot" twins 16-19.
THROTTLE_WORDS: tuple[tuple[int, str], ...] = (
    (0, "under-voltage"),
    (1, "frequency capped"),
    (2, "throttled"),
    (3, "soft temperature limit"),
)
SINCE_BOOT_SHIFT = 16

# The firmware throttles the ARM cores from 80 °C (and the GPU too above 85 °C); 75 °C is the "you are
# close" line, so the warning comes before the frame rate drops.
TEMP_WARN_C = 75.0
TEMP_HOT_C = 80.0
# Below this the camera, the encoder and nc compete with the page cache; raspivid needs ~20 MB itself.
MEM_WARN_MB = 100
# A run queue longer than twice the cores means the encoder waits: frames get dropped.
LOAD_PER_CORE_WARN = 2.0
# Clock skew that makes clips of several Pis hard to align by their timestamps.
SKEW_WARN_S = 2.0


@dataclass(frozen=True)
class PiHealth:
    """One reading. Every field is None when the Pi did not say (no vcgencmd, no /proc, odd output)."""

    temp_c: float | None = None
    # "vcgencmd" or "thermal_zone0": where temp_c came from.
    temp_source: str | None = None
    throttled_raw: int | None = None
    # What `vcgencmd get_throttled` printed (None: no vcgencmd), to explain an unreadable answer.
    throttled_reply: str | None = None
    throttled_now: tuple[str, ...] = ()
    throttled_since_boot: tuple[str, ...] = ()
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    cores: int | None = None
    mem_available_mb: int | None = None
    # The Pi's clock (Unix seconds) when the script ran, and the laptop's at the middle of the round trip.
    pi_time: float | None = None
    laptop_time: float | None = None
    # Whether the watched process group still has a process; None when no group was asked about.
    pipeline_alive: bool | None = None
    # The script ran to its end (a reading cut short is not a healthy one).
    complete: bool = False

    @property
    def clock_skew_s(self) -> float | None:
        """Pi minus laptop, in seconds (positive: the Pi is ahead)."""
        if self.pi_time is None or self.laptop_time is None:
            return None
        return self.pi_time - self.laptop_time


def build_health_script(pgid: int | None = None) -> str:
    """One sh script whose stdout is `piorch-health-<what> <value>` lines, ending in `piorch-health-done`.

    Raw tool output is passed through (first line only) and decoded in `parse_health`, so an odd firmware
    answer is reported as unknown instead of breaking the script.
    """
    if pgid is not None and pgid <= 1:
        raise ValueError(f"refusing to watch process group {pgid}")
    lines = [
        # vcgencmd fails without access to /dev/vchiq (user not in the video group) or on a non-Pi: then
        # its words are still printed and the parser ignores them; the thermal zone is read as well.
        "if command -v vcgencmd >/dev/null 2>&1; then",
        f'  echo "{MARK}-vctemp $(vcgencmd measure_temp 2>&1 | head -n 1)"',
        f'  echo "{MARK}-throttled $(vcgencmd get_throttled 2>&1 | head -n 1)"',
        "fi",
        # millidegrees Celsius; every Pi kernel has thermal_zone0 = the SoC.
        "if [ -r /sys/class/thermal/thermal_zone0/temp ]; then",
        f'  echo "{MARK}-zonetemp $(head -n 1 /sys/class/thermal/thermal_zone0/temp 2>/dev/null)"',
        "fi",
        f'echo "{MARK}-load $(head -n 1 /proc/loadavg 2>/dev/null)"',
        # nproc is coreutils; getconf is the POSIX fallback (busybox images).
        f'echo "{MARK}-cores $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)"',
        f'echo "{MARK}-mem $(grep "^MemAvailable:" /proc/meminfo 2>/dev/null)"',
        # %N is GNU date; busybox prints it literally and the parser keeps the whole seconds.
        f'echo "{MARK}-time $(date +%s.%N)"',
    ]
    if pgid is not None:
        group = shlex.quote(f"-{int(pgid)}")
        # kill -0 sends nothing; it fails once no process of the group is left (the camera stopped).
        # No `--` before the group: the kill of dash (sh on Debian) rejects it, and `kill -0 -N` means the
        # group N in both dash and bash.
        lines.append(f"if kill -0 {group} 2>/dev/null; then echo '{MARK}-pipeline alive'; "
                     f"else echo '{MARK}-pipeline gone'; fi")
    lines.append(f"echo {DONE_MARK}")
    return "\n".join(lines) + "\n"


_VCTEMP = re.compile(r"^temp=(-?\d+(?:\.\d+)?)'C$")
_THROTTLED = re.compile(r"^throttled=(0x[0-9a-fA-F]+|\d+)$")
_MEM = re.compile(r"^MemAvailable:\s*(\d+)\s*kB$")


def decode_throttled(value: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(flags active now, flags that occurred since boot), as words in bit order."""
    now = tuple(word for bit, word in THROTTLE_WORDS if value >> bit & 1)
    since = tuple(word for bit, word in THROTTLE_WORDS if value >> (bit + SINCE_BOOT_SHIFT) & 1)
    return now, since


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_health(text: str) -> PiHealth:
    """Read the script's output; anything unrecognised leaves its field None."""
    values: dict[str, str] = {}
    complete = False
    for line in text.splitlines():
        line = line.strip()
        if line == DONE_MARK:
            complete = True
            continue
        name, _, value = line.partition(" ")
        key = name[len(MARK) + 1:]
        # Each mark is printed once; should one repeat, the first wins.
        if name.startswith(f"{MARK}-") and key not in values:
            values[key] = value.strip()

    temp_c: float | None = None
    temp_source: str | None = None
    if match := _VCTEMP.match(values.get("vctemp", "")):
        temp_c, temp_source = float(match.group(1)), "vcgencmd"
    elif (zone := values.get("zonetemp", "")).lstrip("-").isdigit():
        temp_c, temp_source = int(zone) / 1000, "thermal_zone0"

    raw: int | None = None
    now: tuple[str, ...] = ()
    since: tuple[str, ...] = ()
    if match := _THROTTLED.match(values.get("throttled", "")):
        raw = int(match.group(1), 0)
        now, since = decode_throttled(raw)

    # /proc/loadavg: "0.52 0.58 0.59 1/312 12345"
    load = [_float(part) for part in values.get("load", "").split()[:3]]
    load1, load5, load15 = [*load, None, None, None][:3]

    cores_text = values.get("cores", "")
    cores = int(cores_text) if cores_text.isdigit() and int(cores_text) > 0 else None

    mem_mb = int(match.group(1)) // 1024 if (match := _MEM.match(values.get("mem", ""))) else None

    # "1718000000.123456789", or "1718000000.%N" from a date without %N.
    seconds, _, fraction = values.get("time", "").partition(".")
    pi_time: float | None = None
    if seconds.isdigit():
        pi_time = float(seconds) + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)

    alive = {"alive": True, "gone": False}.get(values.get("pipeline", ""))
    return PiHealth(temp_c=temp_c, temp_source=temp_source, throttled_raw=raw,
                    throttled_reply=values.get("throttled"), throttled_now=now,
                    throttled_since_boot=since, load1=load1, load5=load5, load15=load15, cores=cores,
                    mem_available_mb=mem_mb, pi_time=pi_time, pipeline_alive=alive, complete=complete)


def health_warnings(health: PiHealth) -> list[str]:
    """Plain sentences for the dashboard and the manifest; empty when all is well (or unknown)."""
    warnings: list[str] = []
    if health.temp_c is not None and health.temp_c >= TEMP_HOT_C:
        warnings.append(f"the Pi is hot ({health.temp_c:.1f} °C): it slows down to cool off; give it air or a heatsink")
    elif health.temp_c is not None and health.temp_c >= TEMP_WARN_C:
        warnings.append(f"the Pi is warm ({health.temp_c:.1f} °C); it throttles at {TEMP_HOT_C:.0f} °C")
    if health.throttled_now:
        warnings.append(f"the Pi reports {', '.join(health.throttled_now)} now"
                        + (": use a better power supply" if "under-voltage" in health.throttled_now else ""))
    past = [word for word in health.throttled_since_boot if word not in health.throttled_now]
    if past:
        warnings.append(f"the Pi had {', '.join(past)} since boot")
    if health.load1 is not None and health.cores and health.load1 > LOAD_PER_CORE_WARN * health.cores:
        warnings.append(f"the Pi is busy (load {health.load1:.1f} on {health.cores} cores): frames may be dropped")
    if health.mem_available_mb is not None and health.mem_available_mb < MEM_WARN_MB:
        warnings.append(f"the Pi is low on memory ({health.mem_available_mb} MB available)")
    skew = health.clock_skew_s
    if skew is not None and abs(skew) > SKEW_WARN_S:
        warnings.append(f"the Pi's clock is {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} the laptop's")
    if health.pipeline_alive is False:
        warnings.append("the camera pipeline on the Pi is no longer running")
    return warnings


def read_health(host: Host, pgid: int | None = None, timeout: float = 5) -> PiHealth:
    """Run the health script over `host` and parse it; the laptop's clock is read around the round trip.

    The 5 s default: the script reads a few /proc files and two vcgencmd calls, well under a second on a
    Pi Zero; longer means the link or the Pi is in trouble, and the caller must not stall on it.
    """
    before = time.time()
    result = host.run(build_health_script(pgid), timeout=timeout)
    after = time.time()
    health = parse_health(result.stdout)
    if not health.complete:
        detail = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.exit_code}"]
        raise RemoteError(f"could not read the health of {host.name} ({detail[0]})",
                          "check that its shell is sh-compatible")
    # The Pi ran `date` somewhere inside the round trip; its middle is the best guess without NTP maths.
    return replace(health, laptop_time=(before + after) / 2)
