"""Start-up cost of the CLI: what `import orchestrator.cli` and `piorch record --help` import, and their time.

Measures one or more installed environments, so dependency versions can be compared side by side (the typer
range in pyproject.toml was chosen this way): make a venv per version, install piorch and that version into
it, and pass the venvs. Runs go round-robin over the venvs (A B C A B C ...), so a busy moment of the machine
costs every venv alike. Per venv: medians over --runs of the import times (python -X importtime), and of
`piorch record --help` its CPU time (user + system, barely moved by other load) and wall time (with the
fastest run, the one least disturbed).
Usage: python benchmarks/import_cost.py [--runs 15] [VENV ...]   (default: .venv)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# One --help takes well under a second; the deadline only catches a hung interpreter.
RUN_TIMEOUT_S = 30
# "import time: self [us] | cumulative | imported package" lines of -X importtime.
IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")
VERSIONS_SCRIPT = """
from importlib import metadata
for name in ("typer", "click", "rich", "pydantic"):
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "-")
"""


@dataclass
class Samples:
    """Every run of one venv, in milliseconds."""

    cli_import: list[float] = field(default_factory=list)  # cumulative import of orchestrator.cli
    typer_import: list[float] = field(default_factory=list)  # of it, typer
    help_imports: list[float] = field(default_factory=list)  # every import made by `record --help`
    help_pydantic: list[float] = field(default_factory=list)  # of them, pydantic (0: not imported)
    help_cpu: list[float] = field(default_factory=list)  # `piorch record --help`: user + system CPU
    help_wall: list[float] = field(default_factory=list)  # and wall time


def parse_importtime(stderr: str) -> dict[str, int]:
    """Cumulative microseconds per module (its first import), and under "*" the sum over outermost imports."""
    cumulative: dict[str, int] = {"*": 0}
    for line in stderr.splitlines():
        match = IMPORTTIME_LINE.match(line)
        if match:
            cumulative.setdefault(match.group(4), int(match.group(2)))
            if len(match.group(3)) == 1:  # one space: imported by the script itself, not by another module
                cumulative["*"] += int(match.group(2))
    return cumulative


def clean_env() -> dict[str, str]:
    # No PYTHONPATH: the venv's installed piorch is measured, not whatever the caller had on its path.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["COLUMNS"] = "120"
    return env


def importtime(argv: list[str], env: dict[str, str]) -> dict[str, int]:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=RUN_TIMEOUT_S)
    return parse_importtime(result.stderr)


def cpu_and_wall_ms(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """The child's own user + system CPU time (from wait4) and the wall time, in ms."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = start + RUN_TIMEOUT_S
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            raise TimeoutError(f"{argv} ran over {RUN_TIMEOUT_S} s")
        time.sleep(0.001)
    wall = (time.perf_counter() - start) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return (usage.ru_utime + usage.ru_stime) * 1000, wall


def measure_once(venv: Path, samples: Samples, env: dict[str, str]) -> None:
    python, piorch = str(venv / "bin" / "python"), str(venv / "bin" / "piorch")
    cli = importtime([python, "-X", "importtime", "-c", "import orchestrator.cli"], env)
    samples.cli_import.append(cli.get("orchestrator.cli", 0) / 1000)
    samples.typer_import.append(cli.get("typer", 0) / 1000)
    helps = importtime([python, "-X", "importtime", "-m", "orchestrator", "record", "--help"], env)
    samples.help_imports.append(helps["*"] / 1000)
    samples.help_pydantic.append(helps.get("pydantic", 0) / 1000)
    cpu, wall = cpu_and_wall_ms([piorch, "record", "--help"], env)
    samples.help_cpu.append(cpu)
    samples.help_wall.append(wall)


def versions_of(venv: Path, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", VERSIONS_SCRIPT], env=env, capture_output=True,
                         text=True, check=True, timeout=RUN_TIMEOUT_S).stdout
    return dict(line.split() for line in out.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venvs", nargs="*", type=Path, default=[ROOT / ".venv"])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    env = clean_env()
    samples = {venv: Samples() for venv in args.venvs}
    for _ in range(args.runs):
        for venv in args.venvs:
            measure_once(venv, samples[venv], env)
    med = statistics.median
    print(f"{'':26} | {'import orchestrator.cli':>19} | {'imports of record --help':>24} | "
          f"{'piorch record --help':>27}")
    print(f"{'typer':>8} {'click':>7} {'pydantic':>9} | {'all':>9} {'typer':>9} | {'all':>12} {'pydantic':>11} | "
          f"{'CPU':>7} {'wall (fastest)':>19}   ms, median of {args.runs}")
    for venv in args.venvs:
        v, s = versions_of(venv, env), samples[venv]
        print(f"{v['typer']:>8} {v['click']:>7} {v['pydantic']:>9} | {med(s.cli_import):9.1f} "
              f"{med(s.typer_import):9.1f} | {med(s.help_imports):12.1f} {med(s.help_pydantic):11.1f} | "
              f"{med(s.help_cpu):7.1f} {med(s.help_wall):12.1f} ({min(s.help_wall):4.0f})")


if __name__ == "__main__":
    main()
