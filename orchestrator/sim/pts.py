"""The simulated camera's frame timestamps: `raspivid -pts FILE`, `rpicam-vid --save-pts FILE`, and frames
the camera drops on request.

As the real tools write them (rpicam-apps output/output.cpp Output::timestampReady, userland RaspiVid.c):
"# timecode format v2" when the file opens, then one line a frame written, `%lld.%03lld` of the time in
microseconds since the first frame (`33.333`); each line flushed at once only with `--flush` / `-fl`,
otherwise stdio's buffer holds them back (a pipe's buffer: 4096 bytes) until it fills or the tool exits.
On a Pi 5, rpicam-vid's H.264 goes through libav, whose packets reach the Output class (and so the
timestamps file) only from 1.8.0 (commit da7d16e): before that the file gets its header and nothing more.
(encoders.py refuses --save-pts where that release refuses it.)

PIORCH_SIM_FAULT=drop-frames=SPEC makes the camera drop frames: SPEC is `I[:N]` items joined by `/`, and
before the I-th frame written (from 0) the camera drops N frames (1 when not given). The sensor's clock goes
on, the encoder never sees those frames: the stream stays valid, the next frame comes N intervals late, and
the timestamps jump. `drop-frames=30:2/90` drops 2 frames before frame 30 and 1 before frame 90.

With PIORCH_SIM_LOG=DIR, a copy of the timestamps file goes to DIR/pts-<pid>.txt, line by line as written:
what the tests compare the laptop's sidecars with.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping

from orchestrator.sim.options import SimOptions
from orchestrator.sim.profile import profile_from_env

HEADER = b"# timecode format v2\n"
DROP_FRAMES = "drop-frames"
ENV_FAULT = "PIORCH_SIM_FAULT"
ENV_LOG = "PIORCH_SIM_LOG"
# glibc gives a FILE on a pipe a buffer of st_blksize bytes: a page.
STDIO_BUFFER = 4096
# Output::Create: H.264 on a Pi without the VideoCore encoder (or --codec libav) is written by libav itself.
LIBAV_OUTPUT_CLASS_SINCE = (1, 8, 0)


def parse_drop_frames(spec: str) -> dict[int, int]:
    """`30:2/90` -> {30: 2, 90: 1}: frames dropped before the frame written with that index."""
    drops: dict[int, int] = {}
    for item in spec.split("/"):
        index, _, count = item.partition(":")
        if not index.isdigit() or (count and not count.isdigit()):
            raise ValueError(f"{DROP_FRAMES}={spec!r}: expected I[:N] items joined by '/', e.g. 30:2/90")
        drops[int(index)] = drops.get(int(index), 0) + (int(count) if count else 1)
    return drops


def drops_from_env(env: Mapping[str, str]) -> dict[int, int]:
    for word in env.get(ENV_FAULT, "").split(","):
        name, _, value = word.partition("=")
        if name == DROP_FRAMES:
            return parse_drop_frames(value)
    return {}


def writes_timestamps(options: SimOptions, env: Mapping[str, str]) -> bool:
    """Whether frames reach the timestamps file (else it holds the header only)."""
    if options.tool.startswith("raspivid"):
        return True
    pi = profile_from_env(env)
    libav = options.codec == "libav" or (options.codec == "h264" and not pi.hardware_h264)
    return not libav or pi.version >= LIBAV_OUTPUT_CLASS_SINCE


def _line(microseconds: int) -> bytes:
    return f"{microseconds // 1000}.{microseconds % 1000:03d}\n".encode()


class CameraTimestamps:
    """One run's timestamps file (none without -pts/--save-pts) and its dropped frames."""

    def __init__(self, options: SimOptions, env: Mapping[str, str]) -> None:
        self._fps = options.framerate
        self._drops = drops_from_env(env)
        self._flush = options.flush
        self._lines = writes_timestamps(options, env)
        self._pending = bytearray()
        self._fd: int | None = None
        self._copy: int | None = None
        self._dropped_before = 0
        if options.save_pts is None:
            return
        try:
            self._fd = os.open(options.save_pts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as error:
            # RaspiVid.c says so and records without; rpicam-vid would stop. Said the first way here.
            os.write(2, f"Error opening output file: {options.save_pts} ({error.strerror})\n"
                        "No output file will be generated\n".encode())
            return
        if env.get(ENV_LOG):
            self._copy = os.open(os.path.join(env[ENV_LOG], f"pts-{os.getpid()}.txt"),
                                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        # The tool's stdio flushes at a normal exit; a SIGKILL loses what is held, as it would.
        atexit.register(self.close)
        self._write(HEADER)

    @property
    def dropped(self) -> int:
        """Frames dropped so far."""
        return self._dropped_before

    def slot(self, index: int) -> int:
        """The sensor frame that the index-th frame written is: later by every frame dropped before it."""
        return index + self._dropped_before + self._drops.get(index, 0)

    def written(self, index: int) -> None:
        """The index-th frame went out: its timestamp follows it, as Output::OutputReady does."""
        slot = self.slot(index)
        self._dropped_before += self._drops.get(index, 0)
        if self._fd is not None and self._lines:
            self._write(_line(round(slot * 1_000_000 / self._fps)))

    def _write(self, data: bytes) -> None:
        self._pending += data
        if self._copy is not None:
            os.write(self._copy, data)
        if self._flush or len(self._pending) >= STDIO_BUFFER:
            self._drain()

    def _drain(self) -> None:
        if self._fd is None:
            return
        try:
            while self._pending:
                del self._pending[: os.write(self._fd, self._pending)]
        except OSError:
            # Nobody reads any more (rpicam-vid ignores SIGPIPE): the timestamps are lost, the video goes on.
            self._pending.clear()

    def close(self) -> None:
        self._drain()
        for fd in (self._fd, self._copy):
            if fd is not None:
                os.close(fd)
        self._fd = self._copy = None


def start_timestamps(options: SimOptions) -> CameraTimestamps:
    return CameraTimestamps(options, os.environ)
