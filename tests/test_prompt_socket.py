"""PromptSocket's read-ahead (pi/ssh.py): what one read brought is handed out as asked, in order, never more
than asked, and the rest of a packet (and the packets that came with it) cost no further read."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest

from orchestrator.pi.ssh import READ_AHEAD, PromptSocket


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PromptSocket, socket.socket, list[int]]]:
    """A PromptSocket and its peer on loopback, and the sizes of the reads that reached the kernel."""
    ours, theirs = socket.socketpair()
    prompt = PromptSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    prompt.settimeout(5.0)  # as paramiko does: every read through the timeout path (poll, then recv)
    reads: list[int] = []
    real = socket.socket.recv

    def counted(sock: socket.socket, size: int, flags: int = 0) -> bytes:
        reads.append(size)
        return real(sock, size, flags)

    monkeypatch.setattr(socket.socket, "recv", counted)
    try:
        yield prompt, theirs, reads
    finally:
        prompt.close()
        theirs.close()


def test_packets_that_arrived_together_are_handed_out_from_one_read(
        pair: tuple[PromptSocket, socket.socket, list[int]]) -> None:
    prompt, peer, reads = pair
    packets = [bytes([n]) * size for n, size in enumerate((52, 16, 300), start=1)]
    peer.sendall(b"".join(packets))
    got = []
    for packet in packets:
        # paramiko's way: a packet's first 16-byte block, then its rest.
        first = prompt.recv(16)
        got.append(first + prompt.recv(len(packet) - 16) if len(packet) > 16 else first)
    assert got == packets
    assert reads == [READ_AHEAD], "one read reached the kernel for all three"


def test_a_read_never_returns_more_than_asked_and_what_comes_later_is_read_then(
        pair: tuple[PromptSocket, socket.socket, list[int]]) -> None:
    prompt, peer, reads = pair
    peer.sendall(b"abcdef")
    assert prompt.recv(4) == b"abcd"
    assert prompt.recv(100) == b"ef", "what is held, no more, without waiting for more"
    peer.sendall(b"later")
    assert prompt.recv(100) == b"later"
    peer.close()
    assert prompt.recv(100) == b"", "the end of the connection is still its end"
    assert len(reads) == 3


def test_a_send_is_one_write_where_there_is_room_and_waits_for_room_where_there_is_none(
        pair: tuple[PromptSocket, socket.socket, list[int]]) -> None:
    prompt, peer, _ = pair
    assert prompt.send(b"hello") == 5
    assert peer.recv(100) == b"hello"
    # Fill the connection until a send finds no room: it then waits up to the timeout, as socket.send does.
    prompt.settimeout(0.2)
    with pytest.raises(TimeoutError):
        while True:
            prompt.send(b"x" * 65536)


def test_a_close_by_another_thread_never_lets_a_send_write_into_the_next_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # paramiko's transport thread sends while its owner closes the connection: had the close freed the
    # descriptor between the send reading its number and writing, the next connection opened (a fleet's next
    # Pi, bootstrap's key login after its password login) would take the number and the bytes: sshd then
    # says "Bad packet length" and drops that login. The close waits for the write in progress.
    ours, theirs = socket.socketpair()
    prompt = PromptSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    prompt.settimeout(5.0)
    theirs.settimeout(5.0)  # (only so that a failure is not a hang)
    others: list[tuple[socket.socket, socket.socket]] = []
    write = os.write

    def write_while_closed_elsewhere(descriptor: int, data: bytes) -> int:
        closing = threading.Thread(target=prompt.close)
        closing.start()
        closing.join(0.2)  # (the close must wait for this write: it is not expected to end meanwhile)
        others.append(socket.socketpair())  # the next connection, which may take a freed number
        return write(descriptor, data)

    monkeypatch.setattr("orchestrator.pi.ssh.os.write", write_while_closed_elsewhere)
    try:
        assert prompt.send(b"last words") == len(b"last words")
        assert theirs.recv(64) == b"last words"
        _next_ours, next_theirs = others[0]
        next_theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            next_theirs.recv(64)  # nothing reached the next connection
    finally:
        theirs.close()
        for pair in others:
            for sock in pair:
                sock.close()
    with pytest.raises(OSError):
        prompt.send(b"after the close")
