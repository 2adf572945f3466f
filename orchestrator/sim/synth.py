"""Encode the scene (scene.py) the way the simulated Pi's encoder would: H.264 with libx264, MJPEG and JPEG
stills with FFmpeg's mjpeg encoder, GIF with FFmpeg's, all through PyAV (imported here, when first needed).

H.264 is encoded once per run, a short loop of whole GOPs that the camera then sends again and again
(video_plan.py decides its length): at 1080p libx264 takes about a second for a 60-frame loop on two
laptop cores, too slow to encode live next to everything else a test runs. The loop is a pure function of its
`H264Spec`, so it is kept in a cache directory (PIORCH_SIM_CACHE, default /tmp/piorch-sim-cache-<uid>) and
the next run with the same request starts at once; a fixed thread count keeps x264's output the same on every
machine with the same PyAV (which bundles its FFmpeg and x264).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import astuple, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from orchestrator.sim.scene import Canvas, EncoderMissing, I420Planes, numpy_module, oriented, to_rgb

ENV_CACHE = "PIORCH_SIM_CACHE"
CACHE_FORMAT = 2  # bump when the scene changes (the encoder's settings are in the key already)
X264_THREADS = 2
LOW_LATENCY_SLICES = 4


@dataclass(frozen=True)
class H264Spec:
    """One loop of H.264, as the simulated Pi's encoder would make it.

    `gop`: frames from one IDR to the next (0: only the first frame is an IDR). `tuning`: "hardware" (the
    bcm2835 encoder's stand-in: no B-frames, one slice), "libx264" (a Pi 5 without --low-latency:
    rpicam-apps' encoderOptionsLibx264, preset superfast, B-frames when `b_frames`) or "low-latency" (its
    --low-latency branch: preset ultrafast, tune zerolatency, 4 slices, 1 reference frame)."""

    width: int
    height: int
    fps: float
    gop: int
    frames: int
    tuning: str = "hardware"
    b_frames: bool = False
    profile: str = ""
    hflip: bool = False
    vflip: bool = False


def _import_av() -> Any:
    numpy_module()  # the scene needs it: say so now rather than mid-encode
    try:
        import av
    except ImportError:
        raise EncoderMissing("pictures at the asked size need PyAV and numpy (pip install av numpy)") from None
    return av


def _frame_canvas(av: Any, width: int, height: int, pix_fmt: str, hflip: bool = False,
                  vflip: bool = False) -> tuple[Any, Canvas]:
    """One AVFrame in an I420 layout (yuv420p or yuvj420p) with the scene's canvas drawn straight into its
    buffers. Reusing it frame after frame is safe: an encoder has copied (x264) or encoded (mjpeg) the
    picture by the time `encode()` returns."""
    import numpy as np

    frame = av.VideoFrame(width, height, pix_fmt)
    views = []
    for plane, rows, columns in zip(frame.planes, (height, (height + 1) // 2, (height + 1) // 2),
                                    (width, (width + 1) // 2, (width + 1) // 2), strict=True):
        views.append(np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :columns])
    return frame, Canvas(oriented(I420Planes(*views), hflip, vflip))


def _x264_options(spec: H264Spec) -> dict[str, str]:
    keyint = spec.gop if spec.gop > 0 else "infinite"
    params = [f"keyint={keyint}", f"min-keyint={spec.gop or 1}", "scenecut=0", "repeat-headers=1"]
    if spec.tuning == "hardware":
        options = {"preset": "superfast", "rc-lookahead": "0"}
        params.append("bframes=0")
    else:
        # encoderOptionsLibx264: me_range 16, me_cmp without chroma, me_subpel_quality 0, and these private ones
        options = {"preset": "superfast", "weightp": "none", "weightb": "0", "motion-est": "dia",
                   "rc-lookahead": "0", "mixed-refs": "0"}
        params += ["merange=16", "chroma-me=0", "subme=0"]
        if spec.tuning == "low-latency":
            options.update(preset="ultrafast", tune="zerolatency")
            params += [f"slices={LOW_LATENCY_SLICES}", "ref=1"]
        else:
            options["partitions"] = "i8x8,i4x4"
            # b-adapt=0: a B-frame in every gap, so every GOP shows the reordering (x264 may skip them otherwise)
            params += [f"bframes={int(spec.b_frames)}", "b-adapt=0"]
    if spec.profile:
        options["profile"] = spec.profile
    options["x264-params"] = ":".join(params)
    return options


def _encode_h264(spec: H264Spec) -> bytes:
    av = _import_av()
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = spec.width, spec.height, "yuv420p"
    rate = Fraction(spec.fps).limit_denominator(1001)
    codec.framerate, codec.time_base = rate, 1 / rate
    # rpicam-apps: FF_THREAD_SLICE with 4 slices for --low-latency, else FF_THREAD_FRAME (one slice a frame).
    # x264's sliced threads cut a frame into one slice a thread, so --low-latency runs 4 threads, as a Pi 5's
    # 4 cores do; PyAV's default (slice threads) would otherwise cut every frame in X264_THREADS.
    low_latency = spec.tuning == "low-latency"
    codec.thread_type = "SLICE" if low_latency else "FRAME"
    codec.thread_count = LOW_LATENCY_SLICES if low_latency else X264_THREADS
    codec.options = _x264_options(spec)
    frame, canvas = _frame_canvas(av, spec.width, spec.height, "yuv420p", spec.hflip, spec.vflip)
    packets: list[Any] = []
    for index in range(spec.frames):
        canvas.draw(index)
        frame.pts = index
        packets += codec.encode(frame)
    packets += codec.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def _av_version() -> str:
    """PyAV's release, which pins the FFmpeg and x264 it bundles (without importing av: a cached loop
    needs no encoder)."""
    from importlib import metadata

    try:
        return metadata.version("av")
    except metadata.PackageNotFoundError:
        return "unknown"


def encode_h264(spec: H264Spec, env: Mapping[str, str] | None = None) -> bytes:
    """The loop's Annex B bytes (SPS/PPS before every IDR, in decode order), from the cache when there."""
    # the encoder's settings are part of the key: changing them here never serves an old loop
    key = repr((CACHE_FORMAT, astuple(spec), _x264_options(spec), X264_THREADS, _av_version()))
    name = f"h264-{hashlib.sha256(key.encode()).hexdigest()[:24]}.bin"
    folder = cache_dir(os.environ if env is None else env)
    if folder is not None:
        try:
            return (folder / name).read_bytes()
        except OSError:
            pass  # not cached yet
    data = _encode_h264(spec)
    if folder is not None:
        _store(folder / name, data)
    return data


