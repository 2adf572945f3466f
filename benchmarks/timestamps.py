"""Timestamps benchmark (issue 13): the receiver's CPU per GB with and without the camera's timestamps.

Run: `.venv/bin/python benchmarks/timestamps.py [--size-mb 1024] [--repeat 3] [--frame-bytes 8192] [--json]`.

One H.264 source file is made once (the simulator's clip, each frame padded with a filler NAL unit to
`--frame-bytes`: 8 KiB is about 2 Mbit/s at 30 fps, a low rate and so many frames, hence many timestamps, per
GB) and stays in the page cache. Each measurement is a fresh receiver process: piorch's own receiving path
(builtin receiver, H.264 frame counting, the file writer and its hasher, the closer, the session's finish and
the progress clock twice a second), fed over 127.0.0.1 by a separate sender process (socket.sendfile). With
timestamps it also follows a pipeline run by the local shell that prints one `piorch-pts T` line per frame
of the file, read through the same `Pipeline.poll` as a recording's status lines, kept in a `CameraRun`,
handed to the file by frame order and written as its `.pts` sidecar. Without, none of that. The two modes
alternate (A B A B ...), so machine noise hits both alike; CPU is the receiver process's user + system time
(every thread), from just before the connection to its file's manifest. Every received file is hashed and
compared, and with timestamps the sidecar must hold one line per frame. Exit status 0 when every measurement
succeeded, 1 otherwise; the ratio is reported, not asserted.

Hidden modes: `_send PORT FILE` (the sender) and `_receive MODE FILE FRAMES` (one measured receiver).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MIB = 1 << 20
HOST = "127.0.0.1"
SCRIPT = str(Path(__file__).resolve())
ROOT = Path(__file__).resolve().parents[1]
# Waits, each with its reason: a receiver that does not say its port in 30 s is broken (imports take ~0.3 s);
# a transfer slower than 10 MB/s on loopback means something hangs.
START_DEADLINE_S = 30.0
SLOWEST_MB_S = 10.0
FPS = 30
MODES = ("plain", "timestamps")


class MeasurementFailed(Exception):
    """A run could not be measured (wrong bytes, a missing sidecar, a timeout)."""


# --- the source ------------------------------------------------------------------------------------------
def build_source(path: Path, size: int, frame_bytes: int) -> int:
    """The clip's frames, each padded to `frame_bytes` with a filler NAL unit, repeated to `size` bytes (whole
    frames); returns the number of frames written."""
    from orchestrator.sim.h264 import CLIP_PATH, FILLER_MIN_SIZE, build_filler_nal, split_access_units

    frames = [b"".join(units) for units in split_access_units(CLIP_PATH.read_bytes())]
    padded = [frame + build_filler_nal(max(FILLER_MIN_SIZE, frame_bytes - len(frame))) for frame in frames]
    count = written = 0
    with open(path, "wb") as handle:
        while written < size:
            frame = padded[count % len(padded)]
            handle.write(frame)
            written += len(frame)
            count += 1
    return count


# --- the helper processes --------------------------------------------------------------------------------
def sender_main(port: int, path: str) -> int:
    deadline = time.monotonic() + START_DEADLINE_S
    while True:
        try:
            sock = socket.create_connection((HOST, port), timeout=1.0)
            break
        except (ConnectionRefusedError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    sock.settimeout(60.0)  # sendfile's select() waits at most this: a stalled receiver cannot hang us
    with sock, open(path, "rb") as source:
        sock.sendfile(source)
        sock.shutdown(socket.SHUT_WR)
        try:
            while sock.recv(MIB):
                pass
        except ConnectionResetError:
            pass  # the hash check on the received file will tell
    return 0


def timestamps_script(frames: int) -> str:
    """What a recording's pipeline says, without a camera: its group id, one timestamp line a frame, the exits."""
    return (f'echo "piorch-pgid $$"; echo "piorch-pts # timecode format v2"; '
            f"awk 'BEGIN {{ for (i = 0; i < {frames}; i++) printf \"piorch-pts %.3f\\n\", i * 1000 / {FPS} }}'; "
            'echo "piorch-camera-exit 0"; echo "piorch-nc-exit 0"')


