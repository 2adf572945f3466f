"""Clock-offset benchmark: the Pi's clock sampled through one command against a command per sample.

Run: `.venv/bin/python benchmarks/clock_offset.py [--rounds 10] [--samples 5] [--json]`.

One fake Pi (the tests' real OpenSSH sshd on 127.0.0.1, its own keys) and one paramiko connection to it.
Each round measures the offset both ways, alternating which goes first, so machine noise hits both alike:
- per command, the baseline (piorch before this benchmark): `date +%s.%N` as its own command per sample,
  each on a new channel with its own shell on the Pi, timed around the whole command;
- one loop (pi/clock.py): one command, `while read -r n; do echo "piorch-clock $n $(date +%s.%N)"; done`,
  a numbered line sent and its answer read per sample.
For each: the uncertainty (half the tightest round trip, what the session manifest says), the wall time of
the whole measurement, and this process's CPU time for it (every thread: paramiko's too). Medians; the
ratios are per-command over one-loop. Exit status 0 when every measurement gave an offset, 1 otherwise; the
ratios are reported, not asserted. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.pi.clock import ClockOffset, measure_clock_offset, sample_by_commands
from orchestrator.pi.host import Host
from orchestrator.pi.ssh import SshHost
from orchestrator.settings import SshSettings
from tests.e2e_helpers import start_fake_pi


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds, each measuring both ways (default 10)")
    parser.add_argument("--samples", type=int, default=5, help="clock samples a measurement (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = parser.parse_args()
    ways: dict[str, Callable[[Host, int], ClockOffset | None]] = {
        "per command": lambda host, samples: sample_by_commands(host, samples, time.time, None),
        "one loop": lambda host, samples: measure_clock_offset(host, samples),
    }
    figures: dict[str, dict[str, list[float]]] = {name: {"uncertainty": [], "wall": [], "cpu": []} for name in ways}
    with tempfile.TemporaryDirectory(prefix="piorch-clock-") as scratch:
        pi = start_fake_pi(Path(scratch))
        try:
            host = SshHost.connect(SshSettings(target=pi.info.alias, ssh_config=pi.info.ssh_config))
            try:
                for index in range(args.rounds):
                    order = list(ways.items()) if index % 2 == 0 else list(reversed(ways.items()))
                    for name, way in order:
                        cpu, wall = time.process_time(), time.monotonic()
                        offset = way(host, args.samples)
                        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
                        if offset is None:
                            print(f"clock benchmark failed: {name} gave no offset", file=sys.stderr)
                            return 1
                        for key, value in (("uncertainty", offset.uncertainty_s), ("wall", wall), ("cpu", cpu)):
                            figures[name][key].append(value)
            finally:
                host.close()
        finally:
            pi.server.stop()
    medians = {name: {key: statistics.median(values) * 1000 for key, values in by.items()}
               for name, by in figures.items()}
    ratios = {key: medians["per command"][key] / medians["one loop"][key] for key in ("uncertainty", "wall", "cpu")}
    if args.json:
        print(json.dumps({"medians_ms": medians, "ratios": ratios, "samples_s": figures}, indent=2))
        return 0
    print(f"fake Pi: OpenSSH sshd on 127.0.0.1; {args.rounds} rounds, {args.samples} samples a measurement; medians")
    print(f"  {'':<14} {'uncertainty':>12} {'wall':>10} {'laptop CPU':>11}")
    for name, by in medians.items():
        print(f"  {name:<14} {by['uncertainty']:9.2f} ms {by['wall']:7.1f} ms {by['cpu']:8.1f} ms")
    print(f"  {'ratio':<14} {ratios['uncertainty']:10.1f}x {ratios['wall']:8.1f}x {ratios['cpu']:9.1f}x"
          "  (per command / one loop)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
