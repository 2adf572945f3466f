"""`piorch record` under faults, across a real link between two network namespaces (see tests/netns.py).

piorch runs inside the "laptop" namespace as the user runs it (`python -m orchestrator record ...`), the
camera simulator behind a real sshd inside the "Pi" namespace. Each fault runs once (a module-scoped
fixture) and several tests read what it left: the bytes (every received file against the stream the
simulator logged, byte for byte), the files and their manifests, the session manifest's gaps, the exit code
and message, and whether the camera is free afterwards (no `running-*` marker, the camera lock free).

The figures for docs/reliability.md are appended, one JSON line per fault, to $PIORCH_RELIABILITY_OUT when
it is set (tools/reliability_report.py runs this file and writes the table). No test asserts a duration
except where the duration *is* the behaviour (a resumed recording ends at the deadline asked for).

Needs root (namespaces, a tmpfs); skipped otherwise. With PIORCH_E2E_REQUIRED=1 a root run that cannot
create namespaces fails instead of skipping.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_helpers import ROOT, piorch_argv, wait_for_bytes
from tests.netns import (
    ALIAS,
    INTRUDER_IP,
    LAPTOP_IP,
    PI_IP,
    Impairment,
    Link,
    NetnsError,
    NetnsPi,
    create_link,
    in_ns,
    netns_unavailable,
)
from tests.system_tools import cannot_run

pytestmark = pytest.mark.e2e

REPORT_ENV = "PIORCH_RELIABILITY_OUT"
# Small frames and modest bitrates: the faults matter, not the throughput (a 2-core CI machine runs the
# simulator, sshd, piorch and, for the lossy link, a userspace relay at once).
VIDEO = ("--width", "640", "--height", "360", "--fps", "25", "--container", "h264")
BITRATE = 2_000_000
# How long the Pi may take to free its camera on its own (watchdog: channel EOF, TERM, KILL after 3 s).
FREE_WITHIN_S = 10.0
# After a link returns, the Pi's TCP notices the laptop is gone only at its next retransmission, which
# exponential backoff can put many seconds out.
FREE_AFTER_LINK_S = 40.0


# ------------------------------------------------------------------------------------------ the lab


@dataclass
class Lab:
    link: Link
    pi: NetnsPi
    root: Path

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Never the developer's config: no user file; the generated ssh_config with its known_hosts.
        env["PIORCH_CONFIG"] = str(self.root / "no-user-config.toml")
        env["PIORCH_SSH_CONFIG"] = str(self.pi.ssh_config)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def piorch(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """`piorch ARGS` in the laptop namespace, stdout and stderr into `log` (read while it runs)."""
        with log.open("wb") as handle:
            return subprocess.Popen(in_ns(self.link.laptop_ns, piorch_argv(*args)), env=self.env,
                                    stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def record(self, out: Path, *extra: str, bitrate: int = BITRATE, log: Path) -> subprocess.Popen[bytes]:
        return self.piorch("record", "--pi", ALIAS, "--out", str(out), "--laptop-ip", LAPTOP_IP, "--port", "0",
                           "--bitrate", str(bitrate), *VIDEO, *extra, log=log)


@contextmanager
def open_lab(root: Path, impairment: Impairment | None = None, pi_env: dict[str, str] | None = None) -> Iterator[Lab]:
    reason = netns_unavailable()
    if reason is not None:
        if os.geteuid() != 0:
            pytest.skip(reason)  # a developer's run as a user: never required
        cannot_run(reason)
    try:
        link = create_link(impairment)
    except NetnsError as exc:
        cannot_run(f"cannot create network namespaces as root ({exc})")
    try:
        pi = NetnsPi(link, root / "pi", dict(pi_env or {}))
        pi.start()
        yield Lab(link, pi, root)
    finally:
        link.close()


# ------------------------------------------------------------------------------------------ what happened


@dataclass
class Outcome:
    """Everything one fault run left behind, read once."""

    name: str
    returncode: int
    log: str
    out: Path
    runs: list[dict[str, Any]]
    # Files in the session manifest's order: (data path, its own manifest).
    files: list[tuple[Path, dict[str, Any]]]
    session: dict[str, Any] | None
    camera_freed_after_s: float | None
    # Wall-clock moment the camera was seen free (time.time()), when it was.
    freed_at: float | None
    wall_s: float
    # Wall-clock moments of the fault (time.time()), by name: "down", "up", "kill", ...
    marks: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def statuses(self) -> list[str]:
        return [manifest["status"] for _, manifest in self.files]

    @property
    def sent(self) -> int:
        return sum(int(run["bytes"]) for run in self.runs)

    @property
    def received(self) -> int:
        return sum(path.stat().st_size for path, _ in self.files)

    def first_byte_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the start of the first file that began after it."""
        starts = [_epoch(m["started_utc"]) for _, m in self.files]
        later = [s for s in starts if s >= moment]
        return min(later) - moment if later else None


