"""What the simulated camera streams for an encoder set up by encoders.py: frames at the asked size, rate and
GOP, and the rules for how long a loop to pre-encode (pure, but for the encode itself in synth.py).

- H.264 at the shipped clips' own geometry (640x360, 25 fps, no other GOP, profile or flip asked for) is the
  shipped clip, byte for byte as before (tests elsewhere rebuild those exact bytes; its IDR period, 25,
  stands in for the encoder's default there). Anything else is the
  scene (scene.py) encoded with libx264 once, a loop of whole GOPs, sent again and again:
  - GOP: rpicam's libav encoder uses --intra, else the frame rate (encoder/libav_encoder.cpp); the
    hardware encoder --intra / -g, else its default of 60 (bcm2835-v4l2-codec's I_PERIOD control; raspivid
    without -g is taken to get the same firmware default); raspivid -g 0 is one IDR, then P-frames only.
  - length: about 2 s of whole GOPs, at most 120 frames unless one GOP is longer, and at most
    LOOP_MAX_PIXELS pixels in all (1080p: 60 frames). A GOP longer than that is cut: the loop then starts
    with an IDR every LOOP_MAX_PIXELS / (w*h) frames, the only place where the GOP differs from the one asked.
- -hf/-vf, --hflip/--vflip mirror the scene (a flipped request never gets a shipped clip).
- MJPEG: the shipped images at 640x360 without --quality or flips, else the scene's JPEGs at the asked size and
  quality (a loop of up to one second).
- Raw: the scene drawn every frame, in the Pi's own buffer layout (raw.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.sim.encoders import Encoder, Encoding, Refusal, simulator_limit
from orchestrator.sim.frames import FramePlan, Frames, build_mjpeg_plan
from orchestrator.sim.h264 import BFRAMES_CLIP_PATH, CLIP_PATH, NAL_SEI, build_frame_plan, nal_type, split_nal_units
from orchestrator.sim.mjpeg_clip import MJPEG_CLIP_PATH
from orchestrator.sim.options import SimOptions
from orchestrator.sim.profile import PiProfile
from orchestrator.sim.raw import RawFrames, RawKind, legacy_layout, rpicam_video_layout
from orchestrator.sim.synth import H264Spec, encode_h264, encode_mjpeg, jpeg_qscale

CLIP_SIZE = (640, 360)
CLIP_FPS = 25.0
CLIP_GOP = 25
HARDWARE_DEFAULT_GOP = 60
LOOP_SECONDS = 2
LOOP_MAX_FRAMES = 120
LOOP_MAX_PIXELS = 1920 * 1080 * 60
MJPEG_MAX_FRAMES = 30
RAW_MIN_SIZE = 64  # the ISPs' smallest output (bcm2835-isp MIN_DIM)
# What a JPEG from the camera's encoder looks like without a --quality: rpicam-vid's default is 50.
DEFAULT_VIDEO_QUALITY = 50
_X264_PROFILES = ("baseline", "main", "high")


def h264_gop(encoding: Encoding, options: SimOptions) -> int:
    """Frames from one IDR to the next in the stream the Pi's encoder makes (0: only the first)."""
    if encoding.encoder is Encoder.LIBX264:
        return options.intra or int(options.framerate)
    if "intra" in options.given and options.tool == "raspivid":
        return options.intra  # -g 0 is taken as asked: an initial IDR, then P-frames only
    return options.intra or HARDWARE_DEFAULT_GOP


