"""Where a further Pi's CPU goes: piorch's CPU per thread at the last first byte, 1 Pi against 8.

Run: `.venv/bin/python benchmarks/startup_threads.py [--rounds 6] [--pis 8] [--known-hosts 150]
[--other-piorch PATH] [--steady S] [--functions] [--json]` (root for network namespaces, as startup.py; about a
minute a round pair).

startup.py reads piorch's CPU as one figure (every thread, from the process's CPU-time clock) and from it
the cost of each further Pi. This splits that figure by thread, on the same fake Pis (startup_lab.py) and
with the same `piorch record` (an installed copy of this checkout, startup.install_copy):

- a `sitecustomize.py` in a temp folder on PYTHONPATH (nothing in piorch changes) writes, for each Python
  thread, its OS thread id and name when it starts and its CPU time (time.thread_time) when it ends;
- when the last Pi's first byte is seen, every live thread's CPU is read from /proc/PID/task/TID/schedstat,
  and each thread that has already ended counts with what it had spent;
- threads are grouped by name with the Pi's name, numbers and addresses taken out (`piorch-pending-piN`,
  `Thread-N` for paramiko's transports, `piorch-conn ADDR`), the unnamed main thread as `main`;
- runs alternate 1 Pi and `--pis` Pis (and, with --other-piorch, that piorch's 1 and N), medians per group;
- `--steady S`: also the CPU a second of the recording that follows, by thread group, read from 0.3 s after
  the last first byte over S seconds (the Pis' per-frame work: timestamps, reads, the progress clock).
- `--functions`: also the CPU spent inside each of the functions a Pi's start goes through (FUNCTIONS:
  piorch's and paramiko's), by thread group, up to the last first byte: each is wrapped, as its module is
  imported, to add up its calls and `time.thread_time()` (CPU only, waits left out; a function that calls
  another listed one counts it too; a call still running at the last first byte is not counted). A
  profiler's own cost per call would swamp functions called thousands of times; this costs two clock reads
  a call of the few listed. The process writes the sums when piorch's runner sends SIGUSR1 at the last
  first byte.

The thread names are piorch's own (`piorch-pending-...`, `piorch-accept`, ...); a thread piorch no longer
starts simply has no row. Exit status 0 when every run succeeded, 1 when one failed (MeasurementFailed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from startup import SECONDS, Install, MeasurementFailed, install_copy, run_piorch
from startup_lab import FakePi, Lab, LabError, NetnsError, open_lab

# Loaded by site at the interpreter's start (PYTHONPATH): one line a thread start ("S TID NAME") and end
# ("E TID CPU_MS SWITCHES NAME": its CPU and its context switches, voluntary and not) in
# $PIORCH_THREADS_DIR/<pid>, appended whole (one write each).
SITECUSTOMIZE = '''\
import os, threading, time
_dir = os.environ.get("PIORCH_THREADS_DIR")
if _dir:
    _run = threading.Thread._bootstrap_inner
    def _switches(tid):
        try:
            with open(f"/proc/self/task/{tid}/status") as status:
                return sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)
        except (OSError, ValueError, IndexError):
            return 0
    def _noted(self):
        path = os.path.join(_dir, str(os.getpid()))
        tid = threading.get_native_id()
        with open(path, "a") as out:
            out.write(f"S {tid} {self.name}\\n")
        try:
            _run(self)
        finally:
            spent = time.thread_time_ns() / 1e6
            with open(path, "a") as out:
                out.write(f"E {tid} {spent} {_switches(tid)} {self.name}\\n")
    threading.Thread._bootstrap_inner = _noted
'''
# --functions: loaded after SITECUSTOMIZE. $PIORCH_FUNCTIONS (JSON: module -> qualified names) are wrapped once
# their module has run (a finder ahead of the others wraps the loader's exec_module); SIGUSR1 writes
# {"function @thread group": [calls, CPU seconds]} to $PIORCH_FUNCTIONS_OUT whole (a rename).
FUNCTIONS_HOOK = '''
import importlib.abc, importlib.machinery, json, re, signal, sys
_wanted = json.loads(os.environ.get("PIORCH_FUNCTIONS") or "{}")
_out = os.environ.get("PIORCH_FUNCTIONS_OUT")
_spent = {}
_adding = threading.Lock()
_groups = [(re.compile(p), r) for p, r in json.loads(os.environ.get("PIORCH_FUNCTIONS_GROUPS") or "[]")]
def _group(name):
    for pattern, replacement in _groups:
        name = pattern.sub(replacement, name)
    return name
def _wrap(key, function):
    def wrapped(*args, **kwargs):
        start = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent = time.thread_time() - start
            where = key + " @" + _group(threading.current_thread().name)
            with _adding:
                entry = _spent.setdefault(where, [0, 0.0])
                entry[0] += 1
                entry[1] += spent
    return wrapped
def _patch(module):
    for qualname in _wanted.get(module.__name__, ()):
        owner, _, name = qualname.rpartition(".")
        holder = getattr(module, owner, None) if owner else module
        found = vars(holder).get(name) if holder is not None else None
        key = module.__name__.split(".")[-1] + "." + qualname
        if isinstance(found, (staticmethod, classmethod)):
            setattr(holder, name, type(found)(_wrap(key, found.__func__)))
        elif callable(found):
            setattr(holder, name, _wrap(key, found))
        else:  # another version of piorch or paramiko: measured without it, and said
            sys.stderr.write(f"startup_threads --functions: no {qualname} in {module.__name__}\\n")
class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _wanted:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module
            def exec_module(module, run=run):
                run(module)
                _patch(module)
            spec.loader.exec_module = exec_module
        return spec
def _write():
    with _adding:
        text = json.dumps(_spent)
    with open(_out + ".tmp", "w") as out:
        out.write(text)
    os.rename(_out + ".tmp", _out)
def _on_signal(signum, frame):
    # On a thread of its own: the handler runs on the main thread, which may be inside a wrapper holding
    # _adding just then.
    threading.Thread(target=_write, name="functions-writer", daemon=True).start()
if _wanted and _out:
    sys.meta_path.insert(0, _Finder())
    signal.signal(signal.SIGUSR1, _on_signal)
'''
# What a Pi's start goes through (piorch's and paramiko's), for --functions: module -> qualified names. Only
# functions that return before the first byte: a call still running then (the recording's own loops) has
# added nothing yet.
FUNCTIONS = {
    "orchestrator.pi.ssh": ["_log_in", "_login", "_dial", "SshHost.start", "new_transport"],
    "orchestrator.pi.hostkey": ["read_known_hosts"],
    "orchestrator.pi.target": ["resolve_target"],
    "orchestrator.pi.capture": ["Pipeline.start", "Pipeline.poll"],
    "orchestrator.pi.probe_memory": ["recall_probe"],
    "orchestrator.stream.receiver": ["BuiltinReceiver.start", "check_out_dir"],
    "orchestrator.stream.sinks": ["StreamSink.write"],
    "orchestrator.stream.writer": ["FileWriter.__init__"],
    "orchestrator.stream.manifest": ["reserve_manifest"],
    "orchestrator.ui.log": ["PlainLog.__call__"],
    "paramiko.client": ["SSHClient.connect", "SSHClient._auth"],
    "paramiko.transport": ["Transport.start_client", "Transport.open_session", "Transport._send_kex_init",
                           "Transport._parse_kex_init", "Transport._activate_outbound", "Transport._parse_newkeys"],
    "paramiko.kex_curve25519": ["KexCurve25519.start_kex", "KexCurve25519.parse_next"],
    # paramiko 5's first choice where the sshd has it too (OpenSSH 9.9 and later); not in older paramiko.
    "paramiko.kex_mlkem": ["KexMLKEM768X25519.start_kex", "KexMLKEM768X25519.parse_next"],
    "paramiko.auth_handler": ["AuthHandler._parse_service_accept"],
    "paramiko.packet": ["Packetizer.read_message", "Packetizer.send_message"],
}
GROUPS = ((re.compile(r"pi\d+"), "piN"), (re.compile(r"Thread-\d+"), "Thread-N"),
          (re.compile(r"\d+\.\d+\.\d+\.\d+(:\d+)?|\[[0-9a-fA-F:.]+\](:\d+)?"), "ADDR"))


def group(name: str) -> str:
    for pattern, replacement in GROUPS:
        name = pattern.sub(replacement, name)
    return name


def switches_of(status: str) -> int:
    """A thread's context switches, voluntary and not, from its /proc status."""
    return sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)