def _epoch(utc: str) -> float:
    return datetime.fromisoformat(utc.replace("Z", "+00:00")).timestamp()


def collect(name: str, lab: Lab, out: Path, proc: subprocess.Popen[bytes], log: Path, started: float,
            marks: dict[str, float], free_within: float = FREE_WITHIN_S, timeout: float = 90) -> Outcome:
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    wall = time.time() - started
    freed = lab.pi.wait_camera_free(free_within)
    freed_at = time.time() if freed is not None else None
    sessions = sorted(out.glob("session-*.json"))
    session = json.loads(sessions[-1].read_text()) if sessions else None
    files: list[tuple[Path, dict[str, Any]]] = []
    if session is not None:
        for entry in session["files"]:
            manifest_path = out / f"{entry['id']}.json"
            manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"status": "no manifest"}
            files.append((out / entry["file"], manifest))
    return Outcome(name, proc.returncode, log.read_text(errors="replace"), out, lab.pi.runs(), files, session,
                   freed, freed_at, wall, marks)


def wait_for_log(log: Path, pattern: str, timeout: float = 20) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} not in the log within {timeout} s:\n{log.read_text(errors='replace')}")


# ------------------------------------------------------------------------------------------ the camera's bytes


def camera_stream(argv: list[str], nbytes: int) -> bytes:
    """The first `nbytes` the simulator writes for `argv`: its stream is a pure function of its options
    (the shipped clip, looped, padded with filler NAL units to the bitrate), so any received file can be
    checked byte for byte, not only the ones whose whole hash the simulator logged."""
    from orchestrator.sim.camera import CLIP_PATH, build_filler_nal, build_frame_plan, filler_size
    from orchestrator.sim.options import Dialect, dialect_for, effective_legacy_bitrate, parse_args

    options = parse_args(argv[0], argv[1:])
    bitrate = effective_legacy_bitrate(options)[0] if dialect_for(argv[0]) is Dialect.LEGACY else options.bitrate
    plan = build_frame_plan(CLIP_PATH.read_bytes(), options.inline_headers)
    stream = bytearray()
    index = 0
    while len(stream) < nbytes:
        frame = plan.frame(index)
        pad = filler_size(index, bitrate, options.framerate, len(stream), len(frame))
        stream += frame + build_filler_nal(pad) if pad else frame
        index += 1
    return bytes(stream[:nbytes])


def check_bytes(outcome: Outcome) -> None:
    """Every file is the start of the stream its camera run wrote (nothing that arrived is lost, nothing
    added, nothing out of order), in the session manifest's order; a file marked complete is all of it."""
    assert len(outcome.files) == len(outcome.runs), (outcome.statuses, outcome.runs)
    for (path, manifest), run in zip(outcome.files, outcome.runs, strict=True):
        written = camera_stream(run["argv"], int(run["bytes"]))
        assert hashlib.sha256(written).hexdigest() == run["sha256"]  # the model of the simulator holds
        data = path.read_bytes()
        assert len(data) <= len(written), f"{path.name} holds more than the camera wrote"
        assert data == written[: len(data)], f"{path.name} is not what the camera wrote"
        assert manifest["bytes"] == len(data) and manifest["sha256"] == hashlib.sha256(data).hexdigest()
        if manifest["status"] == "complete":
            assert len(data) == len(written), f"{path.name} is marked complete but lacks the end"


def check_camera_free(outcome: Outcome) -> None:
    assert outcome.camera_freed_after_s is not None, "the camera on the Pi was still held"


