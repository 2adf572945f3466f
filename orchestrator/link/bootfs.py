"""The Pi's boot partition: found on the SD card in the laptop, or on a running Pi over SSH.

Both sides write the same way: the original is copied once to `cmdline.txt.piorch-orig` (never overwritten
by a later run), then the new text goes to a temp file that is fsynced and renamed over cmdline.txt. Undo
renames the backup back, so the original returns byte for byte. FAT (the boot partition) has no
permissions or links, but rename within a folder is atomic there too. Before writing, the current bytes are
compared with what was read and shown, so a change made in between is never lost.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orchestrator.errors import RemoteError
from orchestrator.link.plan import LinkError
from orchestrator.pi.host import CommandResult, Host
from orchestrator.stream.manifest import fsync_dir, write_bytes_atomically

CMDLINE = "cmdline.txt"
BACKUP = "cmdline.txt.piorch-orig"
TEMP = "cmdline.txt.piorch-tmp"
# Label `boot` up to early Bullseye, `bootfs` since; udisks adds a digit when two cards share a label.
_LABEL = re.compile(r"^(bootfs|boot)[0-9]*$")
# Where a running Pi keeps it: Bookworm and later first (its /boot/cmdline.txt is a "DO NOT EDIT" stub).
PI_BOOT_DIRS = ("/boot/firmware", "/boot")
# Reading a 4 KiB file takes milliseconds; `sync` on a slow SD card can take seconds.
REMOTE_READ_TIMEOUT_S = 20.0
REMOTE_WRITE_TIMEOUT_S = 60.0
# Sentinel exit statuses of the remote scripts, turned into plain explanations below.
EXIT_NOT_FOUND = 93
EXIT_UNREADABLE = 94
EXIT_CHANGED = 90
EXIT_NO_BACKUP = 91


@dataclass(frozen=True)
class BootState:
    """What the boot partition holds now: cmdline.txt and, when an earlier run made one, the backup."""

    where: str
    current: bytes
    backup: bytes | None


class BootFiles(Protocol):
    """cmdline.txt on an SD card or on a running Pi; `read` first, then at most one change."""

    where: str

    def read(self) -> BootState: ...

    def write(self, new: bytes, expected: bytes, make_backup: bool) -> None: ...

    def restore(self) -> None: ...


def build_boot_search_roots(users: Sequence[str], platform: str = sys.platform) -> list[Path]:
    """Where desktops mount a card: /media/$USER (Debian, Ubuntu), /run/media/$USER (Fedora, Arch), /Volumes."""
    if platform == "darwin":
        return [Path("/Volumes")]
    roots: list[Path] = []
    for user in dict.fromkeys(u for u in users if u):
        roots += [Path("/media") / user, Path("/run/media") / user]
    return [*roots, Path("/media")]


def find_boot_dirs(roots: Sequence[Path]) -> list[Path]:
    """Mounted folders labelled like a Pi boot partition that hold a cmdline.txt."""
    found: list[Path] = []
    for root in roots:
        try:
            children = sorted(root.iterdir())
        except OSError:
            continue  # a root that does not exist or cannot be listed simply holds no card
        found += [child for child in children if _LABEL.match(child.name) and (child / CMDLINE).is_file()]
    return list(dict.fromkeys(found))


def pick_boot_dir(candidates: Sequence[Path]) -> Path:
    if not candidates:
        raise LinkError("no SD card boot partition found (label bootfs or boot, under /media, /run/media or "
                        "/Volumes)", "insert the freshly flashed SD card, or pass --boot DIR (or --pi HOST)")
    if len(candidates) > 1:
        listed = ", ".join(str(c) for c in candidates)
        raise LinkError(f"several boot partitions found: {listed}", "pass --boot with the one to edit")
    return candidates[0]


def default_boot_users() -> list[str]:
    # Under `sudo piorch`, the card is mounted for the user who ran sudo, not for root.
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid with no name (no passwd entry, no USER): its mounts have none either
        user = ""
    return [user, os.environ.get("SUDO_USER", "")]


class LocalBootFiles:
    """The boot partition mounted on this laptop (the SD card), or any folder given with --boot."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder / CMDLINE)

    def read(self) -> BootState:
        path = self.folder / CMDLINE
        if not path.is_file():
            raise LinkError(f"no {CMDLINE} in {self.folder}", "pass --boot with the SD card's boot partition")
        try:
            backup = self.folder / BACKUP
            return BootState(self.where, path.read_bytes(), backup.read_bytes() if backup.is_file() else None)
        except OSError as exc:
            raise LinkError(f"cannot read {self.where} ({exc.strerror})", "check the SD card and its mount") from None

    def write(self, new: bytes, expected: bytes, make_backup: bool) -> None:
        path = self.folder / CMDLINE
        try:
            if path.read_bytes() != expected:
                raise LinkError(f"{self.where} changed while piorch was working", "run setup-link again")
            backup = self.folder / BACKUP
            if make_backup and not backup.exists():
                write_bytes_atomically(backup, expected)
            write_bytes_atomically(path, new)
        except OSError as exc:
            raise _write_error(self.where, exc) from None

    def restore(self) -> None:
        try:
            os.replace(self.folder / BACKUP, self.folder / CMDLINE)
            fsync_dir(self.folder)
        except OSError as exc:
            raise _write_error(self.where, exc) from None