def loop_frames(width: int, height: int, fps: float, gop: int) -> int:
    """How many frames of H.264 to pre-encode: whole GOPs, about LOOP_SECONDS, within the budgets."""
    budget = max(1, LOOP_MAX_PIXELS // (width * height))
    about = max(1, round(LOOP_SECONDS * fps))
    if gop <= 0:
        return min(about, LOOP_MAX_FRAMES, budget)
    frames = gop * max(1, min(round(about / gop), LOOP_MAX_FRAMES // gop))
    if frames <= budget:
        return frames
    return gop * (budget // gop) if budget >= gop else budget


def uses_shipped_clip(encoding: Encoding, options: SimOptions) -> bool:
    """The request is what a shipped clip already is: its size, its rate, its GOP, no profile asked."""
    if (options.width, options.height) != CLIP_SIZE or options.framerate != CLIP_FPS or "profile" in options.given:
        return False
    if options.hflip or options.vflip:
        return False
    if encoding.encoder is Encoder.LIBX264:
        return encoding.b_frames and h264_gop(encoding, options) == CLIP_GOP
    return options.intra in (0, CLIP_GOP) and not ("intra" in options.given and options.intra == 0)


def check_size(encoding: Encoding, options: SimOptions) -> Refusal | None:
    """Sizes the simulator cannot draw for this encoder (a `simulator:` line), before the camera starts."""
    width, height = options.width, options.height
    if width < 1 or height < 1:
        return simulator_limit(f"a {width}x{height} picture is not simulated")
    if encoding.encoder in (Encoder.HARDWARE_H264, Encoder.LIBX264) and (width % 2 or height % 2):
        return simulator_limit(f"H.264 at an odd size ({width}x{height}) is not simulated")
    if encoding.encoder is Encoder.YUV420 and (width % 2 or height % 2 or min(width, height) < RAW_MIN_SIZE):
        return simulator_limit(f"yuv420 at {width}x{height} is not simulated (only even sizes from "
                               f"{RAW_MIN_SIZE}x{RAW_MIN_SIZE}, where the ISP's output is known)")
    return None


def x264_spec(encoding: Encoding, options: SimOptions) -> H264Spec:
    gop = h264_gop(encoding, options)
    frames = loop_frames(options.width, options.height, options.framerate, gop)
    profile = (options.profile or "").lower() if "profile" in options.given else ""
    profile = profile if profile in _X264_PROFILES else ""
    flips = {"hflip": options.hflip, "vflip": options.vflip}
    if encoding.encoder is Encoder.HARDWARE_H264:
        return H264Spec(options.width, options.height, options.framerate, gop, frames, "hardware", profile=profile,
                        **flips)
    tuning = "low-latency" if options.low_latency else "libx264"
    return H264Spec(options.width, options.height, options.framerate, gop, frames, tuning, encoding.b_frames, profile,
                    **flips)


def build_video_frames(encoding: Encoding, options: SimOptions, pi: PiProfile, env: Mapping[str, str]) -> Frames:
    """The frames the camera sends, frame 0 first (scene.EncoderMissing without numpy or PyAV
    for new pictures)."""
    flips = (options.hflip, options.vflip)
    if encoding.encoder is Encoder.YUV420:
        return RawFrames(rpicam_video_layout(options.width, options.height, pi.board), *flips)
    if encoding.encoder is Encoder.CAMERA_RAW:
        return RawFrames(legacy_layout(options.width, options.height, RawKind(options.codec)), *flips)
    if encoding.encoder is Encoder.MJPEG:
        if (options.width, options.height) == CLIP_SIZE and options.quality is None and flips == (False, False):
            return build_mjpeg_plan(MJPEG_CLIP_PATH.read_bytes())
        count = max(1, min(round(options.framerate), MJPEG_MAX_FRAMES,
                           LOOP_MAX_PIXELS // 2 // (options.width * options.height)))
        quality = DEFAULT_VIDEO_QUALITY if options.quality is None else options.quality
        images = encode_mjpeg(options.width, options.height, count, jpeg_qscale(quality), *flips)
        return FramePlan(first=images[0], loop=images)
    if uses_shipped_clip(encoding, options):
        clip = BFRAMES_CLIP_PATH if encoding.encoder is Encoder.LIBX264 else CLIP_PATH
        return build_frame_plan(clip.read_bytes(), encoding.inline_headers)
    stream = encode_h264(x264_spec(encoding, options), env)
    if encoding.encoder is Encoder.HARDWARE_H264:
        # The Pi's hardware encoder writes no SEI; x264 names itself in one.
        stream = b"".join(nal for nal in split_nal_units(stream) if nal_type(nal) != NAL_SEI)
    return build_frame_plan(stream, encoding.inline_headers)
