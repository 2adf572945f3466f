"""`setup-link --pi HOST` against a real sshd playing a Pi that is reachable some other way (Wi-Fi, USB).

The fake Pi's boot partition is a folder under the test user's remote home, pointed at by `pi_boot_dir`;
`sudo` is a stand-in in the remote bin_dir. The laptop side is skipped and its tools are refusing stand-ins.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.link.bootfs import BACKUP
from tests.e2e_helpers import piorch_env, run_piorch
from tests.sshd_server import SshServerInfo
from tests.test_bootfs import BOOKWORM, STUB, laptop_changes, laptop_stubs, snapshot

pytestmark = pytest.mark.e2e

# pi-gen images end the line with a newline: it must survive the trip through SSH.
ORIGINAL = BOOKWORM + b"\n"
EDITED = BOOKWORM + b" ip=192.168.50.2::0.0.0.0:255.255.255.0::eth0:off\n"

SUDO_OK = """#!/bin/sh
# Stand-in for passwordless sudo: log the call, run the command.
echo "sudo $1 $2 $3" >> "$HOME/sudo.log"
[ "$1" = "-n" ] && shift
exec "$@"
"""
SUDO_WANTS_PASSWORD = """#!/bin/sh
echo "sudo $1 $2 $3" >> "$HOME/sudo.log"
echo "sudo: a password is required" >&2
exit 1
"""
# Stand-in for a Pi where even root cannot write the boot partition: as root the command runs as `nobody`
# (who may read but not write the folder); as a normal user the folder itself is made read-only.
SUDO_NO_WRITE = """#!/bin/sh
echo "sudo $1 $2 $3" >> "$HOME/sudo.log"
[ "$1" = "-n" ] && shift
if [ "$(id -u)" = 0 ]; then exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; fi
exec "$@"
"""


def install_sudo(info: SshServerInfo, script: str) -> None:
    (info.bin_dir / "sudo").write_text(script)
    (info.bin_dir / "sudo").chmod(0o755)


def sudo_calls(info: SshServerInfo) -> list[str]:
    log = info.home / "sudo.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def pi(sshd: SshServerInfo) -> SshServerInfo:
    firmware = sshd.home / "boot" / "firmware"
    firmware.mkdir(parents=True)
    (firmware / "cmdline.txt").write_bytes(ORIGINAL)
    (firmware / "config.txt").write_bytes(b"[all]\n")
    # Bookworm's stub at /boot/cmdline.txt, as on a real Pi.
    (sshd.home / "boot" / "cmdline.txt").write_bytes(STUB)
    install_sudo(sshd, SUDO_OK)
    return sshd


def env_for(tmp_path: Path, info: SshServerInfo, boot_dir: Path) -> dict[str, str]:
    bin_dir, _ = laptop_stubs(tmp_path)
    env = piorch_env(tmp_path, info.ssh_config, bin_dir)
    env["PIORCH_PI_BOOT_DIR"] = str(boot_dir)
    return env


def test_ssh_dry_run_setup_second_run_undo(tmp_path: Path, pi: SshServerInfo) -> None:
    firmware = pi.home / "boot" / "firmware"
    env = env_for(tmp_path, pi, firmware)
    config = tmp_path / "no-user-config.toml"
    before = snapshot(pi.home / "boot")

    dry = run_piorch(env, "setup-link", "--pi", pi.alias, "--skip-laptop", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"testpi:{firmware}/cmdline.txt: would set ip=" in dry.stdout
    assert "-" + ORIGINAL.decode() in dry.stdout and "+" + EDITED.decode() in dry.stdout
    assert snapshot(pi.home / "boot") == before and sudo_calls(pi) == [] and not config.exists()

    first = run_piorch(env, "setup-link", "--pi", pi.alias, "--skip-laptop")
    assert first.returncode == 0, first.stderr
    assert (firmware / "cmdline.txt").read_bytes() == EDITED
    assert (firmware / BACKUP).read_bytes() == ORIGINAL
    assert sorted(p.name for p in firmware.iterdir()) == ["cmdline.txt", BACKUP, "config.txt"]
    assert (pi.home / "boot" / "cmdline.txt").read_bytes() == STUB
    assert sudo_calls(pi) == ["sudo -n sh -c"]
    assert f'pi = "{pi.user}@192.168.50.2"\n' in config.read_text()

    edited = snapshot(pi.home / "boot")
    second = run_piorch(env, "setup-link", "--pi", pi.alias, "--skip-laptop")
    assert second.returncode == 0, second.stderr
    assert "ip= already set, unchanged" in second.stdout
    assert snapshot(pi.home / "boot") == edited and sudo_calls(pi) == ["sudo -n sh -c"]

    undo_dry = run_piorch(env, "setup-link", "--pi", pi.alias, "--skip-laptop", "--undo", "--dry-run")
    assert undo_dry.returncode == 0 and "would restore the original" in undo_dry.stdout
    assert snapshot(pi.home / "boot") == edited

    undo = run_piorch(env, "setup-link", "--pi", pi.alias, "--skip-laptop", "--undo")
    assert undo.returncode == 0, undo.stderr
    assert snapshot(pi.home / "boot") == before
    assert (firmware / "cmdline.txt").read_bytes() == ORIGINAL
    assert sudo_calls(pi) == ["sudo -n sh -c"] * 2
    assert laptop_changes(tmp_path / "laptop-commands.log") == []


@pytest.mark.parametrize(
    ("sudo", "words"),
    [(SUDO_WANTS_PASSWORD, "sudo on testpi refused to run without a password"),
     (SUDO_NO_WRITE, "cannot write testpi:")],
)
def test_pi_without_write_access_changes_nothing(tmp_path: Path, pi: SshServerInfo, sudo: str, words: str) -> None:
    firmware = pi.home / "boot" / "firmware"
    install_sudo(pi, sudo)
    if sudo is SUDO_NO_WRITE:
        if os.geteuid() == 0:
            # `nobody` may pass through the fixture's private folders and read, as on a Pi's FAT mount.
            for folder in (pi.home.parent, pi.home, pi.home / "boot"):
                folder.chmod(0o755)
        else:
            firmware.chmod(0o555)
    env = env_for(tmp_path, pi, firmware)
    before = snapshot(pi.home / "boot")
    try:
        result = run_piorch(env, "setup-link", "--pi", pi.alias, "--skip-laptop")
    finally:
        firmware.chmod(0o755)
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert snapshot(pi.home / "boot") == before
    assert sorted(p.name for p in firmware.iterdir()) == ["cmdline.txt", "config.txt"]
    assert sudo_calls(pi) == ["sudo -n sh -c"]
    assert not (tmp_path / "no-user-config.toml").exists()


def test_stub_or_missing_cmdline_on_the_pi_is_refused(tmp_path: Path, pi: SshServerInfo) -> None:
    env = env_for(tmp_path, pi, pi.home / "boot")
    stub = run_piorch(env, "setup-link", "--pi", pi.alias, "--skip-laptop")
    assert stub.returncode == 6 and "'DO NOT EDIT' stub" in stub.stderr and "/boot/firmware" in stub.stderr
    env["PIORCH_PI_BOOT_DIR"] = str(pi.home / "nowhere")
    missing = run_piorch(env, "setup-link", "--pi", pi.alias, "--skip-laptop")
    assert missing.returncode == 4 and "no cmdline.txt on testpi in" in missing.stderr
    assert sudo_calls(pi) == [] and (pi.home / "boot" / "cmdline.txt").read_bytes() == STUB

