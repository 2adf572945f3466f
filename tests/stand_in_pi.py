"""Stand-in Pi tools for the doctor and bootstrap tests, and a way to take tools off the remote PATH.

The fixture sshd's remote PATH is `bin_dir:/usr/local/bin:/usr/bin:/bin`, so a tool can be added (a script
in bin_dir) but not removed: the test machine's own nc in /usr/bin would always be found. For "a Pi
without nc", `restrict_remote_path` rewrites the fixture's session wrapper (which sshd runs for every
session, so the change applies to the next command) to use `bin_dir:<farm>`, where the farm holds a
symlink to every system tool except the hidden ones. tests/sshd_server.py is not changed.

The farm always hides sudo, apt-get and the Pi tools, so a test can never reach the real package
manager: only the recording stand-ins below answer.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.sshd_server import SshServerInfo, build_session_env, build_session_wrapper
from tests.system_tools import find_tool

NETCAT_NAMES = ("nc", "netcat", "nc.openbsd", "nc.traditional", "ncat")
ALWAYS_HIDDEN = ("sudo", "apt-get", "apt", "vcgencmd", "rpicam-hello", "libcamera-hello", "rpicam-vid",
                 "libcamera-vid", "raspivid")
SYSTEM_DIRS = ("/usr/local/bin", "/usr/bin", "/bin")


def write_tool(bin_dir: Path, name: str, body: str) -> Path:
    path = bin_dir / name
    partial = bin_dir / f".{name}.partial"
    partial.write_text(f"#!/bin/sh\n# test stand-in for `{name}`\n{body}")
    partial.chmod(0o755)
    os.replace(partial, path)
    return path


def install_vcgencmd(bin_dir: Path, temp: str = "temp=48.3'C", throttled: str = "throttled=0x0",
                     camera: str = "supported=0 detected=0, libcamera interfaces=1") -> Path:
    """`vcgencmd measure_temp | get_throttled | get_camera`, answering with the given lines."""
    return write_tool(bin_dir, "vcgencmd", f"""case "${{1:-}}" in
    measure_temp) echo {shlex.quote(temp)} ;;
    get_throttled) echo {shlex.quote(throttled)} ;;
    get_camera) echo {shlex.quote(camera)} ;;
    *) echo "error=2 error_msg=\\"Command not registered\\""; exit 2 ;;
esac
""")


def install_rpicam_hello(bin_dir: Path, cameras: Sequence[str]) -> Path:
    """`rpicam-hello --list-cameras` in the real tool's format (or its "No cameras available!")."""
    if cameras:
        lines = ["Available cameras", "-----------------"]
        for index, sensor in enumerate(cameras):
            lines.append(f"{index} : {sensor} [3280x2464 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/{sensor}@10)")
            lines.append("    Modes: 'SRGGB10_CSI2P' : 640x480 [206.65 fps - (1000, 752)/1280x960 crop]")
        listing = "\n".join(lines)
    else:
        listing = "No cameras available!"
    return write_tool(bin_dir, "rpicam-hello", f"""[ "${{1:-}}" = --list-cameras ] || exit 1
cat <<'LISTING'
{listing}
LISTING
""")


def install_package_stand_ins(bin_dir: Path, log_dir: Path, install_into: Path) -> None:
    """`sudo` and `apt-get` that record every call in log_dir/{sudo,apt-get}.log.

    sudo runs the command as the same user (no privilege change) with SUDO_USER set; apt-get refuses
    without root or sudo, like the real one, fails to find the package until `update` ran (a freshly
    written card), and "installs" netcat-openbsd as a symlink `install_into/nc` -> the system's nc.openbsd.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    sudo_log = shlex.quote(str(log_dir / "sudo.log"))
    apt_log = shlex.quote(str(log_dir / "apt-get.log"))
    updated = shlex.quote(str(log_dir / "apt-lists-fetched"))
    target = shlex.quote(str(install_into / "nc"))
    # A test that lets apt-get "install" netcat calls require_tool("nc.openbsd") first.
    openbsd = shlex.quote(find_tool("nc.openbsd") or "/usr/bin/nc.openbsd")
    write_tool(bin_dir, "sudo", f"""printf '%s\\n' "$*" >> {sudo_log}
while [ $# -gt 0 ]; do
    case "$1" in --) shift; break ;; -*) shift ;; *) break ;; esac
done
SUDO_USER=$(id -un); export SUDO_USER
exec "$@"
""")
    write_tool(bin_dir, "apt-get", f"""printf '%s\\n' "$*" >> {apt_log}
if [ "$(id -u)" -ne 0 ] && [ -z "${{SUDO_USER:-}}" ]; then
    echo "E: Could not open lock file /var/lib/dpkg/lock-frontend - open (13: Permission denied)" >&2
    exit 100
fi
case " $* " in
    *" update "*) : > {updated}; echo "Reading package lists... Done" ;;
    *" install "*netcat-openbsd*)
        if [ ! -e {updated} ]; then echo "E: Unable to locate package netcat-openbsd" >&2; exit 100; fi
        ln -sf {openbsd} {target}
        echo "Setting up netcat-openbsd (1.219-1) ..." ;;
    *) echo "E: unexpected call" >&2; exit 100 ;;
esac
""")


def build_path_farm(farm: Path, hidden: Iterable[str], sources: Sequence[str] = SYSTEM_DIRS) -> Path:
    """A folder of symlinks to every tool in `sources` (first one of a name wins) except `hidden`."""
    farm.mkdir(parents=True, exist_ok=True)
    skip = set(hidden) | set(ALWAYS_HIDDEN)
    for source in sources:
        folder = Path(source)
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            link = farm / entry.name
            if entry.name in skip or link.exists() or link.is_symlink():
                continue
            link.symlink_to(entry)
    return farm


def restrict_remote_path(info: SshServerInfo, hidden: Iterable[str], extra_env: Mapping[str, str] | None = None
                         ) -> Path:
    """From the next session on, the remote PATH is `bin_dir:<farm>`: the hidden tools do not exist.

    `extra_env` must be what the server was started with (the wrapper re-exports it too).
    """
    root = info.bin_dir.parent
    farm = build_path_farm(root / "system-bin", hidden)
    env = build_session_env(info.bin_dir, info.home, extra_env or {})
    env["PATH"] = f"{info.bin_dir}:{farm}"
    wrapper = root / "session-wrapper.sh"
    partial = root / ".session-wrapper.partial"
    partial.write_text(build_session_wrapper(env))
    partial.chmod(0o755)
    os.replace(partial, wrapper)
    return farm