def per_thread(pid: int, notes: Path) -> dict[str, tuple[float, int]]:
    """CPU ms and context switches by thread group: live threads from /proc, ended ones from their own last
    note."""
    names: dict[str, str] = {}
    ended: dict[str, tuple[str, float, int]] = {}
    try:
        for line in notes.read_text().splitlines():
            kind, rest = line.split(" ", 1)
            if kind == "S":
                tid, name = rest.split(" ", 1)
                names[tid] = name
            else:
                tid, spent_ms, switches_text, name = rest.split(" ", 3)
                ended[tid] = (name, float(spent_ms), int(switches_text))
    except (OSError, ValueError):
        pass  # no thread started yet, or a line cut short: those threads count as unnamed
    spent_by: dict[str, tuple[float, int]] = {}

    def add(key: str, spent: float, switches: int) -> None:
        before = spent_by.get(key, (0.0, 0))
        spent_by[key] = (before[0] + spent, before[1] + switches)

    alive: set[str] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            nanoseconds = int((task / "schedstat").read_text().split()[0])
            switches = switches_of((task / "status").read_text())
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile: its own note counts it
        alive.add(task.name)
        add(group(names.get(task.name, "main" if task.name == str(pid) else "(unnamed)")), nanoseconds / 1e6,
            switches)
    for tid, (name, spent, count) in ended.items():
        if tid not in alive:
            add(f"{group(name)} (ended)", spent, count)
    return spent_by


