"""The system programs the tests drive for real, looked up in one place.

A test that needs a program this machine lacks is skipped, saying which Debian/Ubuntu package brings it, so
`make test` passes on a fresh machine. With PIORCH_E2E_REQUIRED=1 (CI, which installs them all) it fails
instead: a missing package must never turn into coverage that silently went away.

Programs every Debian/Ubuntu has (sh, bash, coreutils, util-linux's setsid/mount, passwd's useradd) are not
listed: without them no test could run at all.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import pytest

E2E_REQUIRED_ENV = "PIORCH_E2E_REQUIRED"

# Program -> the package that installs it, as `apt install` takes it.
PACKAGES = {
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nc": "netcat-openbsd",
    "nc.openbsd": "netcat-openbsd",
    "nc.traditional": "netcat-traditional",
    "ffmpeg": "ffmpeg",
    "ffprobe": "ffmpeg",
    "ip": "iproute2",
    "tc": "iproute2",
    # The shells a Pi's login may run piorch's scripts under, beside bash: Debian's sh, and busybox's ash.
    "dash": "dash",
    "busybox": "busybox",
}

# sshd and ip live in sbin, which a normal user's PATH often lacks; the programs are still there to run.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def e2e_required() -> bool:
    return os.environ.get(E2E_REQUIRED_ENV) == "1"


def find_tool(name: str) -> str | None:
    """Absolute path of the program `name` (PATH first, then the sbin folders), or None."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_DIRS])
    found = shutil.which(name, path=search)
    return os.path.abspath(found) if found else None


def cannot_run(reason: str) -> NoReturn:
    """Skip the test for `reason`; fail it instead when the end-to-end tests are required."""
    if e2e_required():
        pytest.fail(f"{reason} ({E2E_REQUIRED_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """The absolute path of a system program the test needs; skips (or fails, see above) when it is missing."""
    package = PACKAGES[name]  # a KeyError here: add the program and its package to PACKAGES
    path = find_tool(name)
    if path is None:
        cannot_run(f"{name} not found: install {package}")
    return path


# The real tools' option tables, in the workspace's shared/ folder beside the checkout (CI lays out the same).
REFERENCE_OPTIONS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "options"


def require_reference(name: str) -> Path:
    """One of the real option tables; skips (or fails when required) when shared/ is not beside the checkout."""
    path = REFERENCE_OPTIONS / name
    if not path.is_file():
        cannot_run(f"{path} not found: the workspace's shared/ folder belongs beside the checkout")
    return path


def nameless_uid() -> int:
    """A uid this machine has no passwd entry for (a container's `-u 12345`)."""
    uid = 12345
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
        uid += 1


def run_as_nameless_user(argv: list[str], env: Mapping[str, str], timeout: float = 60
                         ) -> subprocess.CompletedProcess[str]:
    """`argv` run as a nameless uid (no passwd entry: a container's `-u 12345`) in a user namespace, where
    the uid maps back to this one (files read the same) and has no capabilities (a file's mode holds for
    it). Skips (or fails, see cannot_run) where the machine allows no user namespace."""
    unshare = find_tool("unshare")
    if unshare is None:
        cannot_run("unshare not found: install util-linux")
    uid = nameless_uid()
    done = subprocess.run([unshare, "--user", f"--map-user={uid}", f"--map-group={uid}", *argv], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 and done.stderr.startswith("unshare:"):
        cannot_run(f"no user namespace for the test: {done.stderr.strip()}")
    return done
