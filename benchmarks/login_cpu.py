"""What an SSH login costs piorch's process, one after another against all at once (issue 14, the fleet start).

Run: `.venv/bin/python benchmarks/login_cpu.py [--rounds 20] [--pis 8] [--known-hosts 150] [--ciphers]
[--loopback] [--json]` (root for network namespaces, as startup.py; about a minute).

A fleet's further Pi costs piorch ~7 ms of CPU before its first byte (startup.py, startup_threads.py), and
with several Pis the threads of their logins take turns under the GIL. Is that turn-taking (context
switches, hand-overs between a Pi's login thread and paramiko's transport thread, caches cooled by the other
Pis) what costs, or the login's own work? This measures it apart from the rest of `record`, in this process,
on startup.py's fake Pis (startup_lab.py: real sshds behind shaped veths, one hashed known_hosts):

- a login is what `record` does before its pipeline: `pi/ssh.connect_pi` (the ssh_config, known_hosts, the
  TCP connect, key exchange, host key, authentication), then one command started and waited for (`true`:
  a channel opened, exec, its exit status), as the pipeline's start costs one;
- each round logs in to the `--pis` Pis one after another ("in turn") and all at once, a thread each
  ("at once"), in alternating order; this process's CPU (every thread, its CPU-time clock) and its context
  switches (getrusage) are read around each, per login; the connections are closed outside the reading;
- with `--ciphers`, each round also logs in at once with paramiko's own cipher order (aes128-ctr and
  hmac-sha2-256 first), against piorch's (AES-GCM first, pi/ssh.AEAD_CIPHERS).

Medians over the rounds. Exit status 0 when every login succeeded, 1 otherwise; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from startup_lab import FakePi, Lab, LabError, NetnsError, open_lab

from orchestrator.errors import PiorchError
from orchestrator.pi import ssh
from orchestrator.pi.host import Host
from orchestrator.settings import SshSettings

# A login that takes longer than this has failed: the fake Pis answer within tens of milliseconds.
LOGIN_TIMEOUT_S = 20.0


def _log_in(pi: FakePi, config: Path) -> Host:
    host = ssh.connect_pi(SshSettings(target=pi.alias, ssh_config=config, connect_timeout=LOGIN_TIMEOUT_S))
    result = host.run("true", timeout=LOGIN_TIMEOUT_S)
    if result.exit_code != 0:
        raise PiorchError(f"`true` on {pi.alias} exited {result.exit_code}", "see the sshd's log")
    return host


def _in_turn(lab: Lab) -> list[Host]:
    return [_log_in(pi, lab.ssh_config) for pi in lab.pis]


def _at_once(lab: Lab) -> list[Host]:
    hosts: list[Host] = []
    failures: list[BaseException] = []

    def one(pi: FakePi) -> None:
        try:
            hosts.append(_log_in(pi, lab.ssh_config))
        except BaseException as exc:  # handed to the main thread, raised there
            failures.append(exc)

    threads = [threading.Thread(target=one, args=(pi,), name=f"login-{pi.alias}") for pi in lab.pis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LOGIN_TIMEOUT_S * 2)
    if failures or len(hosts) != len(lab.pis):
        for host in hosts:
            host.close()
        raise failures[0] if failures else PiorchError("a login did not finish", "see the sshds' logs")
    return hosts


def _measured(way: Callable[[Lab], list[Host]], lab: Lab) -> tuple[float, float]:
    """CPU ms and context switches a login, the logins of one way."""
    before_usage = resource.getrusage(resource.RUSAGE_SELF)
    before = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)
    hosts = way(lab)
    spent = time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID) - before
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for host in hosts:
        host.close()
    switches = (usage.ru_nvcsw + usage.ru_nivcsw) - (before_usage.ru_nvcsw + before_usage.ru_nivcsw)
    return spent * 1000 / len(lab.pis), switches / len(lab.pis)


def _with_paramikos_ciphers(lab: Lab) -> list[Host]:
    keep = ssh.AEAD_CIPHERS
    ssh.AEAD_CIPHERS = ()  # prefer_aead then leaves paramiko's own order
    try:
        return _at_once(lab)
    finally:
        ssh.AEAD_CIPHERS = keep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds (default 20)")
    parser.add_argument("--pis", type=int, default=8, help="fake Pis, logged in to a round each way (default 8)")
    parser.add_argument("--known-hosts", type=int, metavar="N", default=150,
                        help="one hashed known_hosts for all Pis with N other hosts (default 150; startup.py's)")
    parser.add_argument("--loopback", action="store_true", help="sshd on 127.0.0.1 even where netns would work")
    parser.add_argument("--ciphers", action="store_true",
                        help="also at once with paramiko's own cipher order against piorch's")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = parser.parse_args()
    if args.pis < 1 or args.rounds < 1:
        parser.error("--pis and --rounds must be at least 1")
    ways: dict[str, Callable[[Lab], list[Host]]] = {"in turn": _in_turn, "at once": _at_once}
    if args.ciphers:
        ways["at once, paramiko's cipher order"] = _with_paramikos_ciphers
    readings: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="piorch-logins-")))
        try:
            lab = open_lab(stack, scratch, args.pis, args.loopback, args.known_hosts)
            for host in _in_turn(lab):  # untimed: imports, the files read once a process, sshd's first forks
                host.close()
            for index in range(args.rounds):
                order = list(ways.items()) if index % 2 == 0 else list(reversed(ways.items()))
                for name, way in order:
                    readings[name].append(_measured(way, lab))
        except (PiorchError, LabError, NetnsError) as exc:
            print(f"login_cpu failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    summary = {name: {"cpu_ms_per_login": statistics.median(cpu for cpu, _ in values),
                      "switches_per_login": statistics.median(count for _, count in values)}
               for name, values in readings.items()}
    if args.json:
        print(json.dumps({"where": lab.where, "pis": args.pis, "rounds": args.rounds, **summary}, indent=2))
        return 0
    print(f"fake Pis: {lab.where}; {args.pis} logins a way, {args.rounds} rounds, medians")
    print(f"  {'way':<36} {'CPU ms a login':>15} {'switches a login':>17}")
    for name, row in summary.items():
        print(f"  {name:<36} {row['cpu_ms_per_login']:15.2f} {row['switches_per_login']:17.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
