"""A command on the Pi's SSH connection (pi/channel.ChannelProcess), against a real sshd on loopback: its
lines, its stderr, its exit status, with no thread of its own, and never blocked by output nobody reads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from orchestrator.pi.channel import ChannelProcess
from orchestrator.pi.host import STDERR_KEEP
from orchestrator.pi.ssh import SshHost
from orchestrator.settings import SshSettings
from tests.sshd_server import SshServerInfo

pytestmark = pytest.mark.e2e

# Far longer than any of these commands takes: a wait that ends by its deadline here has failed.
PATIENT_S = 60.0


@pytest.fixture
def host(sshd: SshServerInfo) -> Iterator[SshHost]:
    connected = SshHost.connect(SshSettings(target=sshd.alias, ssh_config=sshd.ssh_config, connect_timeout=PATIENT_S))
    try:
        yield connected
    finally:
        connected.close()


def lines_until_end(process: ChannelProcess) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + PATIENT_S
    while (line := process.next_line(1.0)) is not None:
        assert time.monotonic() < deadline, f"no end of output; lines so far {lines}"
        if line:
            lines.append(line)
    return lines


def test_a_command_starts_no_thread_and_gives_its_lines_stderr_and_status(host: SshHost) -> None:
    before = {thread.ident for thread in threading.enumerate()}
    # A line cut over two writes, blank lines, stderr between, and a last line without its newline.
    process = host.start("printf 'one\\ntw'; sleep 0.2; printf 'o\\n\\n'; echo oops >&2; printf 'three'; exit 7")
    assert isinstance(process, ChannelProcess)
    assert {thread.ident for thread in threading.enumerate()} == before, "a command is read without threads"
    assert lines_until_end(process) == ["one", "two", "three"]
    assert process.wait(PATIENT_S) == 7
    assert process.stderr_text() == "oops\n"
    assert process.next_line(0.0) is None
    process.close()


def test_a_line_wakes_the_reader_at_once_and_a_quiet_wait_says_nothing_yet(host: SshHost) -> None:
    process = host.start("read go; echo \"got $go\"")
    try:
        assert process.next_line(0.2) == "", "nothing was written yet"
        assert process.send(b"ready\n")
        started = time.monotonic()
        assert process.next_line(PATIENT_S) == "got ready"
        # The reader waits on the channel's signal, not its whole timeout.
        assert time.monotonic() - started < PATIENT_S / 2
        assert process.wait(PATIENT_S) == 0
    finally:
        process.close()


def test_output_nobody_reads_line_by_line_never_blocks_the_command(host: SshHost) -> None:
    # Twice the SSH window (2 MiB) on each stream: the command ends only if both are drained by the waits
    # alone. stderr keeps its last STDERR_KEEP bytes.
    process = host.start("head -c 4194304 /dev/zero | tr '\\0' e >&2; head -c 4194304 /dev/zero; "
                         "printf 'x\\ny\\n'; echo last-words >&2")
    try:
        assert process.wait(PATIENT_S) == 0
        kept = process.stderr_text()
        assert len(kept) == STDERR_KEEP and kept.endswith("e" * 100 + "last-words\n")
    finally:
        process.close()


def test_a_child_holding_the_output_open_does_not_hide_the_status(host: SshHost) -> None:
    # The shell exits 5 at once; the background sleep keeps stdout open, so the channel's end comes later.
    process = host.start("sleep 30 & exit 5")
    try:
        assert process.wait(2.0) == 5
    finally:
        process.close()
    assert process.next_line(0.0) is None, "a closed command has no more lines"


def test_a_close_from_another_thread_ends_a_waiting_reader(host: SshHost) -> None:
    process = host.start("sleep 30")
    threading.Timer(0.3, process.close).start()
    started = time.monotonic()
    while (line := process.next_line(1.0)) is not None:
        assert line == ""
        assert time.monotonic() - started < PATIENT_S / 2, "the reader never saw the close"
