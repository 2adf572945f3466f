"""`piorch ARGS` with timestamps at each step of its start, for benchmarks/startup.py's breakdown.

Run: `PIORCH_TRACE_FILE=marks.txt python benchmarks/startup_trace.py record --pi ...` behaves like
`piorch record --pi ...` and appends one line `NAME MONOTONIC_SECONDS CPU_SECONDS` per step to the file.
The parent notes time.monotonic() just before it starts this process (the clock is the machine's, shared
by every process), so each mark is an offset from the command's start. CPU_SECONDS is this process's CPU
time so far (every thread, from the interpreter's start): a step whose wall time is much larger than its
CPU time was waiting (for the Pi, the network), and other work could overlap it; on a busy machine the
CPU column is also the steadier of the two.

Nothing in piorch is changed: functions are wrapped by name at run time. The names are today's
(orchestrator.pi.ssh.open_host, orchestrator.pi.capture.probe_pi, ...); a name that has moved is listed on
stderr as `startup_trace: not found: ...` and its rows stay empty, the run itself goes on untouched.

Why the order of imports is not quite piorch's own: orchestrator.pi.ssh and orchestrator.jobs.record are
imported here before typer parses the command line, so that their functions can be wrapped; piorch imports
them inside `record()`, a few milliseconds later. The cost is the same and shows as its own row. paramiko
is not imported early: it is imported where piorch imports it (target.load_paramiko), and timed there.
"""

from __future__ import annotations

import os
import sys
import time

_FILE = os.environ.get("PIORCH_TRACE_FILE")
_FD = os.open(_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if _FILE else None


def mark(name: str) -> None:
    if _FD is not None:
        # One write per line, O_APPEND: cheap (microseconds) and whole even if the process is killed.
        os.write(_FD, f"{name} {time.monotonic():.6f} {time.process_time():.6f}\n".encode())


mark("interpreter_ready")

import functools  # noqa: E402
import importlib  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

MISSING: list[str] = []


def spanned(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` with NAME_begin / NAME_end marks around every call (the end also on an exception)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(f"{name}_begin")
        try:
            return function(*args, **kwargs)
        finally:
            mark(f"{name}_end")

    return wrapper


def wrap(owner: Any, attribute: str, name: str, make: Callable[[str, Any], Any] = spanned) -> bool:
    original = getattr(owner, attribute, None)
    if original is None:
        MISSING.append(f"{getattr(owner, '__name__', owner)}.{attribute}")
        return False
    setattr(owner, attribute, make(name, original))
    return True


def module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        MISSING.append(name)
        return None


def instrument_paramiko() -> None:
    import paramiko

    wrap(paramiko.Transport, "start_client", "ssh_kex")  # banner exchange, key exchange, NEWKEYS
    wrap(paramiko.SSHClient, "_auth", "ssh_auth")  # key file load, publickey auth


def timed_load_paramiko(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """piorch's first `import paramiko` is target.load_paramiko (invoke left out where it can be): timed as
    it is, then paramiko's steps are wrapped."""

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "paramiko" in sys.modules:
            return original(*args, **kwargs)
        mark(f"{name}_begin")
        loaded = original(*args, **kwargs)
        mark(f"{name}_end")
        instrument_paramiko()
        return loaded

    return wrapper


def counted_starts(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """SshHost.start runs every remote command (the probe too): number the calls."""
    calls = [0]

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return spanned(f"{name}{calls[0]}", original)(*args, **kwargs)

    return wrapper


def receiver_marks(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """make_receiver returns the receiver; its start() (the bind and the accepting thread) is timed too."""

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        receiver = spanned(name, original)(*args, **kwargs)
        wrap(receiver, "start", "receiver_start")
        return receiver

    return wrapper


def instrument() -> None:
    # piorch imports the one command it runs inside main() (cli.register); here, before, to wrap it.
    mark("command_import_begin")
    record = module("orchestrator.commands.record")
    mark("command_import_end")
    if record is not None:
        wrap(record, "build_record_settings", "settings")
    mark("late_imports_begin")
    ssh = module("orchestrator.pi.ssh")
    mark("recorder_import_begin")  # piorch imports the recorder after the connection has begun
    recording = module("orchestrator.jobs.record")
    mark("late_imports_end")
    if ssh is not None:
        wrap(ssh, "resolve_target", "resolve_target")
        wrap(ssh, "open_host", "open_host")
        host_class = getattr(ssh, "SshHost", None)
        if host_class is None:
            MISSING.append("orchestrator.pi.ssh.SshHost")
        else:
            wrap(host_class, "start", "remote_start", counted_starts)
    if recording is not None:
        wrap(recording, "make_receiver", "make_receiver", receiver_marks)
    target = module("orchestrator.pi.target")
    if target is not None:
        wrap(target, "load_paramiko", "paramiko_import", timed_load_paramiko)
    capture = module("orchestrator.pi.capture")
    if capture is not None:
        # The probe round trip (a first run on a Pi), or reading what an earlier run kept of it.
        wrap(capture, "probe_pi", "probe")
        wrap(capture, "recall_probe", "recall")
        # Pipeline.start sends the pipeline and reads its process group id back.
        wrap(capture.Pipeline, "start", "read_pgid")


def main() -> None:
    mark("cli_import_begin")
    from orchestrator.cli import main as piorch_main

    mark("cli_import_end")
    instrument()
    if MISSING:
        sys.stderr.write(f"startup_trace: not found: {', '.join(MISSING)}\n")
    sys.argv[0] = "piorch"
    piorch_main()


if __name__ == "__main__":
    main()
