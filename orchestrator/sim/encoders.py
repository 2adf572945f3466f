"""Which encoder the simulated tool sets up, or how it fails to (pure): the Pi-dependent half of a recording.

rpicam-vid (encoder/encoder.cpp Encoder::Create, encoder/libav_encoder.cpp, by release):
- yuv420 -> the null encoder (raw frames); mjpeg -> libjpeg in software, which ignores --bitrate.
- h264 -> h264_codec_select: the bcm2835 hardware encoder on a Pi 0-4 (Platform::VC4); on a Pi 5 libx264
  through libav when the build has libav; otherwise "Unable to find an appropriate H.264 codec".
- libav -> libav with --libav-video-codec (h264_v4l2m2m, turned into libx264 on a Pi 5).
- libav picks its output format from --libav-format, else only for an empty (or, from 1.4.2, tcp:// or
  udp://) output; anything else is guessed from the file name by FFmpeg, which cannot guess "-".
- libx264 makes B-frames (max_b_frames = 1, from 1.2.0) unless --low-latency (from 1.6.0).
raspivid (RaspiVid.c create_encoder_component): the bitrate cap and the macroblock-rate limit.
raspividyuv (RaspiVidYUV.c): no encoder at all, the camera port's raw buffers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from orchestrator.sim.options import (
    LEGACY_MAX_MACROBLOCKS_PER_S,
    LEVEL4_MACROBLOCKS_PER_S,
    SimOptions,
    effective_legacy_bitrate,
    legacy_macroblocks_per_s,
)
from orchestrator.sim.profile import PiProfile
from orchestrator.sim.raspicli import RASPICAM_FAILED

EXIT_SIMULATOR_LIMIT = 1  # the simulator cannot play this; says so on a `simulator:` line
EXIT_LEGACY_SOFTWARE = 70  # sysexits EX_SOFTWARE: RaspiVid.c when a component fails
EXIT_RPICAM_ERROR = 255  # rpicam-vid's main() catches the exception and returns -1

# The Pi OS release a given rpicam-apps came in decides the FFmpeg whose messages appear: Bookworm's 5.1
# until 1.8.1, Trixie's 7.1 from 1.9.0 (libavformat/mux.c avformat_alloc_output_context2).
_FFMPEG7_FROM = (1, 9, 0)
_FFMPEG_CONTEXT = "[NULL @ 0x5581e0c2f4c0]"  # av_log's prefix; the address differs on every real run
# Muxers FFmpeg knows by name (-f / --libav-format), and the file-name extensions it guesses from.
_MUXERS = ("h264", "mp4", "matroska", "mpegts", "avi", "mov", "flv", "nut", "mjpeg", "rawvideo", "null", "rtp")
_EXTENSIONS = {"h264": "h264", "264": "h264", "mp4": "mp4", "mkv": "matroska", "ts": "mpegts", "avi": "avi",
               "mov": "mov", "flv": "flv", "nut": "nut", "mjpeg": "mjpeg", "mjpg": "mjpeg", "yuv": "rawvideo"}


_INCOMPATIBLE = "libav: Incompatible options selected."


class Encoder(Enum):
    HARDWARE_H264 = "h264"  # bcm2835 (raspivid's MMAL encoder, or rpicam's V4L2 one): no B-frames
    LIBX264 = "libx264"  # a Pi 5's software H.264: SPS/PPS before every IDR, B-frames unless --low-latency
    MJPEG = "mjpeg"
    YUV420 = "yuv420"  # rpicam's null encoder: the ISP's buffers whole
    CAMERA_RAW = "camera-raw"  # raspividyuv: the MMAL camera port's buffers whole (format in SimOptions.codec)


@dataclass(frozen=True)
class Encoding:
    encoder: Encoder
    bitrate: int = 0  # bits/s the stream is padded to; 0 = the clip's own rate
    inline_headers: bool = False
    b_frames: bool = False
    lines: tuple[str, ...] = ()  # what the tool prints on stderr while setting up (warnings, notes)


@dataclass(frozen=True)
class Refusal:
    lines: tuple[str, ...]  # stderr, exactly as the tool prints it
    exit_code: int


def _rpicam_error(*lines: str) -> Refusal:
    """What rpicam-vid prints for an exception: any LOG_ERROR lines before it, then main()'s frame."""
    *before, message = lines
    return Refusal((*before, f"ERROR: *** {message} ***"), EXIT_RPICAM_ERROR)


def simulator_limit(text: str) -> Refusal:
    return Refusal((f"simulator: {text}",), EXIT_SIMULATOR_LIMIT)


def choose_rpicam_encoding(options: SimOptions, pi: PiProfile) -> Encoding | Refusal:
    """Encoder::Create for the Pi's board, build and release."""
    if options.codec == "yuv420":
        return Encoding(Encoder.YUV420)  # rows padded to the ISP's stride: raw.py
    if options.codec == "mjpeg":
        return Encoding(Encoder.MJPEG)  # the MJPEG encoder sets --quality only: the bitrate is ignored
    if options.codec == "h264":
        if pi.hardware_h264:
            return Encoding(Encoder.HARDWARE_H264, options.bitrate, options.inline_headers)
        if not pi.libav:
            return _rpicam_error("Unable to find an appropriate H.264 codec")
        return _libav_encoding(options, pi, "libx264")
    # --codec libav: only an encoder a libav build registers
    if not pi.libav:
        return _rpicam_error(f"Unrecognised codec {options.codec}")
    codec = options.libav_video_codec
    if codec == "h264_v4l2m2m" and not pi.hardware_h264:
        codec = "libx264"  # libav_codec_select: no V4L2 encoder on a Pi 5
    return _libav_encoding(options, pi, codec)