def cache_dir(env: Mapping[str, str]) -> Path | None:
    """The cache folder, created private; None (no caching) when it cannot be ours alone: a folder in /tmp
    that someone else made could feed us their bytes."""
    folder = Path(env.get(ENV_CACHE) or f"/tmp/piorch-sim-cache-{os.getuid()}")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return folder


def _store(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)  # another run reading the same name sees all of it or nothing
    except OSError:
        partial.unlink(missing_ok=True)  # a full disk only costs the next run an encode


def jpeg_qscale(quality: int) -> int:
    """libjpeg's quality (1-100, the tools' -q) as FFmpeg's mjpeg qscale (1-31), an approximation: libjpeg
    scales its tables by 5000/q % below 50 and by 200-2q % above; qscale 4 is about the unscaled tables."""
    quality = min(max(quality, 1), 100)
    percent = 5000 / quality if quality < 50 else 200 - 2 * quality
    return min(max(round(percent / 25), 1), 31)


def _jpeg_codec(av: Any, width: int, height: int, qscale: int) -> Any:
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    codec.time_base = Fraction(1, 1)
    codec.sample_aspect_ratio = Fraction(1, 1)  # square pixels, and FFmpeg then writes the JFIF header libjpeg does
    # qscale: a fixed quantiser for every image; bitexact: no "Lavc" comment in each image (a Pi's have none)
    codec.flags |= av.codec.context.Flags.qscale | av.codec.context.Flags.bitexact
    codec.global_quality = qscale * 118  # FF_QP2LAMBDA
    codec.qmin = codec.qmax = qscale
    return codec


def encode_mjpeg(width: int, height: int, count: int, qscale: int, hflip: bool = False,
                 vflip: bool = False) -> tuple[bytes, ...]:
    """`count` frames of the scene as JPEG images (an MJPEG stream is these back to back)."""
    av = _import_av()
    codec = _jpeg_codec(av, width, height, qscale)
    frame, canvas = _frame_canvas(av, width, height, "yuvj420p", hflip, vflip)
    images: list[bytes] = []
    for index in range(count):
        canvas.draw(index)
        frame.pts = index
        images += [bytes(packet) for packet in codec.encode(frame)]
    return (*images, *(bytes(packet) for packet in codec.encode(None)))


def encode_jpeg(planes: I420Planes, qscale: int) -> bytes:
    """One picture as a JPEG file (the scene's planes as they are: 4:2:0, full range)."""
    av = _import_av()
    codec = _jpeg_codec(av, planes.width, planes.height, qscale)
    frame, canvas = _frame_canvas(av, planes.width, planes.height, "yuvj420p")
    for target, source in zip((canvas.planes.y, canvas.planes.u, canvas.planes.v), (planes.y, planes.u, planes.v),
                              strict=True):
        target[...] = source
    frame.pts = 0
    return b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])


def encode_gif(planes: I420Planes) -> bytes:
    """One GIF picture (FFmpeg's encoder, 8-bit RGB palette)."""
    av = _import_av()
    codec = av.CodecContext.create("gif", "w")
    codec.width, codec.height, codec.pix_fmt = planes.width, planes.height, "rgb8"
    codec.time_base = Fraction(1, 1)
    frame = av.VideoFrame.from_ndarray(to_rgb(planes), format="rgb24").reformat(format="rgb8")
    frame.pts = 0
    data = b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])
    return data + b"\x3b"  # the file's trailer: FFmpeg's gif encoder leaves it to its muxer
