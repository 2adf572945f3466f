"""Startup benchmark: time to the first byte of `piorch record` against the recipe typed by hand.

Run: `.venv/bin/python benchmarks/startup.py [--rounds 7] [--help-rounds 10] [--pis 8] [--loopback] [--json]`
(root for network namespaces; 3-4 minutes with the defaults on a busy 2-core machine). Issue 14's targets:

- `piorch record` reaches its first byte in at most 1.3x the time of the by-hand OpenSSH recipe;
- `piorch --help` and `piorch record --help` at most 150 ms over `python -c pass`;
- starting 8 Pis adds at most 20% over starting 1.

The fake Pi is the project's own OpenSSH sshd fixture with the camera simulator as `raspivid`, behind a veth
pair shaped to 100 Mbit/s in network namespaces where the machine allows (see startup_lab.py; where not,
on loopback, and the output says which). As a user has them: one user key authorized on every Pi, and
piorch run with USER and LOGNAME set, as a login sets them. Modes, interleaved round after round
(A B F T AM BM A8 B8 A B ...):

- A: by hand. A waiting `nc -l LAPTOP PORT > file`, then, timed from its start,
  `ssh -F CONFIG pi1 'raspivid -o - -t 3000 ... | nc -N LAPTOP PORT'` (the OpenSSH client).
- B: `piorch record --pi pi1 --seconds 3 --out DIR --container h264` (same camera options), timed from
  the process start.
- F: B on a Pi piorch has not seen yet: an empty memory (XDG_CACHE_HOME) for each run, so it probes the
  Pi before starting the camera. B, T and B8 share one memory, filled by an untimed run first: from
  the second run on, piorch starts the camera from what it remembers (orchestrator/pi/probe_memory.py).
  Each C* keeps its own (another version may stamp the Pi another way: sharing, each would find the other's
  stamp stale and probe again at every run).
- AM / BM: A and B through an OpenSSH ControlMaster already open to pi1 (a user's `ControlMaster auto` with
  ControlPersist): `ssh -S` by hand, and piorch given a config whose ControlPath names it (pi/mux.py).
- T: B again under startup_trace.py, which timestamps every step: the breakdown table. Its own first byte
  is shown too, so the cost of tracing is seen.
- A8 / B8: the same for 8 Pis at once (8 sshds; 8 ssh + 8 nc -l by hand, one `piorch record --pi pi1
  ... --pi pi8`), timed to the first byte of the LAST Pi. A8 is the control: the 8 simulators, sshd
  sessions and shells share this machine's cores, which 8 real Pis would not. So piorch's own CPU time is
  read too when the last first byte is seen (B and B8): its cost for each further Pi, and from it B8/B
  where the Pis would not share the laptop's cores (startup_report.fleet_cpu), with a 95% interval over the
  run's own rounds (a bootstrap): whether the target lies inside it.
- C1, C2, ... (with --other-piorch PATH, repeatable): B run by another installation's piorch, e.g. a venv
  with other dependency versions, so their effect is measured in the same run.

References, interleaved too: `python -c pass` against `import paramiko` (with and without its `invoke`
import), `ssh pi1 true` over a new connection (OpenSSH's default post-quantum key exchange, and
curve25519 like paramiko's) and through a ControlMaster, and the sshd's banner delay. Then `-X importtime`
of `piorch record --help` and of `import paramiko`.

"First byte" is the same for every mode: this process polls the file that receives the stream (nc's output
file; piorch's `<uuid>.h264.tmp`) every millisecond and notes when its size is first above zero. Medians
over the rounds; the ratios are of medians, and the median of each round's own ratio is printed beside.
Every run is checked: exit status 0 and the received file as long as the simulator says it sent. piorch
runs from an installed copy of this checkout (install_copy); with --editable, from the checkout's own venv,
its bytecode compiled first as `pip install` does (compile_package). The tables are startup_report.py's.
Targets are printed as PASS/FAIL but not asserted (a shared machine is
noisy): exit 0 when everything was measured, 1 when a run failed or a deadline passed, 130 on Ctrl+C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import site
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from startup_lab import FakePi, Lab, LabError, NetnsError, open_lab
from startup_report import Sample, report

HERE = Path(__file__).resolve().parent
TRACER = HERE / "startup_trace.py"
SECONDS = 3
BITRATE, WIDTH, HEIGHT, FPS = 4_000_000, 640, 360, 25
CAMERA = f"raspivid -o - -t {SECONDS * 1000} -b {BITRATE} -w {WIDTH} -h {HEIGHT} -fps {FPS} -n -ih"
POLL_S = 0.001
# A run is 3 s of camera plus start and finish; 60 s means something is stuck. nc listens within ms.
RUN_DEADLINE_S = 60.0
LISTEN_DEADLINE_S = 10.0
KILL_GRACE_S = 5.0


class MeasurementFailed(Exception):
    """A run failed or passed its deadline: the benchmark fails."""


# --- processes --------------------------------------------------------------------------------------------
class Proc:
    """A child in its own session (so a failure can kill it whole), output to a log file."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 stdout: Path | None = None) -> None:
        self.argv, self.log = argv, log
        with log.open("ab") as err, (stdout.open("wb") if stdout else log.open("ab")) as out:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                          start_new_session=True)

    def failed(self) -> bool:
        code = self.popen.poll()
        return code is not None and code != 0

    def wait(self, deadline: float) -> int:
        try:
            return self.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise MeasurementFailed(f"{shlex.join(self.argv)} did not finish in time") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended meanwhile
            self.popen.wait(KILL_GRACE_S)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:]