def report(outcome: Outcome, fault: str, *, gap_s: float | None = None, outage_s: float | None = None,
           resume_s: float | None = None, notes: str = "", **extra: Any) -> None:
    """One row of docs/reliability.md, appended to $PIORCH_RELIABILITY_OUT (no-op without it)."""
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    gaps = (outcome.session or {}).get("gaps", [])
    if gap_s is None and gaps:
        gap_s = sum(_epoch(g["end_utc"]) - _epoch(g["start_utc"]) for g in gaps if "end_utc" in g)
    row = {
        "id": outcome.name, "fault": fault, "sent": outcome.sent, "received": outcome.received,
        "lost": outcome.sent - outcome.received, "files": len(outcome.files), "statuses": outcome.statuses,
        "gaps": len(gaps), "gap_s": gap_s, "outage_s": outage_s, "resume_s": resume_s,
        "camera_freed": outcome.camera_freed_after_s is not None, "freed_after_s": outcome.camera_freed_after_s,
        "exit_code": outcome.returncode, "wall_s": round(outcome.wall_s, 2), "notes": notes, **extra,
    }
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


# ================================================================================ 1. a lossy, slow link


CONNECT_TIME = """
import socket, sys, time
best = 9.0
for _ in range(5):
    start = time.monotonic()
    try:
        socket.create_connection((sys.argv[1], 22), timeout=5).close()
    except OSError:
        continue  # a lost SYN: try again
    best = min(best, time.monotonic() - start)
print(best)
"""


def connect_time(lab: Lab) -> float:
    """The fastest of five TCP handshakes from the laptop to the Pi's sshd: one round trip."""
    done = subprocess.run(in_ns(lab.link.laptop_ns, [sys.executable, "-c", CONNECT_TIME, PI_IP]),
                          capture_output=True, text=True, timeout=60)
    return float(done.stdout.strip())