# --steady: the recording is measured from this long after the last first byte (the start's own threads
# have settled) for the seconds asked; the camera runs startup.SECONDS in all.
STEADY_AFTER_S = 0.3
STEADY_MAX_S = SECONDS - STEADY_AFTER_S - 1.0

# Seconds to the last first byte, the process's CPU then, CPU ms and context switches by thread group, with
# --steady the CPU ms a second of recording by thread group, and with --functions each listed function's
# calls and CPU ms ("function @thread group").
Run = tuple[float, float | None, dict[str, tuple[float, int]], dict[str, float], dict[str, tuple[int, float]]]
# How long the process may take to write its function sums after SIGUSR1.
FUNCTIONS_WRITE_S = 5.0


def _functions_env(folder: Path) -> dict[str, str]:
    return {"PIORCH_FUNCTIONS": json.dumps(FUNCTIONS), "PIORCH_FUNCTIONS_OUT": str(folder / "functions.json"),
            "PIORCH_FUNCTIONS_GROUPS": json.dumps([(pattern.pattern, name) for pattern, name in GROUPS])}


def _read_functions(pid: int, path: Path) -> dict[str, tuple[int, float]]:
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + FUNCTIONS_WRITE_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise MeasurementFailed(f"piorch wrote no function sums within {FUNCTIONS_WRITE_S:g} s")
        time.sleep(0.002)
    return {key: (int(calls), spent * 1000) for key, (calls, spent) in json.loads(path.read_text()).items()}


def run_once(lab: Lab, pis: list[FakePi], folder: Path, scratch: Path, install: Install, piorch: str,
             hooks: Path, steady_s: float = 0.0, functions: bool = False) -> Run:
    """One `piorch record` (startup.run_piorch), read at the last first byte and, with `steady_s`, over that
    many seconds of the recording that follows."""
    threads: dict[str, tuple[float, int]] = {}
    steady: dict[str, float] = {}
    spent_in: dict[str, tuple[int, float]] = {}

    def at_first_byte(pid: int) -> None:
        threads.update(per_thread(pid, folder / str(pid)))
        if functions:
            spent_in.update(_read_functions(pid, folder / "functions.json"))
        if steady_s > 0:
            time.sleep(STEADY_AFTER_S)
            before = per_thread(pid, folder / str(pid))
            time.sleep(steady_s)
            after = per_thread(pid, folder / str(pid))
            # A thread that ended meanwhile moved to its "(ended)" group: the groups' sum is still right.
            for name in set(before) | set(after):
                steady[name] = (after.get(name, (0.0, 0))[0] - before.get(name, (0.0, 0))[0]) / steady_s

    env = {"PYTHONPATH": str(hooks), "PIORCH_THREADS_DIR": str(folder), **(_functions_env(folder) if functions else {})}
    seen, _, total = run_piorch(lab, pis, folder, scratch, install, piorch=piorch, extra_env=env,
                                at_first_byte=at_first_byte)
    return max(seen.values()), total, threads, steady, spent_in


