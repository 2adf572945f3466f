"""Receiver benchmark: `piorch listen --once` against plain netcat, the same bytes from the same sender.

Run: `.venv/bin/python benchmarks/receiver.py [--size-mb 1024] [--repeat 3] [--json]`.

One random source file is made once and stays in the page cache; for every run a separate Python process
sends it with socket.sendfile over 127.0.0.1, so the sender is identical and cheap for every receiver. The
receivers run interleaved (A B C D A B C D ...) so machine noise hits them alike, and every received file is
hashed and compared with the source. Targets are reported, not asserted: the exit status is 0 whenever the
measurements themselves succeeded, 1 when one failed (bad hash, timeout, a receiver that exited non-zero).

Hidden modes used by the benchmark itself: `_send PORT FILE` (the sender) and `_sink PORT BYTES` (a Python
receiver that discards the data: the ceiling of this loopback + sender, no disk involved).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

MIB = 1 << 20
GIB = 1 << 30
HOST = "127.0.0.1"
SCRIPT = str(Path(__file__).resolve())
# Waits, each with its reason: a receiver that cannot listen in 30 s is broken, not slow (piorch imports
# take ~0.3 s); a transfer slower than 10 MB/s on loopback means something hangs.
LISTEN_DEADLINE_S = 30.0
CONNECT_DEADLINE_S = 10.0
SLOWEST_MB_S = 10.0
KILL_GRACE_S = 5.0
TARGET_BUILTIN_RATIO = 3.0
TARGET_NC_BACKEND_RATIO = 0.9
TARGET_HELP_EXTRA_S = 0.15


class MeasurementFailed(Exception):
    """A run could not be measured (wrong bytes, timeout, a receiver error): the benchmark fails."""


# --- the two helper processes -----------------------------------------------------------------------------
def sender_main(port: int, path: str) -> int:
    """Poll-connect, sendfile the whole file, half-close, wait for the receiver to close; print timestamps."""
    deadline = time.monotonic() + CONNECT_DEADLINE_S
    while True:
        try:
            sock = socket.create_connection((HOST, port), timeout=1.0)
            break
        except (ConnectionRefusedError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    connected = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process of this machine
    # A per-operation timeout: sendfile waits in select() with it, so a stalled receiver cannot hang us.
    sock.settimeout(60.0)
    with sock, open(path, "rb") as source:
        sent_bytes = sock.sendfile(source)
        sock.shutdown(socket.SHUT_WR)
        # The receiver closes its side once it has read everything: that is "data accepted".
        try:
            while sock.recv(MIB):
                pass
        except ConnectionResetError:
            pass  # closed with unread data; the hash check on the received file will tell
        closed = time.monotonic()
    print(json.dumps({"connected": connected, "closed": closed, "bytes": sent_bytes}))
    return 0


def sink_main(port: int, expected: int) -> int:
    """Accept one connection, read it into a reused buffer, write nothing; exit 1 on a wrong byte count."""
    with socket.create_server((HOST, port)) as listener:
        listener.settimeout(LISTEN_DEADLINE_S)
        conn, _ = listener.accept()
    buffer = bytearray(MIB)
    total = 0
    with conn:
        conn.settimeout(60.0)
        while count := conn.recv_into(buffer):
            total += count
    return 0 if total == expected else 1


# --- receivers --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReceiverSpec:
    key: str
    label: str
    # "nc": the plain netcat output lands on its stdout; "piorch": OUT/<uuid>.h264 + manifest; "sink": none.
    kind: str
    argv_template: tuple[str, ...]
    # piorch's nc backend listens in its nc child; its own short port check must not count as "listening".
    listener_in_child: bool = False


def build_receiver_argv(spec: ReceiverSpec, port: int, out_dir: Path, size: int) -> list[str]:
    """Pure: the command line of one run (whole-word placeholders, so no path is ever parsed as a template)."""
    values = {"{port}": str(port), "{out}": str(out_dir), "{host}": HOST, "{size}": str(size)}
    return [values.get(part, part) for part in spec.argv_template]


def nc_flavour(binary: str) -> str:
    from orchestrator.netcat import parse_nc_flavour

    result = subprocess.run([binary, "-h"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=5)
    return parse_nc_flavour(result.stdout + result.stderr).value


def find_receivers() -> tuple[list[ReceiverSpec], str]:
    """Every receiver this machine can run, and the flavour of `nc` on PATH (the one piorch's backend uses)."""
    piorch = Path(sys.executable).with_name("piorch")
    if not piorch.exists():
        raise MeasurementFailed(f"{piorch} not found: run from the project's venv (make bench)")
    path_nc = shutil.which("nc")
    path_flavour = nc_flavour(path_nc) if path_nc else "none"
    specs: list[ReceiverSpec] = []
    for flavour, name, argv in (
        ("openbsd", "nc.openbsd", ("{nc}", "-l", "{host}", "{port}")),
        ("traditional", "nc.traditional", ("{nc}", "-l", "-p", "{port}", "-s", "{host}")),
    ):
        binary = shutil.which(name) or (path_nc if path_flavour == flavour else None)
        if binary:
            template = tuple(binary if part == "{nc}" else part for part in argv)
            specs.append(ReceiverSpec(f"nc-{flavour}", f"plain {name} -l > file", "nc", template))
    for backend in ("builtin", "nc"):
        specs.append(ReceiverSpec(
            f"piorch-{backend}", f"piorch listen --backend {backend}", "piorch",
            (str(piorch), "listen", "--once", "--port", "{port}", "--out", "{out}", "--backend", backend,
             "--bind", "{host}"), listener_in_child=backend == "nc"))
    specs.append(ReceiverSpec("sink", "ref: Python recv, discard", "sink",
                              (sys.executable, SCRIPT, "_sink", "{port}", "{size}")))
    return specs, path_flavour


# --- processes --------------------------------------------------------------------------------------------
class Child:
    """A process in its own session, reaped by a thread that notes the exit time and the rusage.

    The thread waits with WNOWAIT first, so until it reaps the pid, killpg(pid) cannot hit a reused id.
    """

    def __init__(self, argv: list[str], stdout: IO[bytes], stderr: IO[bytes], env: dict[str, str]) -> None:
        self._popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env,
                                       start_new_session=True)
        self.pid = self._popen.pid
        self.exited_at: float | None = None
        self.exit_code: int | None = None
        self.cpu_s = 0.0
        self._lock = threading.Lock()
        self._reaped = False
        self._thread = threading.Thread(target=self._reap, daemon=True, name=f"reap-{self.pid}")
        self._thread.start()

    def _reap(self) -> None:
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        self.exited_at = time.monotonic()
        with self._lock:
            _, status, usage = os.wait4(self.pid, 0)
            self._reaped = True
        self._popen.returncode = self.exit_code = os.waitstatus_to_exitcode(status)
        # wait4's usage covers the process and every child it reaped itself (nc under piorch's nc backend).
        self.cpu_s = usage.ru_utime + usage.ru_stime

    def wait(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def kill(self) -> None:
        with self._lock:
            if not self._reaped:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # the group is already gone
        self.wait(KILL_GRACE_S)


def process_cpu_s(pid: int) -> float:
    """user+sys of a live process and its reaped children so far, from /proc (10 ms ticks)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def listening_pids(port: int) -> set[int]:
    """The processes holding a socket in LISTEN state on `port` (found through /proc: no connection made)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                columns = line.split()
                if columns[3] == "0A" and int(columns[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{columns[9]}]")
    owners: set[int] = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd") if inodes else ():
        try:
            if any(os.readlink(fd) in inodes for fd in fd_dir.iterdir()):
                owners.add(int(fd_dir.parent.name))
        except OSError:
            continue  # the process exited, or an fd closed, while we looked
    return owners


def wait_listening(child: Child, spec: ReceiverSpec, port: int, log: Path) -> None:
    """Return once the receiver (or, for piorch's nc backend, its nc) listens; fail if it exits first.

    A plain poll-connect is not enough: piorch's nc backend binds the port for a moment to check it is free,
    and a connection accepted by that check socket would be reset.
    """
    deadline = time.monotonic() + LISTEN_DEADLINE_S
    while time.monotonic() < deadline:
        if child.exited_at is not None:
            raise MeasurementFailed(f"{spec.label} exited before listening: {tail(log)}")
        # The port was free a moment ago, so whoever listens on it now is this receiver (or its nc).
        if listening_pids(port) - ({child.pid} if spec.listener_in_child else set()):
            return
        time.sleep(0.005)
    raise MeasurementFailed(f"{spec.label} did not listen on port {port} within {LISTEN_DEADLINE_S:.0f} s")


def tail(path: Path) -> str:
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    return text.splitlines()[-1] if text else "(no output)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def make_source(path: Path, size: int) -> str:
    """Random bytes (nothing compresses or repeats), fsynced so they stay in the page cache as clean pages."""
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for offset in range(0, size, MIB):
            chunk = os.urandom(min(MIB, size - offset))
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


# --- one run ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    key: str
    repeat: int
    bytes: int
    data_s: float  # connect -> the receiver closed the connection (it had read every byte)
    exit_s: float  # connect -> the receiver process exited (piorch: after fsync, hash tail, manifest)
    cpu_s: float  # user+sys during the transfer (startup CPU subtracted)
    startup_cpu_s: float
    sender_cpu_s: float


def verify_output(spec: ReceiverSpec, out_dir: Path, size: int, source_sha: str) -> None:
    if spec.kind == "sink":
        return  # the sink itself exits 1 on a wrong byte count
    if spec.kind == "nc":
        received = out_dir / "received.bin"
    else:
        files = sorted(out_dir.iterdir())
        if len(files) != 2 or [path.suffix for path in files] != [".h264", ".json"]:
            raise MeasurementFailed(f"{spec.label}: expected <uuid>.h264 and <uuid>.json, found {files}")
        received = files[0]
        manifest = json.loads(received.with_suffix(".json").read_text())
        if manifest["bytes"] != size or manifest["sha256"] != source_sha or manifest["status"] != "complete":
            raise MeasurementFailed(f"{spec.label}: manifest disagrees with the source: {manifest}")
    actual_size = received.stat().st_size
    if actual_size != size:
        raise MeasurementFailed(f"{spec.label}: received {actual_size} bytes, sent {size}")
    if sha256_file(received) != source_sha:
        raise MeasurementFailed(f"{spec.label}: received file's SHA-256 differs from the source")


def measure_once(spec: ReceiverSpec, repeat: int, source: Path, source_sha: str, size: int, work: Path,
                 env: dict[str, str], children: list[Child]) -> Run:
    port = free_port()
    run_dir = work / f"{spec.key}-{repeat}"
    out_dir = run_dir / "out"
    out_dir.mkdir(parents=True)
    argv = build_receiver_argv(spec, port, out_dir, size)
    log = run_dir / "receiver.log"
    # Dirty pages of earlier runs must not be written back during this one.
    os.sync()
    stdout_path = out_dir / "received.bin" if spec.kind == "nc" else run_dir / "receiver.out"
    with open(stdout_path, "wb") as stdout, open(log, "wb") as stderr:
        receiver = Child(argv, stdout, stderr, env)
    children.append(receiver)
    wait_listening(receiver, spec, port, log)
    startup_cpu = process_cpu_s(receiver.pid)
    with open(run_dir / "sender.json", "wb") as stdout, open(run_dir / "sender.log", "wb") as stderr:
        sender = Child([sys.executable, SCRIPT, "_send", str(port), str(source)], stdout, stderr, env)
    children.append(sender)
    deadline_s = CONNECT_DEADLINE_S + 30 + size / (SLOWEST_MB_S * MIB)
    if not receiver.wait(deadline_s) or not sender.wait(CONNECT_DEADLINE_S + 60):
        raise MeasurementFailed(f"{spec.label}: no exit within {deadline_s:.0f} s (port {port})")
    if sender.exit_code != 0:
        raise MeasurementFailed(f"sender to {spec.label} failed: {tail(run_dir / 'sender.log')}")
    if receiver.exit_code != 0:
        raise MeasurementFailed(f"{spec.label} exited with {receiver.exit_code}: {tail(log)}")
    stamps = json.loads((run_dir / "sender.json").read_text())
    if stamps["bytes"] != size:
        raise MeasurementFailed(f"sender to {spec.label} sent {stamps['bytes']} of {size} bytes")
    verify_output(spec, out_dir, size, source_sha)
    assert receiver.exited_at is not None  # set before wait() returned True
    run = Run(spec.key, repeat, size, stamps["closed"] - stamps["connected"], receiver.exited_at - stamps["connected"],
              receiver.cpu_s - startup_cpu, startup_cpu, sender.cpu_s)
    shutil.rmtree(run_dir)
    return run


# --- `piorch --help` --------------------------------------------------------------------------------------
def time_command(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    try:
        # 30 s: either command takes well under a second; longer means it hangs.
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                       check=True, timeout=30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise MeasurementFailed(f"{' '.join(argv)} failed: {exc}") from None
    return time.perf_counter() - started


def measure_help(runs: int, env: dict[str, str]) -> dict[str, Any]:
    piorch = [str(Path(sys.executable).with_name("piorch")), "--help"]
    python = [sys.executable, "-c", "pass"]
    time_command(piorch, env), time_command(python, env)  # warm-up, not counted: a cold .pyc cache
    piorch_s: list[float] = []
    python_s: list[float] = []
    for _ in range(runs):
        piorch_s.append(time_command(piorch, env))
        python_s.append(time_command(python, env))
    extra = statistics.median(piorch_s) - statistics.median(python_s)
    return {"runs": runs, "piorch_help_s": statistics.median(piorch_s), "python_pass_s": statistics.median(python_s),
            "extra_s": extra, "target_extra_s": TARGET_HELP_EXTRA_S, "pass": extra < TARGET_HELP_EXTRA_S,
            "piorch_help_all_s": piorch_s, "python_pass_all_s": python_s}


# --- summary and output -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    key: str
    label: str
    mb_s: float
    data_mb_s: float
    exit_s: float
    data_s: float
    cpu_s_per_gb: float
    startup_cpu_s: float
    ratio: float | None  # MB/s (to exit) over the baseline's
    data_ratio: float | None  # the same, to "data accepted"
    target: str
    passed: bool | None
    runs: list[dict[str, Any]] = field(default_factory=list)


def summarise(specs: list[ReceiverSpec], runs: list[Run], path_flavour: str) -> list[Row]:
    by_key = {spec.key: [run for run in runs if run.key == spec.key] for spec in specs}
    baselines = {"piorch-builtin": ("nc-openbsd", TARGET_BUILTIN_RATIO),
                 "piorch-nc": (f"nc-{path_flavour}", TARGET_NC_BACKEND_RATIO)}
    rows: list[Row] = []
    for spec in specs:
        mine = by_key[spec.key]
        mb = mine[0].bytes / MIB
        base, target = baselines.get(spec.key, ("", 0.0))
        theirs = by_key.get(base)
        ratio = data_ratio = None
        if theirs:
            # Paired by round: the two runs of one round saw the same machine state.
            ratio = statistics.median(other.exit_s / run.exit_s for run, other in zip(mine, theirs, strict=True))
            data_ratio = statistics.median(other.data_s / run.data_s for run, other in zip(mine, theirs, strict=True))
        rows.append(Row(
            spec.key, spec.label,
            mb_s=statistics.median(mb / run.exit_s for run in mine),
            data_mb_s=statistics.median(mb / run.data_s for run in mine),
            exit_s=statistics.median(run.exit_s for run in mine),
            data_s=statistics.median(run.data_s for run in mine),
            cpu_s_per_gb=statistics.median(run.cpu_s / (run.bytes / GIB) for run in mine),
            startup_cpu_s=statistics.median(run.startup_cpu_s for run in mine),
            ratio=ratio, data_ratio=data_ratio, target=f">= {target:g}x {base}" if theirs else "",
            passed=None if ratio is None else ratio >= target, runs=[asdict(run) for run in mine]))
    return rows


def render_table(rows: list[Row], help_result: dict[str, Any], size: int, repeat: int) -> str:
    lines = [f"receiving {size / MIB:.0f} MB over 127.0.0.1 from one sendfile() sender; median of {repeat} "
             "interleaved runs; MB = 2^20 bytes, GB = 2^30 bytes",
             f"{'receiver':<32} {'MB/s':>6} {'ratio':>6} {'exit s':>6} {'data s':>6} {'data MB/s':>9} "
             f"{'data ratio':>10} {'CPU s/GB':>8} {'start CPU':>9}  {'target':<21} result"]
    for row in rows:
        ratio, data_ratio = (f"{value:.2f}x" if value is not None else "-" for value in (row.ratio, row.data_ratio))
        result = "-" if row.passed is None else ("PASS" if row.passed else "FAIL")
        lines.append(f"{row.label:<32} {row.mb_s:>6.0f} {ratio:>6} {row.exit_s:>6.2f} {row.data_s:>6.2f} "
                     f"{row.data_mb_s:>9.0f} {data_ratio:>10} {row.cpu_s_per_gb:>8.2f} {row.startup_cpu_s:>9.2f}  "
                     f"{row.target or '-':<21} {result}")
    lines += [
        "MB/s, exit s: connect -> receiver process exit; for piorch that includes its finalisation (fsync of the",
        "  whole file, SHA-256 tail, rename, manifest) and exit; plain nc neither fsyncs nor hashes.",
        "data s, data MB/s: connect -> the receiver closed the connection (every byte read from the socket).",
        "ratio: MB/s over the target's plain nc (nc backend: the flavour of `nc` on PATH), median of per-round",
        "  ratios; data ratio: the same to data accepted. Targets apply to ratio (to exit).",
        "CPU s/GB: user+sys of the receiver and the children it reaped (nc under the nc backend), listening to",
        "  exit; start CPU (Python start-up and imports, before listening) is not included. ref: no disk, no hash.",
        "",
        f"piorch --help: {help_result['piorch_help_s']:.3f} s, python -c pass: {help_result['python_pass_s']:.3f} s "
        f"(medians of {help_result['runs']}, alternating) -> +{help_result['extra_s']:.3f} s, "
        f"target < +{TARGET_HELP_EXTRA_S} s: {'PASS' if help_result['pass'] else 'FAIL'}",
    ]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="bytes to send, in MB of 2^20 [1024]")
    parser.add_argument("--repeat", type=int, default=3, help="runs per receiver; the median is reported [3]")
    parser.add_argument("--help-runs", type=int, default=10, help="timed runs of each --help command [10]")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--dir", type=Path, default=None, help="where the temp folder goes [system temp]")
    args = parser.parse_args(argv)
    if args.size_mb < 1 or args.repeat < 1 or args.help_runs < 1:
        parser.error("--size-mb, --repeat and --help-runs must be at least 1")
    return args


def run_benchmark(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    size = args.size_mb * MIB
    # No user config file or PIORCH_* variable may change what piorch does here.
    env = {name: value for name, value in os.environ.items() if not name.startswith("PIORCH_")}
    children: list[Child] = []
    work = Path(tempfile.mkdtemp(prefix="piorch-bench-", dir=args.dir))
    env["PIORCH_CONFIG"] = str(work / "no-config.toml")
    try:
        specs, path_flavour = find_receivers()
        progress(f"making a {args.size_mb} MB random source in {work}")
        source = work / "source.bin"
        source_sha = make_source(source, size)
        runs: list[Run] = []
        for repeat in range(args.repeat):
            for spec in specs:
                run = measure_once(spec, repeat, source, source_sha, size, work, env, children)
                progress(f"run {repeat + 1}/{args.repeat} {spec.label}: {size / MIB / run.exit_s:.0f} MB/s "
                         f"(exit {run.exit_s:.2f} s, data {run.data_s:.2f} s, CPU {run.cpu_s:.2f} s)")
                runs.append(run)
        progress(f"timing piorch --help against python -c pass, {args.help_runs} runs each")
        return summarise(specs, runs, path_flavour), measure_help(args.help_runs, env)
    finally:
        for child in children:
            child.kill()
        shutil.rmtree(work, ignore_errors=True)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_send"]:
        return sender_main(int(argv[1]), argv[2])
    if argv[:1] == ["_sink"]:
        return sink_main(int(argv[1]), int(argv[2]))
    args = parse_args(argv)
    try:
        rows, help_result = run_benchmark(args)
    except MeasurementFailed as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"size_bytes": args.size_mb * MIB, "repeat": args.repeat, "units": "MB = 2^20, GB = 2^30",
                          "receivers": [asdict(row) for row in rows], "help": help_result}, indent=2))
    else:
        print(render_table(rows, help_result, args.size_mb * MIB, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
