"""Run the fault suite and write docs/reliability.md from what it measured.

    sudo .venv/bin/python tools/reliability_report.py            # runs tests/test_faults_netns.py (~3 min)
    .venv/bin/python tools/reliability_report.py --rows FILE     # only render rows a run already wrote

The tests append one JSON line per fault to $PIORCH_RELIABILITY_OUT (see tests/test_faults_netns.py); this
script sets that variable, runs pytest with a JUnit XML report beside it, and turns both into the table,
the list of bugs the suite marks as expected failures, and how the figures were produced. It needs root,
like the tests (network namespaces, a tmpfs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = "tests/test_faults_netns.py"
DOC = ROOT / "docs" / "reliability.md"
# The targets: resume within this long of the link (or the Pi) coming back.
RESUME_TARGET_S = 3.0


@dataclass(frozen=True)
class TestResult:
    name: str
    outcome: str  # passed, failed, error, skipped, xfailed
    message: str = ""


def run_suite(rows: Path, junit: Path) -> int:
    env = {**os.environ, "PIORCH_RELIABILITY_OUT": str(rows), "PIORCH_E2E_REQUIRED": "1"}
    argv = [sys.executable, "-m", "pytest", SUITE, "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", "-rxXs"]
    print("running:", " ".join(argv[1:]), flush=True)
    return subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_junit(path: Path) -> list[TestResult]:
    if not path.exists():
        return []
    results = []
    # Our own pytest run wrote this file a moment ago: not untrusted input.
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314
        name = case.get("name", "?")
        outcome, message = "passed", ""
        for child in case:
            if child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome = "xfailed" if xfail else "skipped"
                message = child.get("message", "")
            elif child.tag in ("failure", "error"):
                outcome = "failed" if child.tag == "failure" else "error"
                message = (child.get("message") or "").splitlines()[0] if child.get("message") else ""
        results.append(TestResult(name, outcome, message))
    return results


def _bytes(count: int | None) -> str:
    return "-" if count is None else f"{count:,}".replace(",", " ")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def build_table(rows: list[dict[str, Any]]) -> str:
    """Pure: the Markdown table, one line per fault, in the order the suite ran them."""
    head = ("| fault | bytes sent | bytes received | bytes lost | files (status) | gap in manifest | real outage "
            "| time to resume | camera freed | exit |")
    lines = [head, "|" + " --- |" * 10]
    for row in rows:
        freed = "yes" if row["camera_freed"] else "**no**"
        if row["camera_freed"] and row.get("freed_after_link_up_s") is not None:
            freed += f", {row['freed_after_link_up_s']:.1f} s after the link returned"
        elif row["camera_freed"] and row.get("freed_after_kill_s") is not None:
            freed += f", {row['freed_after_kill_s']:.1f} s after the kill"
        files = f"{row['files']} ({', '.join(row['statuses'])})" if row["statuses"] else str(row["files"])
        gap = "none" if row["gap_s"] == 0 else _seconds(row["gap_s"])
        exit_code = "SIGKILL" if row["exit_code"] == -9 else str(row["exit_code"])
        lines.append(
            f"| {row['fault']} | {_bytes(row['sent'])} | {_bytes(row['received'])} | {_bytes(row['lost'])} "
            f"| {files} | {gap} | {_seconds(row['outage_s'])} | {_seconds(row['resume_s'])} | {freed} "
            f"| {exit_code} |"
        )
    return "\n".join(lines)


def build_notes(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"- **{row['fault']}**: {row['notes']}" for row in rows if row.get("notes"))


def build_targets(rows: list[dict[str, Any]]) -> str:
    resumes = [row["resume_s"] for row in rows if row.get("resume_s") is not None]
    freed = all(row["camera_freed"] for row in rows)
    arrived_lost = [row["fault"] for row in rows if row["id"] in ("lossy", "short", "foreign") and row["lost"]]
    lines = [
        f"- Camera freed in every case: **{'yes' if freed else 'no'}**.",
        f"- Resume within {RESUME_TARGET_S:g} s of the link (or the Pi) returning: "
        + (f"**{'yes' if max(resumes) <= RESUME_TARGET_S else 'no'}** (slowest {max(resumes):.1f} s over "
           f"{len(resumes)} resumes)" if resumes else "not measured"),
        "- 0 bytes lost where the connection survived the fault (lossy link, short outage, foreign peer): "
        f"**{'yes' if not arrived_lost else 'no: ' + ', '.join(arrived_lost)}**. Elsewhere the bytes counted as "
        "lost never reached piorch: they were in the Pi's pipe and socket buffers when the old pipeline was cut "
        "(long outage, reboot), in flight when piorch was SIGKILLed, or met a full disk. Every file was "
        "checked byte for byte to be the start of what its camera run wrote: nothing that piorch received was "
        "dropped, reordered or altered.",
    ]
    return "\n".join(lines)


def build_results(results: list[TestResult]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    bugs = sorted({r.message.removeprefix("reason: ") for r in results if r.outcome == "xfailed"})
    lines = [f"{len(results)} tests: {summary}." if results else "No test results were recorded."]
    broken = [r for r in results if r.outcome in ("failed", "error")]
    if broken:
        lines += ["", "Failing:"] + [f"- `{r.name}`: {r.message}" for r in broken]
    if bugs:
        lines += ["", "Bugs the suite shows (each an expected failure, `xfail(strict=True)`, until fixed):"]
        lines += [f"- {bug}" for bug in bugs]
    return "\n".join(lines)


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def build_document(rows: list[dict[str, Any]], results: list[TestResult], when: datetime) -> str:
    impairment = next((row.get("impairment") for row in rows if row.get("impairment")), "tc netem")
    return f"""# Reliability under faults