def receive_main(mode: str, source: str, frames: int) -> int:
    """One measured receiver: prints its port, receives one connection, prints a JSON line of results."""
    from orchestrator.events import Event
    from orchestrator.pi.capture import Pipeline
    from orchestrator.pi.host import LocalHost
    from orchestrator.settings import Backend, ReceiveSettings
    from orchestrator.stream.frame_times import FrameTimes
    from orchestrator.stream.progress import ProgressClock
    from orchestrator.stream.receiver import make_receiver
    from orchestrator.stream.session import SessionFiles

    events: list[Event] = []
    with tempfile.TemporaryDirectory(prefix="piorch-bench-pts-") as folder:
        out = Path(folder)
        settings = ReceiveSettings(port=0, out_dir=out, backend=Backend.BUILTIN, bind=HOST, once=True,
                                   parse_h264=True)
        session = SessionFiles(out, "h264", FPS, keep_raw=False, discard_partial=False, on_event=events.append)
        receiver = make_receiver(settings, session.on_file, events.append)
        times = FrameTimes(FPS) if mode == "timestamps" else None
        run = times.begin_run() if times is not None else None
        receiver.frame_times = times
        receiver.start()
        clock = ProgressClock(receiver, events.append, out, None, None, times)
        pipeline = None
        started = time.process_time()
        if run is not None:
            pipeline = Pipeline(LocalHost("bench"), timestamps_script(frames), on_timestamps=run.add_lines)
            if not pipeline.start():
                raise MeasurementFailed(f"the timestamps pipeline did not start: {pipeline.last_words()}")
        print(receiver.port, flush=True)
        deadline = time.monotonic() + START_DEADLINE_S + os.path.getsize(source) / (SLOWEST_MB_S * 1e6)
        channel_open = pipeline is not None
        while (channel_open or not receiver.wait_finished(0)) and time.monotonic() < deadline:
            clock.tick()
            if pipeline is not None and channel_open:
                channel_open = pipeline.poll(0.05)
            else:
                time.sleep(0.05)
        if pipeline is not None:
            pipeline.finish()
        if run is not None:
            run.close()
        receiver.wait_idle(30.0)
        receiver.stop()
        files = session.finish(False, None)
        cpu = time.process_time() - started
        if len(files) != 1:
            raise MeasurementFailed(f"{len(files)} files received instead of 1")
        manifest = json.loads(Path(str(files[0].manifest)).read_text())
        sidecar_lines = None
        if run is not None:
            sidecar = out / str(manifest["pts_file"])
            sidecar_lines = len(sidecar.read_text().splitlines()) - 1
        print(json.dumps({"cpu_s": cpu, "bytes": manifest["bytes"], "sha256": manifest["sha256"],
                          "frames": manifest["frames"], "sidecar_lines": sidecar_lines}), flush=True)
    return 0


# --- measuring -------------------------------------------------------------------------------------------
def measure(mode: str, source: Path, frames: int, expected_sha: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    receiver = subprocess.Popen([sys.executable, SCRIPT, "_receive", mode, str(source), str(frames)],
                                stdout=subprocess.PIPE, text=True, env=env)
    sender = None
    try:
        stdout = receiver.stdout
        assert stdout is not None
        port_line: list[str] = []
        # A thread, so that the wait for the port has a deadline.
        reader = threading.Thread(target=lambda: port_line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_DEADLINE_S)
        if not port_line or not port_line[0].strip().isdigit():
            raise MeasurementFailed(f"{mode}: the receiver said no port")
        sender = subprocess.Popen([sys.executable, SCRIPT, "_send", port_line[0].strip(), str(source)], env=env)
        timeout = START_DEADLINE_S + source.stat().st_size / (SLOWEST_MB_S * 1e6)
        out, _ = receiver.communicate(timeout=timeout)
        sender.wait(timeout=START_DEADLINE_S)
    finally:
        for proc in (receiver, sender):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(5)
    if receiver.returncode != 0:
        raise MeasurementFailed(f"{mode}: the receiver exited with {receiver.returncode}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if result["sha256"] != expected_sha or result["frames"] != frames:
        raise MeasurementFailed(f"{mode}: received {result['bytes']} bytes, {result['frames']} frames, not the source")
    if mode == "timestamps" and result["sidecar_lines"] != frames:
        raise MeasurementFailed(f"sidecar has {result['sidecar_lines']} timestamps for {frames} frames")
    result["cpu_s_per_gb"] = result["cpu_s"] / (result["bytes"] / 1e9)
    return result


def main(argv: list[str]) -> int:
    if argv[:1] == ["_send"]:
        return sender_main(int(argv[1]), argv[2])
    if argv[:1] == ["_receive"]:
        return receive_main(argv[1], argv[2], int(argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frame-bytes", type=int, default=8192)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="piorch-bench-src-") as folder:
        source = Path(folder) / "source.h264"
        frames = build_source(source, args.size_mb * MIB, args.frame_bytes)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        try:
            for _ in range(args.repeat):
                for mode in MODES:
                    runs[mode].append(measure(mode, source, frames, digest))
        except MeasurementFailed as exc:
            print(f"measurement failed: {exc}", file=sys.stderr)
            return 1
    size_gb = args.size_mb * MIB / 1e9
    medians = {mode: statistics.median(r["cpu_s_per_gb"] for r in runs[mode]) for mode in MODES}
    ratio = medians["timestamps"] / medians["plain"]
    summary = {"size_gb": round(size_gb, 3), "frames": frames, "frames_per_gb": round(frames / size_gb),
               "frame_bytes": args.frame_bytes, "repeat": args.repeat,
               "cpu_s_per_gb": {mode: [round(r["cpu_s_per_gb"], 3) for r in runs[mode]] for mode in MODES},
               "median_cpu_s_per_gb": {mode: round(value, 3) for mode, value in medians.items()},
               "ratio_timestamps_to_plain": round(ratio, 3)}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"receiver CPU per GB, {size_gb:.2f} GB of H.264 in {args.frame_bytes}-byte frames "
          f"({frames:,} frames, one timestamp each), {args.repeat} runs each, interleaved:")
    for mode in MODES:
        values = ", ".join(f"{r['cpu_s_per_gb']:.3f}" for r in runs[mode])
        print(f"  {mode:<11} median {medians[mode]:.3f} CPU-s/GB  (runs: {values})")
    print(f"  ratio with/without timestamps: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
