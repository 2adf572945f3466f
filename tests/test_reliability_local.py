"""Reliability pieces that need no network namespace: disk precheck, --port auto, the peer filter."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import ReceiverError
from orchestrator.events import Event, Notice
from orchestrator.jobs.listen import run_listen
from orchestrator.jobs.record import check_disk_space, run_recording
from orchestrator.settings import Backend, CameraSettings, ReceiveSettings, RecordSettings
from orchestrator.stream.receiver import bind_listener, find_free_port
from tests.test_recording_core import simulated_pi


def test_disk_precheck_refuses_before_anything_starts(tmp_path: Path) -> None:
    # A week at 62.5 Mbit/s is terabytes: no test machine has that free.
    week = CameraSettings(bitrate=62_500_000, duration_ms=7 * 24 * 3600 * 1000)
    with pytest.raises(ReceiverError, match="needs about") as caught:
        check_disk_space(tmp_path, week)
    assert "--force" in caught.value.fix
    settings = RecordSettings(camera=week, receive=ReceiveSettings(port=0, out_dir=tmp_path / "recv"),
                              laptop_ip="127.0.0.1")
    host = simulated_pi(tmp_path)
    with pytest.raises(ReceiverError, match="needs about"):
        run_recording(settings, host, lambda event: None, threading.Event())
    assert list((tmp_path / "recv").iterdir()) == []  # nothing written, nothing started


def test_port_auto_skips_a_busy_port() -> None:
    holder = bind_listener("127.0.0.1", 0)
    try:
        busy = holder.getsockname()[1]
        if busy < 1024:
            pytest.skip("the kernel gave a privileged port")
        port = find_free_port("127.0.0.1", busy)
        assert port != busy and port > busy
        bind_listener("127.0.0.1", port).close()
    finally:
        holder.close()


def test_builtin_receiver_refuses_other_peers_and_logs_them(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = ReceiveSettings(port=port, out_dir=tmp_path / "recv", backend=Backend.BUILTIN, bind="127.0.0.1",
                               allowed_peer="127.0.0.1")
    events: list[Event] = []
    stop = threading.Event()
    thread = threading.Thread(target=run_listen, args=(settings, events.append, stop), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            # Another host on the link: a different source address (all of 127/8 is local on Linux).
            intruder = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=("127.0.0.2", 0))
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with intruder:
        intruder.sendall(b"not from the Pi")
    payload = os.urandom(200_000)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as pi:
        pi.sendall(payload)
    deadline = time.monotonic() + 10
    while not list((tmp_path / "recv").glob("*.h264")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    (received,) = (tmp_path / "recv").glob("*.h264")
    assert received.read_bytes() == payload
    refused = [e for e in events if isinstance(e, Notice) and "refused a connection from 127.0.0.2" in e.message]
    assert len(refused) == 1