def functions_report(runs: dict[str, list[Run]], pis: int) -> tuple[list[str], dict[str, object]]:
    """--functions: each listed function's CPU by thread group, 1 Pi against `pis`, medians."""
    one, many = runs["1"], runs["N"]
    keys = {key for *_, spent_in in one + many for key in spent_in}
    if not keys:
        return [], {}
    # function -> 1 Pi ms, all Pis ms, a further Pi ms, calls with 1 Pi, calls with all
    rows: dict[str, tuple[float, float, float, float, float]] = {}
    for key in keys:
        spent = [statistics.median(run[4].get(key, (0, 0.0))[1] for run in runs_of) for runs_of in (one, many)]
        calls = [statistics.median(run[4].get(key, (0, 0.0))[0] for run in runs_of) for runs_of in (one, many)]
        rows[key] = (spent[0], spent[1], (spent[1] - spent[0]) / (pis - 1), calls[0], calls[1])
    lines = [f"  {'function @thread (medians, CPU ms, callees included)':<64} {'1 Pi':>7} {f'{pis} Pis':>7} "
             f"{'further':>8} {'calls':>9}"]
    for key, (ms_one, ms_all, further, calls_one, calls_all) in sorted(rows.items(), key=lambda item: -item[1][2]):
        lines.append(f"  {key:<64} {ms_one:7.2f} {ms_all:7.2f} {further:8.3f} {calls_one:4.0f}/{calls_all:<4.0f}")
    return lines, {"functions": {key: {"one_pi_ms": row[0], "all_pis_ms": row[1], "per_further_pi_ms": row[2],
                                       "calls": [row[3], row[4]]} for key, row in rows.items()}}


def steady_report(runs: dict[str, list[Run]], pis: int) -> tuple[list[str], dict[str, object]]:
    """--steady: piorch's CPU a second of recording, 1 Pi against `pis`, by thread group."""
    one, many = runs["1"], runs["N"]
    if not one or not one[0][3]:
        return [], {}
    total_one = statistics.median(sum(run[3].values()) for run in one)
    total_many = statistics.median(sum(run[3].values()) for run in many)
    lines = [f"  recording, from {STEADY_AFTER_S} s after the last first byte: 1 Pi {total_one:.1f} ms/s, {pis} Pis "
             f"{total_many:.1f} ms/s ({(total_many - total_one) / (pis - 1):.2f} ms/s a further Pi)",
             f"  {'thread (medians, ms of CPU a second)':<40} {'1 Pi':>8} {f'{pis} Pis':>8}"]
    rows = {name: (statistics.median(run[3].get(name, 0.0) for run in one),
                   statistics.median(run[3].get(name, 0.0) for run in many))
            for name in {name for run in one + many for name in run[3]}}
    for name, (rate_one, rate_many) in sorted(rows.items(), key=lambda item: -item[1][1]):
        if abs(rate_one) >= 0.05 or abs(rate_many) >= 0.05:
            lines.append(f"  {name:<40} {rate_one:8.2f} {rate_many:8.2f}")
    return lines, {"steady_ms_per_s": [total_one, total_many],
                   "steady_threads": {name: list(rates) for name, rates in rows.items()}}