Produced by `sudo .venv/bin/python tools/reliability_report.py`, which runs `{SUITE}`
and writes this file from what the tests measured (do not edit it by hand).
Run on {when:%Y-%m-%d %H:%M} UTC; commit {_git_commit()}; Linux {platform.release()}, Python
{platform.python_version()}, {os.cpu_count()} CPUs.

## Setup

Two network namespaces made by the tests, "laptop" (10.203.0.1) and "Pi" (10.203.0.2), joined by one link (a
veth pair). piorch runs in the laptop namespace exactly as a user runs it (`python -m orchestrator record
--pi ... --laptop-ip 10.203.0.1 --container h264`, 640x360 at 25 fps, 2 Mbit/s unless said otherwise); the
Pi namespace runs a real OpenSSH sshd whose sessions find the camera simulator (`raspivid` stand-in) on PATH.
The simulator logs the bytes it wrote and their SHA-256; its stream is a pure function of its options, so
each received file is compared byte for byte with the start of what the camera wrote.

Loss and delay: {impairment}.
A cable pulled out: `ip link set eth0 down` on the Pi's end. A reboot: sshd's listener stops, every other
process of the Pi namespace gets SIGTERM, then SIGKILL, and sshd starts again. A full disk: a 3 MB tmpfs as
`--out`. A foreign peer: a third namespace on a second link of the laptop (10.203.1.2).

## Results

{build_table(rows)}

- bytes sent: what the camera wrote into its pipe (all runs of the recording); received: what the files on the
  laptop hold; lost = sent - received.
- gap in manifest: the length of the gaps the session manifest lists (end - start); real outage: how long the
  fault lasted, measured by the test.
- time to resume: from the link (or sshd) coming back to the first byte of the new file.
- camera freed: no simulator process left and the camera lock free, checked after piorch ended (after the
  link returned where piorch had already given up).

{build_notes(rows)}

## Against the targets of the issue

{build_targets(rows)}

## Tests

{build_results(results)}

## Not covered here

- `tc netem` itself where the kernel lacks sch_netem (the CI and development VMs): the same loss and delay are
  then made by a userspace relay between two TAP devices (`tests/netns.py`, `run_wire`), which drops and delays
  whole Ethernet frames in both directions like netem on both ends of the link.
- A link that dies silently for longer than the TCP retransmission limit (about 15 minutes), the Pi's real
  camera stack (libcamera, MMAL), a real Pi's reboot timing and PID reuse after a reboot (piorch kills the
  old pipeline's process group by number when it reconnects), and the nc receiver backend under faults.
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, help="render these JSON lines instead of running the suite")
    parser.add_argument("--junit", type=Path, help="JUnit XML of the run that wrote --rows")
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args(argv)
    when = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix="piorch-reliability-") as scratch:
        rows_path, junit_path = args.rows, args.junit
        status = 0
        if rows_path is None:
            rows_path, junit_path = Path(scratch) / "rows.jsonl", Path(scratch) / "junit.xml"
            status = run_suite(rows_path, junit_path)
        rows = read_rows(rows_path)
        results = read_junit(junit_path) if junit_path else []
    if not rows:
        print("no figures were recorded (were the tests skipped? they need root)", file=sys.stderr)
        return status or 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(build_document(rows, results, when))
    print(f"wrote {args.out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