def _write_error(where: str, exc: OSError) -> LinkError:
    return LinkError(f"cannot write {where} ({exc.strerror or exc})",
                     "the card may be read-only (lock switch) or mounted for another user; fix that and run again")


def build_remote_read_script(dirs: Sequence[str]) -> str:
    """Find cmdline.txt in the first of `dirs` that has one and print it and its backup as base64.

    base64 because Host.run hands back text lines: it would lose the trailing newline the edit must keep.
    Each output line is tagged so that nothing a login script prints could be mistaken for the file."""
    branches = []
    for index, folder in enumerate(dirs):
        quoted = shlex.quote(folder)
        keyword = "if" if index == 0 else "elif"
        branches.append(f"{keyword} [ -f {quoted}/{CMDLINE} ]; then cd {quoted} || exit {EXIT_UNREADABLE}; "
                        f"echo 'piorch-dir {index}'")
    return "\n".join([
        *branches,
        f"else exit {EXIT_NOT_FOUND}; fi",
        # -w 0: one line, however long; `|| exit` because an unreadable file must not look like an empty one.
        f"printf 'piorch-data '; base64 -w 0 < {CMDLINE} || exit {EXIT_UNREADABLE}; echo",
        f"if [ -f {BACKUP} ]; then printf 'piorch-backup '; base64 -w 0 < {BACKUP} || exit {EXIT_UNREADABLE}; echo; fi",
    ])


def parse_remote_read(result: CommandResult, dirs: Sequence[str], host_name: str) -> tuple[str, BootState]:
    """The folder used and what it holds, or the reason the read failed."""
    places = " or ".join(dirs)
    if result.exit_code == EXIT_NOT_FOUND:
        raise RemoteError(f"no {CMDLINE} on {host_name} in {places}",
                          "set pi_boot_dir to the Pi's boot partition folder")
    if result.exit_code != 0:
        detail = _last_line(result.stderr) or f"exit status {result.exit_code}"
        raise RemoteError(f"cannot read {CMDLINE} on {host_name} ({detail})",
                          "check that the boot partition is mounted and readable there")
    fields = dict(line.partition(" ")[::2] for line in result.stdout.splitlines() if line.startswith("piorch-"))
    try:
        folder = dirs[int(fields["piorch-dir"])]
        current = base64.b64decode(fields["piorch-data"].strip(), validate=True)
        backup_text = fields.get("piorch-backup")
        backup = None if backup_text is None else base64.b64decode(backup_text.strip(), validate=True)
    except (KeyError, ValueError, IndexError):
        raise RemoteError(f"unexpected answer from {host_name} while reading {CMDLINE}",
                          "check that base64 (coreutils) is installed on the Pi") from None
    return folder, BootState(f"{host_name}:{folder.rstrip('/')}/{CMDLINE}", current, backup)