def report(label: str, piorch: str, runs: dict[str, list[Run]], pis: int) -> tuple[list[str], dict[str, object]]:
    one, many = runs["1"], runs["N"]
    wall_one = statistics.median(wall for wall, *_ in one) * 1000
    wall_many = statistics.median(wall for wall, *_ in many) * 1000
    cpu_one = statistics.median(total or 0.0 for _, total, *_ in one) * 1000
    cpu_many = statistics.median(total or 0.0 for _, total, *_ in many) * 1000
    per_pi = (cpu_many - cpu_one) / (pis - 1)

    def further(values_one: list[float], values_many: list[float]) -> float:
        return (statistics.median(values_many) - statistics.median(values_one)) / (pis - 1)

    switches = further([sum(n for _, n in threads.values()) for _, _, threads, *_ in one],
                       [sum(n for _, n in threads.values()) for _, _, threads, *_ in many])
    lines = [f"{label}: {piorch}",
             f"  last first byte: 1 Pi {wall_one:.0f} ms, {pis} Pis {wall_many:.0f} ms; piorch's CPU then (every "
             f"thread): {cpu_one:.1f} / {cpu_many:.1f} ms, {per_pi:.2f} ms a further Pi; B + {pis - 1} x that: "
             f"{1 + (pis - 1) * per_pi / wall_one:.2f}x; context switches a further Pi: {switches:.0f}",
             f"  {'thread (medians, ms)':<40} {'1 Pi':>8} {f'{pis} Pis':>8} {'a further Pi':>13} {'switches':>9}"]
    groups: dict[str, dict[str, float]] = {}
    for name in sorted({name for _, _, threads, *_ in one + many for name in threads}):
        spent = [[threads.get(name, (0.0, 0))[0] for _, _, threads, *_ in runs_of] for runs_of in (one, many)]
        counts = [[float(threads.get(name, (0.0, 0))[1]) for _, _, threads, *_ in runs_of]
                  for runs_of in (one, many)]
        groups[name] = {"one_pi_ms": statistics.median(spent[0]), "all_pis_ms": statistics.median(spent[1]),
                        "per_further_pi_ms": further(*spent), "switches_per_further_pi": further(*counts)}
    for name, row in sorted(groups.items(), key=lambda item: -item[1]["per_further_pi_ms"]):
        lines.append(f"  {name:<40} {row['one_pi_ms']:8.2f} {row['all_pis_ms']:8.2f} {row['per_further_pi_ms']:13.2f} "
                     f"{row['switches_per_further_pi']:9.1f}")
    steady_lines, steady = steady_report(runs, pis)
    function_lines, spent_in = functions_report(runs, pis)
    return lines + steady_lines + function_lines, {
        "piorch": piorch, "first_byte_ms": [wall_one, wall_many], "cpu_ms": [cpu_one, cpu_many],
        "cpu_per_further_pi_ms": per_pi, "switches_per_further_pi": switches, "threads": groups, **steady, **spent_in}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="round pairs (1 Pi, then --pis Pis; default 6)")
    parser.add_argument("--pis", type=int, default=8, help="Pis of the larger start (default 8)")
    parser.add_argument("--known-hosts", type=int, metavar="N", default=150,
                        help="one hashed known_hosts for all Pis with N other hosts (default 150; startup.py's)")
    parser.add_argument("--other-piorch", metavar="PATH", default=None,
                        help="another piorch measured alternately with this checkout's (e.g. an older version)")
    parser.add_argument("--loopback", action="store_true", help="sshd on 127.0.0.1 even where netns would work")
    parser.add_argument("--steady", type=float, metavar="S", default=0.0,
                        help=f"also piorch's CPU a second while recording, over S seconds from {STEADY_AFTER_S} s "
                             f"after the last first byte (at most {STEADY_MAX_S:.1f})")
    parser.add_argument("--functions", action="store_true",
                        help="also the CPU inside each function a Pi's start goes through (FUNCTIONS), by thread")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = parser.parse_args()
    if args.pis < 2 or args.rounds < 1:
        parser.error("--pis must be at least 2 and --rounds at least 1")
    if not 0 <= args.steady <= STEADY_MAX_S:
        parser.error(f"--steady must be between 0 and {STEADY_MAX_S:.1f} s (the camera runs {SECONDS} s)")
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="piorch-threads-")))
        hooks = scratch / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE + (FUNCTIONS_HOOK if args.functions else ""))
        try:
            install = install_copy(scratch)
            piorches = {"this checkout": install.piorch}
            if args.other_piorch:
                piorches["other"] = args.other_piorch
            lab = open_lab(stack, scratch, args.pis, args.loopback, args.known_hosts)
            one, many = lab.pis[:1], lab.pis
            runs: dict[str, dict[str, list[Run]]] = {
                label: {"1": [], "N": []} for label in piorches}
            for label, piorch in piorches.items():  # untimed: memories of the Pis, page cache, sshd's forks
                for pis in (one, many):
                    run_once(lab, pis, scratch / f"warm-{label}-{len(pis)}".replace(" ", "-"), scratch, install, piorch,
                             hooks, functions=args.functions)
            for index in range(args.rounds):
                for label, piorch in piorches.items():
                    for key, pis in (("1", one), ("N", many)):
                        folder = scratch / f"r{index}-{label}-{key}".replace(" ", "-")
                        runs[label][key].append(run_once(lab, pis, folder, scratch, install, piorch, hooks,
                                                         args.steady, args.functions))
                if not args.json:
                    print(f"round {index + 1} of {args.rounds}", file=sys.stderr)
        except (MeasurementFailed, LabError, NetnsError) as exc:
            print(f"startup_threads failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        summary: dict[str, object] = {"where": lab.where, "pis": args.pis, "rounds": args.rounds}
        lines = [f"fake Pis: {lab.where}; one hashed known_hosts with {args.known_hosts} other hosts; "
                 f"{args.rounds} rounds, medians"]
        for label, piorch in piorches.items():
            part, data = report(label, piorch, runs[label], args.pis)
            lines += ["", *part]
            summary[label] = data
        print(json.dumps(summary, indent=2) if args.json else "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