def cpu_time(pid: int) -> float | None:
    """CPU seconds of `pid` so far, every thread's, those that have ended included: Linux's CPU-time clock of
    another process (clock_gettime on the clock id `(~pid << 3) | 2`, what clock_getcpuclockid(3) returns),
    in nanoseconds. The threads a start ends on its way (the connecting ones) count: summing
    /proc/PID/task/*/schedstat, as this did before, left them out (about 2 ms a Pi here), and
    /proc/PID/stat counts in 10 ms ticks. None where the system has no such clock."""
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9
    except (OSError, OverflowError):
        return None


def watch_first_bytes(candidates: Callable[[], Iterable[tuple[str, Path]]], expected: int, procs: list[Proc],
                      deadline: float) -> dict[str, float]:
    """Poll until `expected` keys each have a non-empty file; returns key -> monotonic time it was seen."""
    seen: dict[str, float] = {}
    while len(seen) < expected:
        for key, path in candidates():
            if key not in seen:
                try:
                    if path.stat().st_size > 0:
                        seen[key] = time.monotonic()
                except FileNotFoundError:
                    pass  # renamed or not created yet: the next poll sees it
        if len(seen) >= expected:
            break
        for proc in procs:
            if proc.failed():
                raise MeasurementFailed(f"{shlex.join(proc.argv)} exited {proc.popen.returncode}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise MeasurementFailed(f"no first byte within {RUN_DEADLINE_S:.0f} s ({len(seen)} of {expected})")
        time.sleep(POLL_S)
    return seen


def sent_bytes(pi: FakePi) -> int:
    """What the simulator says the kernel accepted from it in its latest run."""
    lines = (pi.log_dir / "runs.jsonl").read_text().splitlines()
    return int(json.loads(lines[-1])["bytes"])


def is_listening(port: int) -> bool:
    """Some socket listens on `port` (from /proc: no test connection to use up nc's only accept)."""
    with open("/proc/net/tcp") as table:
        next(table)
        return any(cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port
                   for cols in (line.split() for line in table))


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


# --- the modes ------------------------------------------------------------------------------------------
def run_by_hand(lab: Lab, pis: list[FakePi], folder: Path, master: Path | None = None) -> dict[str, float]:
    """`nc -l` waiting per Pi, then the ssh commands started back to back (through the ControlMaster
    `master`, when given); seconds to each first byte."""
    folder.mkdir(parents=True)
    nc = shutil.which("nc.openbsd") or "nc"
    procs: list[Proc] = []
    try:
        files, commands = {}, []
        for pi in pis:
            port = free_port(lab.laptop_ip)
            files[pi.alias] = folder / f"{pi.alias}.h264"
            procs.append(Proc([nc, "-l", lab.laptop_ip, str(port)], folder / f"nc-{pi.alias}.log",
                              stdout=files[pi.alias]))
            commands.append((pi, port))
        deadline = time.monotonic() + LISTEN_DEADLINE_S
        while not all(is_listening(port) for _, port in commands):
            if time.monotonic() > deadline:
                raise MeasurementFailed("nc -l did not listen in time")
            time.sleep(0.005)
        started = time.monotonic()
        through = ["-o", "ControlMaster=no", "-S", str(master)] if master is not None else []
        for pi, port in commands:
            procs.append(Proc(["ssh", "-F", str(lab.ssh_config), *through, pi.alias,
                               f"{CAMERA} | nc -N {lab.laptop_ip} {port}"], folder / f"ssh-{pi.alias}.log"))
        seen = watch_first_bytes(lambda: files.items(), len(pis), procs, started + RUN_DEADLINE_S)
        for proc in procs:
            if proc.wait(started + RUN_DEADLINE_S) != 0:
                raise MeasurementFailed(f"{shlex.join(proc.argv)} exited {proc.popen.returncode}:\n{proc.tail()}")
        for pi in pis:
            if files[pi.alias].stat().st_size != sent_bytes(pi):
                raise MeasurementFailed(f"by hand, {pi.alias}: {files[pi.alias].stat().st_size} bytes received, "
                                        f"{sent_bytes(pi)} sent")
        return {alias: at - started for alias, at in seen.items()}
    finally:
        for proc in procs:
            proc.kill()


def piorch_env(lab: Lab, scratch: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PIORCH_")}
    # As a login sets them (a terminal, an ssh session, sudo): without them paramiko's ssh_config lookup asks
    # /etc/passwd for the user's name ~16 times a Pi (getpass.getuser, once a config value it expands).
    with contextlib.suppress(KeyError):  # a user id with no passwd entry (some containers): left as it is
        user = pwd.getpwuid(os.geteuid()).pw_name
        env.setdefault("USER", user)
        env.setdefault("LOGNAME", user)
    # Never the developer's own config: no user file, the lab's ssh_config and known_hosts.
    env["PIORCH_CONFIG"] = str(scratch / "no-user-config.toml")
    env["PIORCH_SSH_CONFIG"] = str(lab.ssh_config)
    return env


@dataclass(frozen=True)
class Install:
    """The piorch being measured: its venv's python (the baseline of the --help timings, the tracer's
    interpreter) and its console script."""

    python: str
    piorch: str


def checkout_install() -> Install:
    """This checkout's own install (`make`: editable, its venv's .pth finder runs at every start), its
    bytecode compiled first (compile_package)."""
    compile_package()
    beside = Path(sys.executable).parent / "piorch"
    found = str(beside) if beside.exists() else shutil.which("piorch")
    if found is None:
        raise SystemExit("piorch is not installed: run `make bench` (or pip install -e .)")
    return Install(sys.executable, found)


def install_copy(scratch: Path) -> Install:
    """piorch as `pip install .` leaves it for a user, without building a wheel or downloading: a new venv,
    this checkout's orchestrator/ copied into its site-packages and compiled, the console script pip writes,
    and this venv's site-packages (the same dependency versions) on its path through a .pth line. An editable
    install's finder (imported by site at every start, 15-30 ms) is what it leaves out."""
    import orchestrator

    venv = scratch / "installed"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    shutil.copytree(Path(orchestrator.__file__).parent, purelib / "orchestrator",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # A directory named in a .pth file joins sys.path; the .pth files inside it (the editable finder's) do not run.
    (purelib / "piorch-dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(python), "-m", "compileall", "-q", str(purelib / "orchestrator")], check=True,
                   stdout=subprocess.DEVNULL)
    script = venv / "bin" / "piorch"
    script.write_text(f"#!{python}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n"
                      "from orchestrator.cli import main\nif __name__ == '__main__':\n"
                      "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                      "    sys.exit(main())\n")
    script.chmod(0o755)
    return Install(str(python), str(script))


def run_piorch(lab: Lab, pis: list[FakePi], folder: Path, scratch: Path, install: Install, traced: bool = False,
               piorch: str | None = None, fresh: bool = False, ssh_config: Path | None = None,
               extra_env: dict[str, str] | None = None, at_first_byte: Callable[[int], None] | None = None,
               ) -> tuple[dict[str, float], dict[str, tuple[float, float]], float | None]:
    """`piorch record` for these Pis; seconds to each Pi's first byte, the tracer's marks (seconds from
    the start, CPU seconds) and piorch's CPU seconds when the last first byte was seen (cpu_time). `fresh`:
    with an empty memory of the Pis (it probes them first). `ssh_config`: another client config than the
    lab's (one that names a ControlMaster). `extra_env`: more of piorch's environment; `at_first_byte`:
    called with piorch's pid when the last first byte is seen (startup_threads.py reads its threads then)."""
    out = folder / "out"
    args = ["record", *[arg for pi in pis for arg in ("--pi", pi.alias)], "--seconds", str(SECONDS),
            "--out", str(out), "--container", "h264", "--port", "0", "--bitrate", str(BITRATE),
            "--width", str(WIDTH), "--height", str(HEIGHT), "--fps", str(FPS)]
    env = piorch_env(lab, scratch)
    memory = scratch / "cache" if piorch is None else scratch / f"cache-{zlib.crc32(piorch.encode()):08x}"
    env["XDG_CACHE_HOME"] = str(folder / "cache" if fresh else memory)
    if ssh_config is not None:
        env["PIORCH_SSH_CONFIG"] = str(ssh_config)
    env.update(extra_env or {})
    marks_file = folder / "marks.txt"
    argv = [install.python, str(TRACER), *args] if traced else [piorch or install.piorch, *args]
    if traced:
        env["PIORCH_TRACE_FILE"] = str(marks_file)
    folder.mkdir(parents=True)
    several = len(pis) > 1

    def candidates() -> Iterable[tuple[str, Path]]:
        # One Pi: OUT/<uuid>.h264.tmp; several: OUT/<pi>/<uuid>.h264.tmp.
        pattern = "*/*.h264.tmp" if several else "*.h264.tmp"
        return ((path.parent.name if several else "pi", path) for path in out.glob(pattern))

    started = time.monotonic()
    proc = Proc(argv, folder / "piorch.log", env=env)
    try:
        seen = watch_first_bytes(candidates, len(pis), [proc], started + RUN_DEADLINE_S)
        cpu = cpu_time(proc.popen.pid)
        if at_first_byte is not None:
            at_first_byte(proc.popen.pid)
        if proc.wait(started + RUN_DEADLINE_S) != 0:
            raise MeasurementFailed(f"piorch exited {proc.popen.returncode}:\n{proc.tail()}")
    finally:
        proc.kill()
    for pi in pis:
        files = list((out / pi.alias if several else out).glob("*.h264"))
        if len(files) != 1 or files[0].stat().st_size != sent_bytes(pi):
            raise MeasurementFailed(f"piorch, {pi.alias}: expected one file of {sent_bytes(pi)} bytes, "
                                    f"found {[(f.name, f.stat().st_size) for f in files]}")
    marks: dict[str, tuple[float, float]] = {}
    if traced and marks_file.exists():
        for line in marks_file.read_text().splitlines():
            name, at, spent = line.split()
            marks.setdefault(name, (float(at) - started, float(spent)))
    return {key: at - started for key, at in seen.items()}, marks, cpu


# --- --help and references ------------------------------------------------------------------------------
def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, timeout=60, check=False)
    elapsed = time.monotonic() - started
    # A failed import in a thread still exits 0: a traceback on stderr fails the run all the same.
    if result.returncode != 0 or b"Traceback" in result.stderr:
        raise MeasurementFailed(f"{shlex.join(argv)} exited {result.returncode}: {result.stderr[-800:].decode()}")
    return elapsed


def interleaved(commands: dict[str, list[str]], rounds: int, env: dict[str, str]) -> dict[str, list[float]]:
    """Each command once untimed (caches warm), then round after round in turn: A B C A B C ..."""
    for argv in commands.values():
        timed(argv, env)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            times[name].append(timed(argv, env))
    return times


def help_commands(install: Install, others: dict[str, str]) -> dict[str, list[str]]:
    """The three commands for this piorch, and for each other one (`C1 ...`) with its own venv's python
    as its baseline (an editable install's .pth finder makes every start of its venv's python slower)."""
    installs = {"": (install.python, install.piorch)}
    installs.update({f"{mode} ": (str(Path(path).parent / "python"), path) for mode, path in others.items()})
    commands = {}
    for prefix, (python, piorch) in installs.items():
        commands.update({f"{prefix}python -c pass": [python, "-c", "pass"],
                         f"{prefix}piorch --help": [piorch, "--help"],
                         f"{prefix}piorch record --help": [piorch, "record", "--help"]})
    return commands


def reference_commands(lab: Lab, master: Path, install: Install) -> dict[str, list[str]]:
    ssh = ["ssh", "-F", str(lab.ssh_config)]
    python = install.python
    return {
        "python -c pass": [python, "-c", "pass"],
        "python: import paramiko": [python, "-c", "import paramiko"],
        # paramiko.config imports invoke only for `Match exec`; marking it absent skips that import.
        "python: import paramiko, invoke blocked": [python, "-c",
                                                    "import sys; sys.modules['invoke'] = None; import paramiko"],
        "python: import orchestrator.cli, then paramiko": [python, "-c", "import orchestrator.cli; import paramiko"],
        "python: the same, paramiko in a thread meanwhile": [
            python, "-c", "import threading; t = threading.Thread(target=__import__, args=('paramiko',)); "
                          "t.start(); import orchestrator.cli; t.join()"],
        "ssh pi1 true (OpenSSH, new connection)": [*ssh, "pi1", "true"],
        # OpenSSH 9.x's default key exchange is post-quantum (sntrup761 or mlkem768); paramiko's is curve25519.
        "ssh pi1 true (new connection, kex curve25519)": [*ssh, "-o", "KexAlgorithms=curve25519-sha256", "pi1",
                                                          "true"],
        "ssh pi1 true (through a ControlMaster)": [*ssh, "-o", "ControlMaster=no", "-S", str(master), "pi1", "true"],
    }


def banner_times(pi: FakePi, rounds: int) -> list[float]:
    """In this process: TCP connect to the Pi's sshd until its SSH banner arrived (sshd's fork and re-exec):
    what a client could overlap with its own imports by connecting first."""
    times = []
    for _ in range(rounds):
        started = time.monotonic()
        with socket.create_connection((pi.host, pi.port), timeout=5) as sock:
            sock.settimeout(5)
            if not sock.recv(64).startswith(b"SSH-2.0"):
                raise MeasurementFailed(f"{pi.alias} did not send an SSH banner")
            times.append(time.monotonic() - started)
    return times


def start_master(lab: Lab, stack: ExitStack, scratch: Path) -> Path:
    """An OpenSSH ControlMaster to pi1, as a user's `ControlMaster auto` + ControlPersist leaves one."""
    socket_path = scratch / "master.sock"
    proc = Proc(["ssh", "-F", str(lab.ssh_config), "-o", "ControlMaster=yes", "-S", str(socket_path), "-N", "pi1"],
                scratch / "master.log")
    stack.callback(proc.kill)
    deadline = time.monotonic() + LISTEN_DEADLINE_S
    while not socket_path.exists():
        if proc.failed() or time.monotonic() > deadline:
            raise MeasurementFailed(f"the ControlMaster did not start:\n{proc.tail()}")
        time.sleep(0.01)
    return socket_path


IMPORT_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)")


def import_costs(env: dict[str, str], runs: int, install: Install) -> dict[str, float]:
    """Cumulative ms of the top-level and second-level imports (-X importtime), median of `runs` runs."""
    python = install.python
    commands = {"piorch record --help": [python, "-X", "importtime", install.piorch, "record", "--help"],
                "import paramiko": [python, "-X", "importtime", "-c", "import paramiko"]}
    found: dict[str, list[float]] = {}
    for _ in range(runs):
        for label, argv in commands.items():
            err = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False).stderr
            for match in IMPORT_LINE.finditer(err):
                depth = len(match.group(2)) // 2
                if depth <= 2:
                    found.setdefault(f"{label}: {match.group(3)}", []).append(int(match.group(1)) / 1000)
    return {name: statistics.median(values) for name, values in found.items()}


def compile_package() -> None:
    """Bytecode for the orchestrator package this piorch imports, as `pip install` writes it: an editable
    checkout run with PYTHONDONTWRITEBYTECODE (set on some machines) would otherwise compile every module at
    every start, 40-60 ms of CPU a user's installed piorch never pays."""
    import orchestrator

    folder = str(Path(orchestrator.__file__).parent)
    subprocess.run([sys.executable, "-m", "compileall", "-q", folder], check=True, stdout=subprocess.DEVNULL)


# --- main -------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the first-byte modes (default 7)")
    parser.add_argument("--help-rounds", type=int, default=10, help="rounds of the --help timings (default 10)")
    parser.add_argument("--pis", type=int, default=8, help="Pis for A8/B8 (default 8; 1 skips them)")
    parser.add_argument("--modes", default="A,B,F,T,AM,BM,A8,B8", help="which of A,B,F,T,AM,BM,A8,B8 (default all)")
    parser.add_argument("--other-piorch", metavar="PATH", action="append", default=[],
                        help="modes C1, C2, ...: `piorch record` run by this piorch (another venv's: other "
                             "dependency versions, a non-editable install; with B8, C1x8... too); may be "
                             "given several times")
    parser.add_argument("--editable", action="store_true",
                        help="measure this checkout's own (editable) install, not an installed copy of it")
    parser.add_argument("--loopback", action="store_true", help="sshd on 127.0.0.1 even where netns would work")
    parser.add_argument("--known-hosts", type=int, metavar="N", default=None,
                        help="one known_hosts for all Pis, hashed as Debian and Ubuntu write it, with N other hosts "
                        "in it (default: each Pi its own one-line file)")
    parser.add_argument("--no-extras", action="store_true", help="skip the references and -X importtime")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = parser.parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]
    if args.pis < 2:
        modes = [mode for mode in modes if mode not in ("A8", "B8")]
    others = {f"C{n}": path for n, path in enumerate(args.other_piorch, 1)}
    at = modes.index("B") + 1 if "B" in modes else 0
    modes[at:at] = list(others)
    if "B8" in modes:  # the other piorch's start of as many Pis too: C1x8 against B8
        at = modes.index("B8") + 1
        modes[at:at] = [f"{mode}x8" for mode in others]
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="piorch-startup-")))
        base_env = piorch_env(Lab("", "", [], scratch / "none"), scratch)
        try:
            install = checkout_install() if args.editable else install_copy(scratch)
            helps = interleaved(help_commands(install, others), args.help_rounds, base_env) if args.help_rounds else {}
            where = "no fake Pi (--rounds 0)"
            samples: list[Sample] = []
            refs: dict[str, list[float]] = {}
            imports: dict[str, float] = {}
            if args.rounds > 0:
                where, samples, refs, imports = measure_on_fake_pis(stack, scratch, args, modes, others, base_env,
                                                                    install)
        except (MeasurementFailed, LabError, NetnsError) as exc:
            print(f"startup benchmark failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        lines, summary = report(where, samples, helps, refs, imports, args.pis, args.other_piorch)
        if args.json:
            print(json.dumps({**summary, "samples": [asdict(s) for s in samples], "help_s": helps,
                              "references_s": refs}, indent=2))
        else:
            print("\n".join(lines))
    return 0


def measure_on_fake_pis(stack: ExitStack, scratch: Path, args: argparse.Namespace, modes: list[str],
                        others: dict[str, str], base_env: dict[str, str], install: Install,
                        ) -> tuple[str, list[Sample], dict[str, list[float]], dict[str, float]]:
    """The lab, the references, then the rounds of first-byte modes."""
    lab = open_lab(stack, scratch, max(args.pis, 1), args.loopback, args.known_hosts)
    refs: dict[str, list[float]] = {}
    imports: dict[str, float] = {}
    master = start_master(lab, stack, scratch) if not args.no_extras or {"AM", "BM"} & set(modes) else None
    # The lab's client config, with pi1's ControlPath naming that master: a user's `ControlMaster auto`.
    mux_config = scratch / "ssh_config_master"
    if master is not None:
        mux_config.write_text(f"Host pi1\n    ControlPath {master}\n\n" + lab.ssh_config.read_text())
    if not args.no_extras and master is not None:
        refs = interleaved(reference_commands(lab, master, install), args.rounds, base_env)
        refs["in-process: TCP connect -> SSH banner from sshd"] = banner_times(lab.pis[0], args.rounds)
        imports = import_costs(base_env, 5, install)
    one, many = lab.pis[:1], lab.pis
    # One untimed run of each kind first: .pyc files, page cache, sshd's first fork, piorch's memory of the Pis.
    run_by_hand(lab, one, scratch / "warm-a")
    run_piorch(lab, one, scratch / "warm-b", scratch, install)
    run_piorch(lab, many, scratch / "warm-b8", scratch, install)
    for mode, path in others.items():
        run_piorch(lab, one, scratch / f"warm-{mode}", scratch, install, piorch=path)
        if f"{mode}x8" in modes:
            run_piorch(lab, many, scratch / f"warm-{mode}x8", scratch, install, piorch=path)
    samples: list[Sample] = []
    for index in range(args.rounds):
        for mode in modes:
            folder = scratch / f"r{index}-{mode}"
            marks: dict[str, tuple[float, float]] = {}
            cpu: float | None = None
            if mode in ("A", "A8", "AM"):
                seen = run_by_hand(lab, many if mode == "A8" else one, folder, master if mode == "AM" else None)
            else:
                seen, marks, cpu = run_piorch(lab, many if mode == "B8" or mode.endswith("x8") else one, folder,
                                              scratch, install, traced=mode == "T",
                                              piorch=others.get(mode.removesuffix("x8")), fresh=mode == "F",
                                              ssh_config=mux_config if mode == "BM" else None)
            samples.append(Sample(mode, index, max(seen.values()), seen,
                                  {name: wall for name, (wall, _) in marks.items()},
                                  {name: spent for name, (_, spent) in marks.items()}, cpu))
            if not args.json:
                print(f"round {index + 1} {mode:<3} {max(seen.values()) * 1000:7.1f} ms", file=sys.stderr)
    where = lab.where
    if args.known_hosts is not None:
        where += f"; one hashed known_hosts for all Pis, with {args.known_hosts} other hosts"
    return where, samples, refs, imports


if __name__ == "__main__":
    raise SystemExit(main())