@pytest.fixture(scope="module")
def lossy(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    root = tmp_path_factory.mktemp("lossy")
    impairment = Impairment(loss=0.05, delay_s=0.05)
    with open_lab(root, impairment) as lab:
        out, log = root / "recv", root / "piorch.log"
        rtt = connect_time(lab)
        started = time.time()
        proc = lab.record(out, "--seconds", "8", log=log)
        outcome = collect("lossy", lab, out, proc, log, started, {})
        outcome.extra["impairment"] = lab.link.impairment_method
        outcome.extra["rtt_s"] = rtt
        outcome.extra["wire"] = lab.link.stop_wire()
    wire = outcome.extra["wire"]
    dropped = f"; the wire dropped {wire['to_laptop_dropped']} of {wire['to_laptop_frames']} frames to the " \
              f"laptop and {wire['to_pi_dropped']} of {wire['to_pi_frames']} to the Pi" if wire else ""
    report(outcome, "loss 5% + delay 50 ms each way, 8 s at 2 Mbit/s",
           notes=f"{outcome.extra['impairment']}, TCP handshake {rtt * 1000:.0f} ms{dropped}",
           impairment=outcome.extra["impairment"], wire=wire, rtt_s=rtt)
    return outcome


def test_lossy_link_records_every_byte_into_one_file(lossy: Outcome) -> None:
    assert lossy.returncode == 0, lossy.log
    assert lossy.statuses == ["complete"]
    check_bytes(lossy)
    assert lossy.received == lossy.sent
    check_camera_free(lossy)


def test_lossy_link_really_delays_and_loses(lossy: Outcome) -> None:
    # A TCP handshake is one round trip: 50 ms each way.
    assert lossy.extra["rtt_s"] >= 0.09
    wire = lossy.extra["wire"]
    if wire is None:
        pytest.skip("tc netem applied the loss; its drops are not counted here")
    assert wire["to_laptop_dropped"] > 0 and wire["to_pi_dropped"] > 0


# ================================================================================ 2. a short outage


SHORT_DOWN_S = 3.0


@pytest.fixture(scope="module")
def short_outage(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    root = tmp_path_factory.mktemp("short")
    with open_lab(root) as lab:
        out, log = root / "recv", root / "piorch.log"
        started = time.time()
        proc = lab.record(out, "--seconds", "12", "--stall-timeout", "10", log=log)
        marks: dict[str, float] = {}
        try:
            wait_for_bytes(out, 400_000)
            marks["down"] = time.time()
            lab.link.set_pi_end(up=False)
            time.sleep(SHORT_DOWN_S)
            lab.link.set_pi_end(up=True)
            marks["up"] = time.time()
        finally:
            lab.link.set_pi_end(up=True)
        outcome = collect("short", lab, out, proc, log, started, marks)
    report(outcome, f"link down {SHORT_DOWN_S:g} s, --stall-timeout 10", outage_s=marks["up"] - marks["down"],
           gap_s=0.0 if not (outcome.session or {}).get("gaps") else None)
    return outcome


def test_short_outage_loses_nothing_and_keeps_one_file(short_outage: Outcome) -> None:
    assert short_outage.returncode == 0, short_outage.log
    assert short_outage.statuses == ["complete"]
    assert short_outage.session is not None and short_outage.session["gaps"] == []
    check_bytes(short_outage)
    assert short_outage.received == short_outage.sent  # 0 bytes lost
    check_camera_free(short_outage)


def test_short_outage_is_shown_as_a_stall(short_outage: Outcome) -> None:
    assert "stalled: no data from the Pi" in short_outage.log
    assert "data flows again" in short_outage.log


# ================================================================================ 3. a long outage, resumed


LONG_DOWN_S = 6.0
LONG_SECONDS = 20


def _outage(tmp_path_factory: pytest.TempPathFactory, name: str, seconds: int, down_s: float, *extra: str) -> Outcome:
    """Record `seconds` with --stall-timeout 3; take the Pi's end of the link down for `down_s` once data
    flows. marks["exit"]: when piorch exited, if it did while the link was down."""
    root = tmp_path_factory.mktemp(name)
    with open_lab(root) as lab:
        out, log = root / "recv", root / "piorch.log"
        started = time.time()
        proc = lab.record(out, "--seconds", str(seconds), "--stall-timeout", "3", *extra, log=log)
        marks: dict[str, float] = {"start": started}
        held = False
        try:
            wait_for_bytes(out, 600_000)
            marks["down"] = time.time()
            lab.link.set_pi_end(up=False)
            end = time.monotonic() + down_s
            while time.monotonic() < end:
                if "exit" not in marks and proc.poll() is not None:
                    marks["exit"] = time.time()
                time.sleep(0.05)
            held = not lab.pi.camera_free() or bool(lab.pi.cameras_running())
        finally:
            lab.link.set_pi_end(up=True)
        marks["up"] = time.time()
        # With --no-resume piorch has exited by now; the Pi frees its camera once its TCP notices.
        outcome = collect(name, lab, out, proc, log, started, marks, free_within=FREE_AFTER_LINK_S)
    outcome.extra["camera_held_at_link_up"] = held
    return outcome


@pytest.fixture(scope="module")
def long_outage(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    outcome = _outage(tmp_path_factory, "long", LONG_SECONDS, LONG_DOWN_S)
    resume = outcome.first_byte_after(outcome.marks["up"])
    report(outcome, f"link down {LONG_DOWN_S:g} s, --stall-timeout 3, --seconds {LONG_SECONDS}",
           outage_s=outcome.marks["up"] - outcome.marks["down"], resume_s=resume,
           notes="resume = link up -> first byte of the new file; lost = in the Pi's buffers when it was cut")
    return outcome


def test_long_outage_resumes_into_a_new_file(long_outage: Outcome) -> None:
    assert long_outage.returncode == 0, long_outage.log
    assert long_outage.statuses == ["link-lost", "complete"]
    check_bytes(long_outage)
    check_camera_free(long_outage)
    # The old pipeline ended once the link returned: stopped by piorch, or its pipe broke first.
    assert long_outage.runs[0]["reason"] in ("signal", "epipe")


def test_long_outage_lists_the_gap(long_outage: Outcome) -> None:
    assert long_outage.session is not None
    (gap,) = long_outage.session["gaps"]
    assert gap["cause"] == "no data for 3 s"
    assert _epoch(gap["start_utc"]) < _epoch(gap["end_utc"])
    assert long_outage.session["status"] == "complete"
    # Gaps live in the session manifest; the file cut by the outage points there.
    assert all("gaps" not in manifest for _, manifest in long_outage.files)
    assert "gaps" in long_outage.files[0][1]["reason"]


def test_long_outage_still_ends_at_the_deadline(long_outage: Outcome) -> None:
    """The resumed camera is given only what is left of --seconds, not --seconds again."""
    first, last = long_outage.runs[0], long_outage.runs[-1]
    planned_end = float(last["started"]) + int(last["argv"][last["argv"].index("-t") + 1]) / 1000
    assert abs(planned_end - (float(first["started"]) + LONG_SECONDS)) < 3.0
    assert last["reason"] == "timeout"


def test_long_outage_gap_covers_the_hole_in_the_recording(long_outage: Outcome) -> None:
    assert long_outage.session is not None
    (gap,) = long_outage.session["gaps"]
    # No byte sent after the link went down can be in the first file: the hole starts then, give or take 1 s.
    assert _epoch(gap["start_utc"]) <= long_outage.marks["down"] + 1.0


def test_long_outage_each_file_names_its_own_camera_run(long_outage: Outcome) -> None:
    for (_, manifest), run in zip(long_outage.files, long_outage.runs, strict=True):
        assert manifest["remote_argv"] == run["argv"]
        assert manifest["remote_exit"]["camera"] in (run["exit_code"], None)


# ================================================================================ 4. the same, --no-resume


@pytest.fixture(scope="module")
def no_resume(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    outcome = _outage(tmp_path_factory, "noresume", LONG_SECONDS, LONG_DOWN_S, "--no-resume")
    freed = outcome.freed_at - outcome.marks["up"] if outcome.freed_at is not None else None
    report(outcome, f"link down {LONG_DOWN_S:g} s, --stall-timeout 3, --no-resume",
           outage_s=outcome.marks["up"] - outcome.marks["down"],
           notes=(f"camera freed by the Pi {freed:.1f} s after the link returned" if freed is not None
                  else "camera NOT freed after the link returned")
           + ("; held on the Pi for the whole outage" if outcome.extra["camera_held_at_link_up"] else ""),
           freed_after_link_up_s=freed)
    return outcome


def test_no_resume_stops_and_keeps_what_arrived(no_resume: Outcome) -> None:
    assert no_resume.returncode == 1, no_resume.log
    assert "the link to the Pi was lost (no data for 3 s)" in no_resume.log
    assert "exit" in no_resume.marks, "piorch did not stop while the link was down"
    assert no_resume.statuses == ["link-lost"]
    assert no_resume.session is not None and no_resume.session["status"] == "failed"
    check_bytes(no_resume)
    assert no_resume.received > 0


def test_no_resume_pi_frees_the_camera_after_the_link_returns(no_resume: Outcome) -> None:
    check_camera_free(no_resume)
    (run,) = no_resume.runs
    assert run["reason"] in ("signal", "epipe")


# ================================================================================ 4b. the link never comes back


FOREVER_SECONDS = 10
# "For good": from shortly after the start until well past the deadline; then the link returns so that a
# piorch still waiting could finish.
FOREVER_DOWN_S = 15.0


@pytest.fixture(scope="module")
def outage_past_deadline(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    outcome = _outage(tmp_path_factory, "forever", FOREVER_SECONDS, FOREVER_DOWN_S)
    exited = outcome.marks.get("exit")
    report(outcome, f"link down for good ({FOREVER_DOWN_S:g} s) during a {FOREVER_SECONDS} s recording, "
                    "--stall-timeout 3",
           outage_s=outcome.marks["up"] - outcome.marks["down"],
           notes=(f"piorch exited {exited - outcome.marks['start']:.1f} s after it started, the link still down"
                  if exited else f"piorch still running {FOREVER_DOWN_S:g} s after the cut, past its deadline")
           + ("; the Pi's camera was still held when the link returned" if outcome.extra["camera_held_at_link_up"]
              else "; the Pi's camera had stopped at its own time limit (-t) while the link was down"))
    return outcome


def test_outage_past_deadline_keeps_what_arrived(outage_past_deadline: Outcome) -> None:
    assert outage_past_deadline.statuses == ["link-lost"]
    check_bytes(outage_past_deadline)
    check_camera_free(outage_past_deadline)


def test_outage_past_deadline_still_ends_at_the_deadline(outage_past_deadline: Outcome) -> None:
    """Reconnecting gives up at the deadline: a cable out for good does not keep `record --seconds N` alive."""
    assert "exit" in outage_past_deadline.marks, "piorch was still running long past its deadline"
    assert outage_past_deadline.marks["exit"] - outage_past_deadline.marks["start"] < FOREVER_SECONDS + 6
    assert outage_past_deadline.returncode == 1
    assert "did not come back before the deadline" in outage_past_deadline.log
    assert not outage_past_deadline.extra["camera_held_at_link_up"]  # the camera stopped at its own -t


# ================================================================================ 5. the Pi reboots


REBOOT_OFF_S = 3.0


def _reboot(tmp_path_factory: pytest.TempPathFactory, name: str, seconds: int, data_first: bool) -> Outcome:
    root = tmp_path_factory.mktemp(name)
    with open_lab(root) as lab:
        out, log = root / "recv", root / "piorch.log"
        started = time.time()
        proc = lab.record(out, "--seconds", str(seconds), log=log)
        wait_for_bytes(out, 400_000)

        def laptop_saw_the_data_end() -> None:
            deadline = time.monotonic() + 10
            while list(out.glob("*.tmp")) and time.monotonic() < deadline:
                time.sleep(0.05)

        down, up = lab.pi.power_cycle(REBOOT_OFF_S, laptop_saw_the_data_end if data_first else None)
        outcome = collect(name, lab, out, proc, log, started, {"down": down, "up": up})
    return outcome


@pytest.fixture(scope="module")
def reboot(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    outcome = _reboot(tmp_path_factory, "reboot", 16, data_first=False)
    report(outcome, f"Pi reboot (sshd's listener, then every Pi process killed; sshd back after {REBOOT_OFF_S:g} s)",
           outage_s=outcome.marks["up"] - outcome.marks["down"],
           resume_s=outcome.first_byte_after(outcome.marks["up"]),
           notes="resume = sshd started again -> first byte of the new file")
    return outcome


@pytest.fixture(scope="module")
def reboot_data_first(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    outcome = _reboot(tmp_path_factory, "reboot-data-first", 10, data_first=True)
    report(outcome, "Pi reboot, the data connection closing (FIN) before the SSH connection drops",
           outage_s=outcome.marks["up"] - outcome.marks["down"],
           resume_s=outcome.first_byte_after(outcome.marks["up"]),
           notes="the order that once left the cut file marked complete")
    return outcome


@pytest.mark.parametrize("name", ["reboot", "reboot_data_first"])
def test_reboot_resumes_into_a_new_file(name: str, request: pytest.FixtureRequest) -> None:
    reboot: Outcome = request.getfixturevalue(name)
    assert reboot.returncode == 0, reboot.log
    # The first file is link-lost whichever connection the laptop saw end first (the camera did not end it).
    assert reboot.statuses == ["link-lost", "complete"]
    check_bytes(reboot)
    check_camera_free(reboot)
    assert reboot.session is not None
    (gap,) = reboot.session["gaps"]
    assert gap["cause"] == "the SSH connection to the Pi was lost"
    assert reboot.runs[0]["reason"] == "signal"  # the reboot's SIGTERM


def test_a_reset_during_the_ssh_handshake_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback only (no namespace, no root): the raise is forced, the race that causes it is not needed."""
    import socket

    import paramiko

    from orchestrator.errors import ConnectError
    from orchestrator.pi.ssh import SshHost
    from orchestrator.settings import SshSettings

    def reset_before_the_banner(self: paramiko.Transport, *args: object, **kwargs: object) -> None:
        # What paramiko 4/5 raise from Packetizer.write_all when the first write meets the peer's RST.
        raise EOFError()

    monkeypatch.setattr(paramiko.Transport, "start_client", reset_before_the_banner)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        target = f"root@127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ConnectError):
            SshHost.connect(SshSettings(target=target, ssh_config=None, connect_timeout=1.5))


# ================================================================================ 6. piorch killed


@pytest.fixture(scope="module", params=[False, True], ids=["rpicam-like", "legacy-raspivid-ignores-hup-pipe"])
def killed(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Outcome:
    ignore = bool(request.param)
    name = "killed-legacy" if ignore else "killed"
    root = tmp_path_factory.mktemp(name)
    pi_env = {"PIORCH_SIM_IGNORE_HUP_PIPE": "1"} if ignore else None
    with open_lab(root, pi_env=pi_env) as lab:
        out, log = root / "recv", root / "piorch.log"
        started = time.time()
        proc = lab.record(out, "--seconds", "0", log=log)
        wait_for_bytes(out, 400_000)
        assert not lab.pi.camera_free()
        marks = {"kill": time.time()}
        proc.send_signal(signal.SIGKILL)
        outcome = collect(name, lab, out, proc, log, started, marks)
        leftovers = sorted(out.glob("*.tmp"))
        outcome.extra["leftovers"] = [p.name for p in leftovers]
        outcome.extra["leftover_bytes"] = [p.read_bytes() for p in leftovers]  # compared after `recover`
        recover_log = root / "recover.log"
        recover = lab.piorch("recover", str(out), log=recover_log)
        recover.wait(60)
        outcome.extra["recover_exit"] = recover.returncode
        outcome.extra["recover_log"] = recover_log.read_text()
    # `recover` writes per-file manifests but no session manifest: read what it left.
    outcome.files = [(out / m["file"], m) for m in
                     (json.loads(p.read_text()) for p in sorted(out.glob("*.json")))]
    freed = outcome.freed_at - marks["kill"] if outcome.freed_at is not None else None
    report(outcome, "piorch SIGKILLed" + (" (camera ignores SIGHUP and EPIPE)" if ignore else ""),
           notes="the Pi's watchdog freed the camera; the laptop's .tmp finalised by `piorch recover`",
           freed_after_kill_s=freed)
    return outcome


def test_killed_piorch_the_pi_frees_the_camera(killed: Outcome) -> None:
    check_camera_free(killed)
    assert killed.returncode == -signal.SIGKILL
    (run,) = killed.runs
    assert run["reason"] in ("signal", "epipe")


def test_killed_piorch_recover_keeps_every_byte(killed: Outcome) -> None:
    assert len(killed.extra["leftovers"]) == 1
    assert killed.extra["recover_exit"] == 0, killed.extra["recover_log"]
    assert not list(killed.out.glob("*.tmp"))
    ((path, manifest),) = killed.files
    assert manifest["status"] == "recovered"
    assert path.read_bytes() == killed.extra["leftover_bytes"][0]  # never changed, never deleted
    check_bytes(killed)


# ================================================================================ 7. the laptop's disk fills


TMPFS_BYTES = 3 * 1024 * 1024


@contextmanager
def small_tmpfs(path: Path) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0755", "piorch-test",
                              str(path)], capture_output=True, text=True, timeout=10)
    if mounted.returncode != 0:
        cannot_run(f"cannot mount a small tmpfs here ({mounted.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    root = tmp_path_factory.mktemp("disk")
    kept = root / "recv-copy"
    with open_lab(root) as lab, small_tmpfs(root / "small") as small:
        refused = lab.record(small / "refused", "--seconds", "15", bitrate=4_000_000, log=root / "refused.log")
        refused.wait(60)
        log = root / "piorch.log"
        started = time.time()
        proc = lab.record(small, "--seconds", "15", "--force", bitrate=4_000_000, log=log)
        outcome = collect("disk", lab, small, proc, log, started, {})
        # The tmpfs goes with the lab: keep what piorch left there.
        shutil.copytree(small, kept)
    outcome.out = kept
    outcome.extra["refused_exit"] = refused.returncode
    outcome.extra["refused_log"] = (root / "refused.log").read_text()
    outcome.extra["leftovers"] = [p.name for p in kept.glob("*.tmp")]
    # Files as they are on disk (the session manifest may be missing: the disk had no room for it).
    outcome.files = [(p, _manifest_or_none(p)) for p in sorted(kept.glob("*.h264"))]
    report(outcome, "laptop disk full (3 MB tmpfs as --out, --force, 4 Mbit/s for 15 s)",
           notes="lost = what the camera sent once the disk was full (arrived, no room to keep it); "
                 f"manifests written: {len(list(kept.glob('*.json')))}")
    return outcome


def _manifest_or_none(path: Path) -> dict[str, Any]:
    manifest = path.with_name(path.name.split(".", 1)[0] + ".json")
    return json.loads(manifest.read_text()) if manifest.exists() else {"status": "no manifest", "bytes": None}


def test_disk_precheck_refuses_without_force(disk_full: Outcome) -> None:
    assert disk_full.extra["refused_exit"] == 5, disk_full.extra["refused_log"]
    assert "--force" in disk_full.extra["refused_log"]


def test_disk_full_stops_the_camera_and_says_why(disk_full: Outcome) -> None:
    assert disk_full.returncode == 1, disk_full.log
    assert "disk filled up" in disk_full.log
    check_camera_free(disk_full)
    (run,) = disk_full.runs
    assert run["reason"] in ("signal", "epipe")  # stopped by piorch, long before its 15 s
    assert not disk_full.extra["leftovers"]


def test_disk_full_keeps_every_byte_written(disk_full: Outcome) -> None:
    ((path, _),) = disk_full.files
    (run,) = disk_full.runs
    written = camera_stream(run["argv"], int(run["bytes"]))
    kept = path.read_bytes()
    assert kept and kept == written[: len(kept)]


def test_disk_full_marks_the_file_failed(disk_full: Outcome) -> None:
    """Even with no byte left on the disk, the manifests say what the file is (room was reserved)."""
    ((_, manifest),) = disk_full.files
    assert manifest["status"] == "failed" and manifest["reason"] == "disk full"
    assert list(disk_full.out.glob("session-*.json"))


# ================================================================================ 8. a foreign peer


@pytest.fixture(scope="module")
def foreign_peer(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    root = tmp_path_factory.mktemp("foreign")
    with open_lab(root) as lab:
        intruder = lab.link.add_intruder()
        out, log = root / "recv", root / "piorch.log"
        started = time.time()
        proc = lab.piorch("record", "--pi", ALIAS, "--out", str(out), "--laptop-ip", LAPTOP_IP, "--port", "auto",
                          "--backend", "builtin", "--bitrate", str(BITRATE), "--seconds", "8", *VIDEO, log=log)
        port = int(wait_for_log(log, rf"-> {re.escape(LAPTOP_IP)}:(\d+)").group(1))
        wait_for_bytes(out, 200_000)
        attempts = [_intrude(intruder, port) for _ in range(3)]
        outcome = collect("foreign", lab, out, proc, log, started, {})
        outcome.extra["port"] = port
        outcome.extra["intruder"] = attempts
    report(outcome, f"foreign peer ({INTRUDER_IP}) connects 3 times to the receiver, builtin backend",
           notes=f"intruder saw: {', '.join(sorted(set(a['result'] for a in attempts)))}", port=port)
    return outcome


INTRUDE = """
import json, socket, sys
result = {"result": "?"}
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    try:
        s.sendall(b"NOT VIDEO " * 1000)
        s.settimeout(3)
        result["result"] = "closed by the laptop" if s.recv(1) == b"" else "answered"
    except ConnectionResetError:
        result["result"] = "reset by the laptop"
    except TimeoutError:
        result["result"] = "left open"
except OSError as exc:
    result["result"] = f"could not connect ({exc.strerror or exc})"
print(json.dumps(result))
"""


def _intrude(namespace: str, port: int) -> dict[str, str]:
    done = subprocess.run(in_ns(namespace, [sys.executable, "-c", INTRUDE, LAPTOP_IP, str(port)]),
                          capture_output=True, text=True, timeout=20)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_foreign_peer_is_refused_and_logged(foreign_peer: Outcome) -> None:
    assert all(a["result"] in ("closed by the laptop", "reset by the laptop") for a in foreign_peer.extra["intruder"])
    refusals = re.findall(rf"refused a connection from {re.escape(INTRUDER_IP)}:\d+", foreign_peer.log)
    assert len(refusals) == 3, foreign_peer.log


def test_foreign_peer_does_not_disturb_the_recording(foreign_peer: Outcome) -> None:
    assert foreign_peer.returncode == 0, foreign_peer.log
    assert foreign_peer.statuses == ["complete"]
    check_bytes(foreign_peer)
    assert foreign_peer.received == foreign_peer.sent
    assert all(manifest["peer"].startswith("10.203.0.2:") for _, manifest in foreign_peer.files)
    check_camera_free(foreign_peer)