def build_remote_write_script(folder: str, new: bytes, expected: bytes, make_backup: bool) -> str:
    """The write, run as root on the Pi: compare, back up once, temp + sync + rename, sync the folder."""
    digest = hashlib.sha256(expected).hexdigest()
    payload = base64.b64encode(new).decode("ascii")
    lines = [
        "set -e",
        f"cd {shlex.quote(folder)}",
        # Leave no temp file behind whatever fails; the exit status of the script is kept.
        f"trap 'rm -f {TEMP} {BACKUP}.tmp' EXIT",
        # Compare-and-swap: the file must still be what piorch read and showed, or a change would be lost.
        f"printf '%s  %s\\n' {digest} {CMDLINE} | sha256sum -c --status - || exit {EXIT_CHANGED}",
    ]
    if make_backup:
        # Made once: a later run must never replace the original with an already edited file.
        lines.append(f"if [ ! -e {BACKUP} ]; then cp {CMDLINE} {BACKUP}.tmp; sync {BACKUP}.tmp; "
                     f"mv -f {BACKUP}.tmp {BACKUP}; fi")
    lines += [
        f"printf '%s' {payload} | base64 -d > {TEMP}",
        # `sync FILE` fsyncs that file (coreutils >= 8.24); `sync .` makes the renames durable.
        f"sync {TEMP}",
        f"mv -f {TEMP} {CMDLINE}",
        "sync .",
    ]
    return "\n".join(lines)


def build_remote_restore_script(folder: str) -> str:
    return "\n".join([
        "set -e",
        f"cd {shlex.quote(folder)}",
        f"[ -e {BACKUP} ] || exit {EXIT_NO_BACKUP}",
        f"sync {BACKUP}",
        f"mv -f {BACKUP} {CMDLINE}",
        "sync .",
    ])


def build_sudo_command(script: str) -> str:
    # -n: never prompt (there is no terminal on this channel); a password request fails at once instead.
    return f"sudo -n sh -c {shlex.quote(script)}"


def explain_remote_write_failure(result: CommandResult, where: str, host_name: str) -> RemoteError:
    stderr = result.stderr
    if result.exit_code == 127 and "sudo" in stderr:
        return RemoteError(f"sudo is not installed on {host_name}",
                           "install sudo there, or put the SD card in the laptop and use --boot")
    if stderr.lstrip().startswith("sudo:"):
        return RemoteError(f"sudo on {host_name} refused to run without a password ({_last_line(stderr)})",
                           "allow passwordless sudo for this user (the Raspberry Pi OS default), or put the SD card "
                           "in the laptop and use --boot")
    if result.exit_code == EXIT_CHANGED:
        return RemoteError(f"{where} changed while piorch was working", "run setup-link again")
    if result.exit_code == EXIT_NO_BACKUP:
        return RemoteError(f"the backup next to {where} disappeared", "run setup-link --undo again")
    detail = _last_line(stderr) or f"exit status {result.exit_code}"
    return RemoteError(f"cannot write {where} ({detail})",
                       "check that the boot partition is mounted read-write there and that sudo works")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class RemoteBootFiles:
    """cmdline.txt on a running Pi: read as the login user, written as root through `sudo -n`."""

    def __init__(self, host: Host, dirs: Sequence[str] = PI_BOOT_DIRS) -> None:
        self.host = host
        self.dirs = tuple(dirs)
        self.where = f"{host.name}:{' or '.join(self.dirs)}"
        self._folder: str | None = None

    def read(self) -> BootState:
        result = self.host.run(build_remote_read_script(self.dirs), REMOTE_READ_TIMEOUT_S)
        self._folder, state = parse_remote_read(result, self.dirs, self.host.name)
        self.where = state.where
        return state

    def _run_as_root(self, script: str) -> None:
        result = self.host.run(build_sudo_command(script), REMOTE_WRITE_TIMEOUT_S)
        if result.exit_code != 0:
            raise explain_remote_write_failure(result, self.where, self.host.name)

    def write(self, new: bytes, expected: bytes, make_backup: bool) -> None:
        assert self._folder is not None, "read() first"
        self._run_as_root(build_remote_write_script(self._folder, new, expected, make_backup))

    def restore(self) -> None:
        assert self._folder is not None, "read() first"
        self._run_as_root(build_remote_restore_script(self._folder))
