"""The tables of benchmarks/startup.py: first-byte medians and ratios, --help, references, the breakdown."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

TARGET_RATIO, TARGET_HELP_MS, TARGET_FLEET = 1.3, 150.0, 1.2
# The interval of a further Pi's CPU: resamples of the rounds, and a fixed seed, so a run's tables are the same
# when printed again from its JSON.
RESAMPLES, SEED = 2000, 14


@dataclass
class Sample:
    mode: str
    round: int
    first_byte_s: float  # to the last Pi's first byte
    per_pi_s: dict[str, float] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # T: startup_trace.py's marks, from the start
    cpu_marks: dict[str, float] = field(default_factory=dict)  # T: piorch's CPU time at each mark
    # piorch's own CPU time (all threads) when the last Pi's first byte was seen; None for the by-hand modes.
    cpu_s: float | None = None


def fleet_cpu(by_mode: dict[str, list[Sample]], pis: int, summary: dict[str, object], others: int = 0) -> list[str]:
    """piorch's own CPU up to the (last) first byte, one Pi against `pis`: what each further Pi costs this
    process. Its connections wait in parallel, but their CPU (key exchange, login, the start) runs one
    thread at a time under the GIL, so where the Pis do not share the laptop's cores, `pis` Pis start in
    about B + (pis - 1) x that. The same for each other piorch (C1 against C1x8, ...): measured in the same
    rounds, so the two can be compared where a figure moves from run to run by more than they differ."""
    out: list[str] = []
    for one_mode, many_mode in (("B", "B8"), *((f"C{n}", f"C{n}x8") for n in range(1, others + 1))):
        one = [s.cpu_s for s in by_mode.get(one_mode, []) if s.cpu_s is not None]
        many = [s.cpu_s for s in by_mode.get(many_mode, []) if s.cpu_s is not None]
        first = [s.first_byte_s for s in by_mode.get(one_mode, [])]
        if not one or not many or not first or pis < 2:
            continue
        per_pi = (statistics.median(many) - statistics.median(one)) / (pis - 1)
        projected = 1 + (pis - 1) * per_pi / statistics.median(first)
        (low, high), (low_ratio, high_ratio) = further_pi_interval(by_mode[one_mode], by_mode[many_mode], pis)
        prefix = "" if one_mode == "B" else f"{one_mode}_"
        summary[f"{prefix}cpu_per_further_pi_s"] = per_pi
        summary[f"{prefix}projected_fleet_ratio"] = projected
        summary[f"{prefix}cpu_per_further_pi_interval_s"] = [low, high]
        summary[f"{prefix}projected_fleet_ratio_interval"] = [low_ratio, high_ratio]
        who = "" if one_mode == "B" else f"{one_mode}: "
        cpu_one, cpu_many = statistics.median(one) * 1000, statistics.median(many) * 1000
        out += ["",
                f"{who}piorch's own CPU up to the first byte (all threads): 1 Pi {cpu_one:.0f} ms, "
                f"{pis} Pis {cpu_many:.0f} ms: {per_pi * 1000:.1f} ms for each further Pi",
                f"  {many_mode}/{one_mode} where the Pis do not share this machine's cores "
                f"({one_mode} + {pis - 1} x that): {projected:.2f}x   target <= {TARGET_FLEET:.2f}x  "
                f"{verdict(projected <= TARGET_FLEET)}",
                f"  95% interval over this run's rounds: {low * 1000:.1f}-{high * 1000:.1f} ms a further Pi, "
                f"{low_ratio:.2f}-{high_ratio:.2f}x: {where_target(low_ratio, high_ratio, TARGET_FLEET)}"]
    return out


def further_pi_interval(one: list[Sample], many: list[Sample], pis: int
                        ) -> tuple[tuple[float, float], tuple[float, float]]:
    """95% intervals of a further Pi's CPU, (median(many) - median(one)) / (pis - 1), and of the projection
    1 + (pis - 1) x that / median(one's first byte), by resampling the rounds (a bootstrap). A round is
    drawn whole, its 1-Pi and its many-Pi run together, since the machine drifts from round to round and
    both runs of a round share its state. It says how far this run's own noise lets the figures move, not
    the larger moves between runs (the machine's state), which only more runs show."""
    cpu_one = {s.round: s.cpu_s for s in one if s.cpu_s is not None}
    cpu_many = {s.round: s.cpu_s for s in many if s.cpu_s is not None}
    first = {s.round: s.first_byte_s for s in one}
    rounds = sorted(set(cpu_one) & set(cpu_many))
    if not rounds:
        return (math.nan, math.nan), (math.nan, math.nan)
    pick = random.Random(SEED)
    per_pi, ratios = [], []
    for _ in range(RESAMPLES):
        drawn = pick.choices(rounds, k=len(rounds))
        value = (statistics.median(cpu_many[r] for r in drawn)
                 - statistics.median(cpu_one[r] for r in drawn)) / (pis - 1)
        per_pi.append(value)
        ratios.append(1 + (pis - 1) * value / statistics.median(first[r] for r in drawn))
    low, high = int(0.025 * RESAMPLES), int(0.975 * RESAMPLES) - 1
    per_pi.sort()
    ratios.sort()
    return (per_pi[low], per_pi[high]), (ratios[low], ratios[high])


def where_target(low: float, high: float, target: float) -> str:
    if high <= target:
        return "the whole interval meets the target"
    if low > target:
        return "the whole interval misses the target"
    return "the target is inside the interval: this run cannot tell"


# --- the breakdown ----------------------------------------------------------------------------------------
PHASES = [
    ("Python start (interpreter, site, venv .pth files)", "", "interpreter_ready"),
    ("import orchestrator.cli (typer)", "cli_import_begin", "cli_import_end"),
    ("import the record command (settings, config, events)", "command_import_begin", "command_import_end"),
    ("import orchestrator.pi.ssh (piorch: in record(), before the connect)", "late_imports_begin",
     "recorder_import_begin"),
    ("import orchestrator.jobs.record (piorch: while the connection waits)", "recorder_import_begin",
     "late_imports_end"),
    ("typer builds the app and parses the command line", "late_imports_end", "settings_begin"),
    ("settings: flags, config file, environment", "settings_begin", "settings_end"),
    ("record(): checks, display", "settings_end", "paramiko_import_begin"),
    ("import paramiko (cryptography, nacl, bcrypt; invoke where needed)", "paramiko_import_begin",
     "paramiko_import_end"),
    ("ssh_config lookup (resolve_target, paramiko's import apart)", "paramiko_import_end", "resolve_target_end"),
    ("known_hosts load, TCP connect", "open_host_begin", "ssh_kex_begin"),
    ("SSH banner + key exchange (paramiko start_client)", "ssh_kex_begin", "ssh_kex_end"),
    ("host key check", "ssh_kex_end", "ssh_auth_begin"),
    ("authentication (key file load, publickey)", "ssh_auth_begin", "ssh_auth_end"),
    ("connected -> the pipeline is sent (all of what follows)", "ssh_auth_end", "read_pgid_begin"),
    ("  of it: what an earlier run kept (recall_probe)", "recall_begin", "recall_end"),
    ("  of it: probe round trip (probe_pi; a first run only)", "probe_begin", "probe_end"),
    ("  of it: receiver bind + accept thread (receiver.start)", "receiver_start_begin", "receiver_start_end"),
    ("pipeline: open channel + exec, guard, setsid, pgid line back", "read_pgid_begin", "read_pgid_end"),
    ("camera process start -> first byte on the laptop", "read_pgid_end", "first_byte"),
]


def phase_table(samples: list[Sample]) -> list[tuple[str, float | None, float | None]]:
    """(phase, median wall ms, median CPU ms of piorch's process); None where a mark is missing."""
    rows: list[tuple[str, float | None, float | None]] = []
    for label, begin, end in PHASES:
        spans, cpus = [], []
        for sample in samples:
            marks = {**sample.marks, "": 0.0, "first_byte": sample.first_byte_s}
            if begin in marks and end in marks:
                spans.append(marks[end] - marks[begin])
            cpu = {**sample.cpu_marks, "": 0.0}
            if begin in cpu and end in cpu:
                cpus.append(cpu[end] - cpu[begin])
        rows.append((label, statistics.median(spans) * 1000 if spans else None,
                     statistics.median(cpus) * 1000 if cpus else None))
    return rows


# --- report -----------------------------------------------------------------------------------------------
def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.0f} ms  [{min(values) * 1000:.0f}-{max(values) * 1000:.0f}]"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(where: str, samples: list[Sample], helps: dict[str, list[float]], refs: dict[str, list[float]],
           imports: dict[str, float], pis: int, others: list[str]) -> tuple[list[str], dict[str, object]]:
    """The tables as lines, and the same figures as one JSON-ready summary."""
    out: list[str] = []
    by_mode: dict[str, list[Sample]] = {}
    for sample in samples:
        by_mode.setdefault(sample.mode, []).append(sample)
    first = {mode: [s.first_byte_s for s in group] for mode, group in by_mode.items()}
    out.append(f"fake Pis: OpenSSH sshd + camera simulator; {where}")
    rounds = len({sample.round for sample in samples})
    out.append(f"rounds: {rounds}, modes interleaved; medians [min-max]; at the end: {load_text()}")
    labels = {"A": "A  by hand: nc -l + ssh 'raspivid | nc -N'", "B": "B  piorch record",
              "F": "F  piorch record, first run on this Pi (probes)",
              "AM": "AM by hand through an open ControlMaster", "BM": "BM piorch record through that ControlMaster",
              **{f"C{n}": f"C{n} piorch record by {path}" for n, path in enumerate(others, 1)},
              "T": "T  piorch record, traced (breakdown)", "A8": f"A{pis} by hand, {pis} Pis (last first byte)",
              "B8": f"B{pis} piorch record, {pis} Pis (last first byte)",
              **{f"C{n}x8": f"C{n}x{pis} {pis} Pis by C{n}" for n in range(1, len(others) + 1)}}
    out.append("\ntime to first byte" if first else "")
    for mode, label in labels.items():
        if mode in first:
            out.append(f"  {label:<52} {ms(first[mode])}")
    summary: dict[str, object] = {"where": where, "first_byte_ms": {m: statistics.median(v) * 1000
                                                                    for m, v in first.items()}}

    def ratio(top: str, bottom: str) -> tuple[float, float] | None:
        if top not in first or bottom not in first:
            return None
        rounds = {s.round: s.first_byte_s for s in by_mode[bottom]}
        per_round = [s.first_byte_s / rounds[s.round] for s in by_mode[top] if s.round in rounds]
        return statistics.median(first[top]) / statistics.median(first[bottom]), statistics.median(per_round)

    out.append("")
    pairs: list[tuple[str, str, str, float | None]] = [("B/A", "B", "A", TARGET_RATIO), ("F/A", "F", "A", None),
                                                       ("BM/AM", "BM", "AM", TARGET_RATIO), ("BM/A", "BM", "A", None)]
    for n in range(1, len(others) + 1):
        pairs += [(f"C{n}/A", f"C{n}", "A", TARGET_RATIO), (f"C{n}/B", f"C{n}", "B", None)]
    pairs += [(f"C{n}/C1", f"C{n}", "C1", None) for n in range(2, len(others) + 1)]
    pairs += [(f"C{n}x{pis}/B{pis}", f"C{n}x8", "B8", None) for n in range(1, len(others) + 1)]
    for name, top, bottom, target in (*pairs, (f"B{pis}/B", "B8", "B", TARGET_FLEET),
                                      (f"A{pis}/A (this machine's own share)", "A8", "A", None)):
        pair = ratio(top, bottom)
        if pair is None:
            continue
        goal = f"   target <= {target:.2f}x  {verdict(pair[0] <= target)}" if target else ""
        out.append(f"  {name:<36} {pair[0]:5.2f}x  (median of per-round ratios {pair[1]:.2f}x){goal}")
        summary[name] = pair[0]
    out += fleet_cpu(by_mode, pis, summary, len(others))
    if helps:
        out.append("\n--help (wall time of the whole process; over the same venv's python -c pass)")
        for name, values in helps.items():
            prefix = name[: name.index("python")] if name.endswith("python -c pass") else name[: name.index("piorch")]
            over = (statistics.median(values) - statistics.median(helps[f"{prefix}python -c pass"])) * 1000
            goal = f"  +{over:4.0f} ms  target <= +{TARGET_HELP_MS:.0f}  {verdict(over <= TARGET_HELP_MS)}" \
                if not name.endswith("python -c pass") else ""
            out.append(f"  {name:<52} {ms(values)}{goal}")
        summary["help_ms"] = {name: statistics.median(v) * 1000 for name, v in helps.items()}
    if refs:
        out.append("\nreferences (whole process unless said, interleaved)")
        for name, values in refs.items():
            out.append(f"  {name:<52} {ms(values)}")
        summary["references_ms"] = {name: statistics.median(v) * 1000 for name, v in refs.items()}
    if "T" in by_mode:
        out.append("\nwhere the time of `piorch record` goes (T runs; medians; CPU: piorch's own process, all threads)")
        out.append(f"  {'step':<66} {'wall ms':>7} {'CPU ms':>7}")
        rows = phase_table(by_mode["T"])
        for label, wall, cpu in rows:
            out.append(f"  {label:<66} {cell(wall)} {cell(cpu)}")
        known = sum(wall for _, wall, _ in rows if wall is not None)
        t_ms = statistics.median(first["T"]) * 1000
        out.append(f"  {'sum of the rows (medians do not add up exactly)':<66} {known:7.1f}   (T: {t_ms:.1f})")
        out += connect_start(by_mode["T"], helps, refs, summary)
        summary["breakdown_ms"] = {label: {"wall": wall, "cpu": cpu} for label, wall, cpu in rows}
    if imports:
        out.append("\nimports over 5 ms (-X importtime, cumulative, medians; nested ones are inside their parents)")
        for name, value in sorted(imports.items(), key=lambda item: -item[1]):
            if value >= 5:
                out.append(f"  {name:<66} {value:6.1f}")
        summary["imports_ms"] = imports
    return out, summary


def connect_start(traced: list[Sample], helps: dict[str, list[float]], refs: dict[str, list[float]],
                  summary: dict[str, object]) -> list[str]:
    """`piorch record` up to the SSH connect (T's open_host), over `python -c pass`: the issue's third
    --help-like target. T imports the recorder (jobs.record) before it, piorch after: that span is left out."""
    starts = [marks["open_host_begin"] - (marks["late_imports_end"] - marks["recorder_import_begin"])
              for marks in (sample.marks for sample in traced)
              if {"open_host_begin", "recorder_import_begin", "late_imports_end"} <= marks.keys()]
    bare = helps.get("python -c pass") or refs.get("python -c pass")
    if not starts or not bare:
        return []
    over = (statistics.median(starts) - statistics.median(bare)) * 1000
    summary["record_to_connect_over_python_ms"] = over
    return [f"  piorch record up to the SSH connect (T's open_host, less T's early import of the recorder)"
            f"\n    {statistics.median(starts) * 1000:.0f} ms, +{over:.0f} ms over python -c pass"
            f"   target <= +{TARGET_HELP_MS:.0f}  {verdict(over <= TARGET_HELP_MS)}"]


def cell(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value:7.1f}"


def load_text() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
