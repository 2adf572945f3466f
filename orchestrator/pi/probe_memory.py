"""What a Pi was found to have, kept between runs, so that the next `record` starts without probing first.

A probe is a round trip and, with a libcamera tool, two starts of that tool (`--version`, `--help`): tens
of milliseconds here, hundreds on a Pi Zero, before the camera even starts. Its answer changes only when
the Pi's software does. So each probe's output is kept, beside the Pi's stamp of what the answer depends on
(scripts.build_stamp_command: the tools found and the files they are, the board, the package database,
the login's environment), in the user's cache folder, one file per Pi (user, address, port and host key).

The next run decides from the kept answer and starts its first pipeline behind a guard
(scripts.build_guarded_script): the Pi computes its stamp first and starts nothing when it differs; piorch
then probes afresh and starts again. A kept answer is never the reason for a refusal either: any error it
leads to before the camera starts is checked against a fresh probe. `record` and `snap` (and the Python
API, which runs them) remember; `piorch doctor` always asks the Pi itself. `remember_pi = false` in the
config file (or PIORCH_REMEMBER_PI=false) turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from orchestrator.pi.host import Host
from orchestrator.pi.scripts import PiProbe, build_probe_script, parse_probe_output

# The file's own format; a file of another one is ignored (and replaced at the next probe).
FORMAT = 1
# A kept answer file larger than this is not piorch's (a probe's output is a few KiB).
MAX_BYTES = 256 * 1024


def memory_folder() -> Path:
    """`$XDG_CACHE_HOME/piorch/pis`, else `~/.cache/piorch/pis`."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "piorch" / "pis"


def _memory_file(host: Host, describe: Sequence[str]) -> Path | None:
    """The file for this Pi and this question; None for a host with no stable identity (the simulator)."""
    identity = getattr(host, "identity", None)
    name = identity() if callable(identity) else None
    if not isinstance(name, str) or not name:
        return None
    # The question is part of the key: another tool to describe, or another piorch whose probe asks
    # something else (an upgrade), is another answer.
    question = build_probe_script(describe)
    key = hashlib.sha256(f"{name}\n{question}".encode()).hexdigest()[:32]
    return memory_folder() / f"{key}.json"


def recall_probe(host: Host, describe: Sequence[str]) -> PiProbe | None:
    """The kept answer for this Pi; None when there is none usable. A pipeline built from it starts behind
    the guard its stamp makes (capture.run_with_probe)."""
    path = _memory_file(host, describe)
    if path is None:
        return None
    try:
        kept = json.loads(_read_small(path).decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("format") != FORMAT or not isinstance(kept.get("probe"), str):
        return None
    probe = parse_probe_output(kept["probe"])
    return probe if probe.complete and probe.stamp else None


def _read_small(path: Path) -> bytes:
    """The file's bytes in one read; OSError when it cannot be read or is larger than MAX_BYTES.

    Three system calls, where a stat and `read_text` make eight (stat, open, fstat, the tty check, seek, two
    reads, close): each lets go of the GIL, and a fleet's Pis all read their memory at the same moment, so
    each let-go is a hand-over between their threads (benchmarks/README.md, twelfth round). O_NONBLOCK: a
    FIFO in its place answers at once instead of holding the start."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        data = os.read(descriptor, MAX_BYTES + 1)
    finally:
        os.close(descriptor)
    if len(data) > MAX_BYTES:
        raise OSError(f"{path} is larger than a kept probe")
    return data


def keep_probe(host: Host, describe: Sequence[str], output: str) -> None:
    """Keep a fresh probe's output for the next run; quietly nothing when it cannot be kept (a read-only
    home, no stamp): remembering only saves time, it is never needed."""
    path = _memory_file(host, describe)
    probe = parse_probe_output(output)
    if path is None or not probe.complete or not probe.stamp:
        return
    text = json.dumps({"format": FORMAT, "pi": getattr(host, "name", ""), "probe": output}, indent=2)
    # A private temp name, then a rename: a run reading it at the same moment sees one whole file or none.
    # No fsync: a file lost in a crash only costs the next run its probe.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def forget_probe(host: Host, describe: Sequence[str]) -> None:
    path = _memory_file(host, describe)
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
