"""`--view` latency: time from a chunk arriving to it being handed to the player, at 25 Mbit/s.

Baseline in the same run: writing the same chunks straight into a player's stdin on the receiving thread
(what a naive tap would do, and what piorch must not do, since a slow player would then block it).
Also shows that a player that stops reading costs the receiving thread nothing.
Target: under 0.5 s. Usage: python benchmarks/view.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.stream.viewer import ViewFeeder

RATE_BPS = 25_000_000
CHUNK = 64 * 1024
PLAYER = [sys.executable, "-c", "import sys\nwhile sys.stdin.buffer.read1(1 << 16): pass"]
# A player that reads whole chunks and notes, for each, how long ago it was offered: every chunk starts with
# its offer time (CLOCK_MONOTONIC is one clock for every process of the machine). Writes the longest wait.
TIMING_PLAYER = f"""
import struct, sys, time
longest = 0.0
while chunk := sys.stdin.buffer.read({CHUNK}):
    longest = max(longest, time.monotonic() - struct.unpack("d", chunk[:8])[0])
open(sys.argv[1], "w").write(str(longest))
"""


def paced_chunks(seconds: float) -> list[float]:
    """Send times of each chunk, paced at the bitrate."""
    count = int(RATE_BPS / 8 * seconds / CHUNK)
    return [i * CHUNK * 8 / RATE_BPS for i in range(count)]


def run_feeder(seconds: float, player: list[str] | None) -> tuple[float, list[float]]:
    """Offer paced chunks; the longest offer -> player delay (measured by the player) and each offer's cost."""
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "longest"
        feeder = ViewFeeder(player or [sys.executable, "-c", TIMING_PLAYER, str(result)], lambda event: None)
        feeder.start()
        chunk = bytearray(os.urandom(CHUNK))
        offer_costs = []
        start = time.monotonic()
        for due in paced_chunks(seconds):
            delay = start + due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            chunk[:8] = struct.pack("d", time.monotonic())
            t0 = time.perf_counter()
            feeder.offer(chunk)
            offer_costs.append(time.perf_counter() - t0)
        feeder.stop(timeout=2)
        longest = float(result.read_text()) if result.exists() else float("nan")
    return longest, offer_costs


def run_direct(seconds: float) -> tuple[float, list[float]]:
    proc = subprocess.Popen(PLAYER, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    chunk = os.urandom(CHUNK)
    costs = []
    start = time.monotonic()
    for due in paced_chunks(seconds):
        delay = start + due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        proc.stdin.write(chunk)
        proc.stdin.flush()
        costs.append(time.perf_counter() - t0)
    proc.stdin.close()
    proc.wait(10)
    return max(costs), costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    _, direct_costs = run_direct(args.seconds)
    feeder_max, offer_costs = run_feeder(args.seconds, None)
    _, stuck_costs = run_feeder(min(args.seconds, 3.0), ["sleep", "60"])

    def us(values: list[float]) -> str:
        return f"median {statistics.median(values) * 1e6:.0f} us, max {max(values) * 1e6:.0f} us"

    print(f"{RATE_BPS / 1e6:.0f} Mbit/s in {CHUNK // 1024} KiB chunks for {args.seconds:g} s")
    print(f"baseline, direct pipe write on the receiving thread: {us(direct_costs)} per chunk")
    print(f"piorch ViewFeeder: arrival -> player max {feeder_max * 1000:.1f} ms (target < 500 ms: "
          f"{'PASS' if feeder_max < 0.5 else 'FAIL'}); receiving thread pays {us(offer_costs)} per chunk")
    print(f"player that never reads: receiving thread pays {us(stuck_costs)} per chunk "
          f"(a direct write would block for ever)")
    ratio = statistics.median(offer_costs) / statistics.median(direct_costs)
    print(f"cost on the receiving thread, feeder / direct write: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
