"""Put the camera simulator on a PATH: tiny `#!/bin/sh` shims named raspivid, raspividyuv, rpicam-vid,
libcamera-vid (and raspistill, raspiyuv, rpicam-still, libcamera-still for the still simulator).

A shim only sets the environment and `exec`s Python on orchestrator.sim.camera, so the process that
`command -v raspivid` finds, that `pgrep` sees and that a signal reaches is the simulator itself, with the
pid the shell started. Used by `piorch demo` (LocalHost with path_prepend) and by the end-to-end tests
(the test sshd's bin/ directory).

The Pi the shims play is set with PIORCH_SIM_BOARD / PIORCH_SIM_BUILD / PIORCH_SIM_VERSION in `extra_env`
(profile.py); a tool that Pi does not have (raspivid on a Pi 5, rpicam-vid before 1.4.0, libcamera-vid
from 1.8.0) is not installed, so that `command -v` does not find it, as on the real Pi.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.sim.profile import profile_from_env

SIM_TOOLS = ("raspivid", "libcamera-vid", "rpicam-vid")
# Still cameras, played by orchestrator/sim/still.py.
SIM_STILL_TOOLS = ("raspistill", "libcamera-still", "rpicam-still")
# The legacy raw tools (video, still): uncompressed frames, played by the same two simulators.
SIM_RAW_TOOLS = ("raspividyuv", "raspiyuv")
# Not a camera: the demo's stand-in for a laptop without netcat (orchestrator/sim/netcat.py).
SIM_NETCAT = "nc"
_MODULES = {
    **dict.fromkeys((*SIM_TOOLS, "raspividyuv"), "orchestrator.sim.camera"),
    **dict.fromkeys((*SIM_STILL_TOOLS, "raspiyuv"), "orchestrator.sim.still"),
    SIM_NETCAT: "orchestrator.sim.netcat",
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def package_parent() -> Path:
    """The directory that contains the `orchestrator` package (goes on PYTHONPATH)."""
    return Path(__file__).resolve().parent.parent.parent


def build_stand_in_script(tool: str, python: str, pythonpath: str, extra_env: Mapping[str, str]) -> str:
    """The shim's text. Every value is shlex-quoted, so paths with spaces or quotes are safe."""
    if tool not in _MODULES:
        raise ValueError(f"not a simulated tool: {tool!r} (known: {', '.join(_MODULES)})")
    lines = [
        "#!/bin/sh",
        f"# piorch stand-in for `{tool}`: a simulator ({_MODULES.get(tool, '?')}), not the real tool.",
        "# Written by orchestrator.sim.stand_in. PYTHONPATH is set outright (not appended to) so the",
        "# simulator comes from this tree whatever the caller's environment holds.",
        f"PYTHONPATH={shlex.quote(pythonpath)}",
        "export PYTHONPATH",
    ]
    for name, value in extra_env.items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"not a valid environment variable name: {name!r}")
        lines += [f"{name}={shlex.quote(value)}", f"export {name}"]
    # exec: no shell stays behind as the parent, so signals and exit status are the simulator's own.
    module = _MODULES[tool]
    tool_arg = f" {shlex.quote(tool)}" if tool != SIM_NETCAT else ""
    lines.append(f'exec {shlex.quote(python)} -m {module}{tool_arg} "$@"')
    return "\n".join(lines) + "\n"


def install_stand_ins(
    bin_dir: Path,
    tools: Sequence[str] = ("raspivid",),
    python: str = sys.executable,
    extra_env: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write one executable shim per tool into `bin_dir` (created if missing); return their paths. Tools the
    Pi described by `extra_env` does not have are left out (ValueError for a Pi that never existed)."""
    pi = profile_from_env(extra_env or {})
    bin_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for tool in (tool for tool in tools if pi.has_tool(tool)):
        script = build_stand_in_script(tool, python, str(package_parent()), extra_env or {})
        target = bin_dir / tool
        partial = bin_dir / f".{tool}.partial"
        partial.write_text(script)
        partial.chmod(0o755)
        # Rename into place: a test or demo running the tool never sees half a script.
        os.replace(partial, target)
        written.append(target)
    return written