def _libav_incompatible(options: SimOptions, with_pause: bool) -> bool:
    return bool(options.circular or options.segment_ms or options.save_pts or options.split
                or (with_pause and options.pause))


def _libav_encoding(options: SimOptions, pi: PiProfile, codec: str) -> Encoding | Refusal:
    """LibAvEncoder's constructor and initVideoCodec, in the order they check things."""
    if codec not in ("libx264", "h264_v4l2m2m"):
        return simulator_limit(f"libav video codec {codec} is not simulated (only H.264)")
    version = pi.version
    lines: tuple[str, ...] = ()
    if (1, 4, 4) <= version < (1, 7, 0) and _libav_incompatible(options, with_pause=False):
        lines = ("", "ERROR: Pi 5 and libav encoder does not currently support the circular, segment, save_pts or "
                 "split command line options, they will be ignored!", "")
    if (1, 7, 0) <= version < (1, 8, 0) and _libav_incompatible(options, with_pause=True):
        return _rpicam_error("", "ERROR: The libav encoder does not currently support the circular, segment, "
                             "save_pts, split, or pause command line options!", "", _INCOMPATIBLE)
    output = options.output or ""
    muxer = options.libav_format
    network = output.startswith(("tcp://", "udp://"))
    if not muxer and ((output == "" and version >= (1, 2, 2)) or (network and version >= (1, 4, 2))):
        muxer = "h264"
    elementary = options.libav_format in ("", "h264") and output.endswith("264")
    if version >= (1, 8, 0) and not elementary and _libav_incompatible(options, with_pause=True):
        return _rpicam_error("", "ERROR: The libav encoder does not currently support the circular, segment, "
                             "save_pts, split, or pause command line options with non-elementary streams!", "",
                             _INCOMPATIBLE)
    ffmpeg7 = version >= _FFMPEG7_FROM
    context_error = "libav: cannot allocate output context" + (", try setting with --libav-format"
                                                               if version >= (1, 4, 2) else "")
    if muxer and muxer not in _MUXERS:
        known = "is not known." if ffmpeg7 else "is not a suitable output format"
        return _rpicam_error(f"{_FFMPEG_CONTEXT} Requested output format '{muxer}' {known}", context_error)
    if not muxer:
        extension = output.rpartition("/")[2].rpartition(".")[2].lower() if "." in output else ""
        muxer = _EXTENSIONS.get(extension, "")
    if not muxer:
        guess = (f"Unable to choose an output format for '{output}'; use a standard extension for the filename "
                 "or specify the format manually." if ffmpeg7 else
                 f"Unable to find a suitable output format for '{output}'")
        return _rpicam_error(f"{_FFMPEG_CONTEXT} {guess}", context_error)
    if muxer != "h264":
        return simulator_limit(f"libav output format {muxer} is not simulated (only raw h264)")
    if codec == "h264_v4l2m2m":
        return Encoding(Encoder.HARDWARE_H264, options.bitrate, options.inline_headers, lines=lines)
    b_frames = version >= (1, 2, 0) and not options.low_latency
    # No global header for a raw h264 output: x264 repeats SPS/PPS before every IDR, --inline or not.
    return Encoding(Encoder.LIBX264, options.bitrate, inline_headers=True, b_frames=b_frames, lines=lines)


def choose_raspivid_encoding(options: SimOptions) -> Encoding | Refusal:
    """create_encoder_component: cap the bitrate (the cap follows -lev), then check the macroblock rate."""
    bitrate, warning = effective_legacy_bitrate(options)
    lines = (warning,) if warning else ()
    if options.codec == "mjpeg":
        return Encoding(Encoder.MJPEG, lines=lines)  # JPEG cannot be padded: the images' own rate
    macroblocks = legacy_macroblocks_per_s(options)
    if macroblocks > LEGACY_MAX_MACROBLOCKS_PER_S:
        refused = ("mmal: Too many macroblocks/s requested", "mmal: main: Failed to create encode component",
                   *RASPICAM_FAILED)
        return Refusal((*lines, *refused), EXIT_LEGACY_SOFTWARE)
    if macroblocks > LEVEL4_MACROBLOCKS_PER_S:
        lines = (*lines, "Too many macroblocks/s: Increasing H264 Level to 4.2")
    return Encoding(Encoder.HARDWARE_H264, bitrate, options.inline_headers, lines=lines)


def choose_raspividyuv_encoding(options: SimOptions) -> Encoding:
    """RaspiVidYUV.c sets up no encoder: the camera's frames go out raw, whatever the size or rate."""
    return Encoding(Encoder.CAMERA_RAW)
