"""Frozen settings objects: what the CLI hands to the core, after every value was checked."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias


class CameraTool(str, enum.Enum):
    AUTO = "auto"
    RASPIVID = "raspivid"
    LIBCAMERA_VID = "libcamera-vid"
    RPICAM_VID = "rpicam-vid"

    @property
    def is_legacy(self) -> bool:
        return self is CameraTool.RASPIVID


class Backend(str, enum.Enum):
    NC = "nc"
    BUILTIN = "builtin"


@dataclass(frozen=True)
class CameraSettings:
    """What the camera is asked for; the same settings are spoken in each tool's option language."""

    bitrate: int = 16_000_000
    width: int = 1920
    height: int = 1080
    fps: int = 30
    vflip: bool = False
    hflip: bool = False
    # 0 means "until stopped": the camera's own `-t 0`.
    duration_ms: int = 0
    # Frames between I-frames; 0 leaves the tool's default (about 60 for raspivid).
    intra_period: int = 0
    # "h264", "mjpeg" (JPEG images back to back) or "yuv420" (raw I420 frames back to back).
    codec: str = "h264"


@dataclass(frozen=True)
class ReceiveSettings:
    """The laptop half: where connections are accepted and where files go."""

    port: int = 10401
    out_dir: Path = Path("recv")
    backend: Backend = Backend.BUILTIN
    # Address to bind; None binds every address.
    bind: str | None = None
    discard_partial: bool = False
    once: bool = False
    # Parse the stream as H.264 (frame counts in manifests, frames/s on the dashboard).
    parse_h264: bool = False
    # Cut into segments of this many frames at I-frame boundaries; 0 = one file per connection.
    segment_frames: int = 0
    # MJPEG: each JPEG of a connection into its own file, OUT/<uuid>/frame_000001.jpg, ...
    split_jpeg: bool = False
    # Builtin backend only: accept connections from this address alone (the Pi); None accepts any.
    allowed_peer: str | None = None
    # Raw video: bytes of one frame, so frames are counted (dashboard, manifests); 0 = not raw.
    raw_frame_bytes: int = 0
    # Raw video: how its frames lie (events.RawLayout.describe()) and whether a .y4m goes beside the .yuv
    # (`y4m`). Each file's placeholder manifest carries it, so `recover` finishes a killed run's .yuv as the
    # run would have.
    raw_layout: Mapping[str, object] | None = None


@dataclass(frozen=True)
class SshSettings:
    target: str
    ssh_config: Path | None = None
    accept_new_host_key: bool = False
    connect_timeout: float = 10.0
    # Use the user's open OpenSSH ControlMaster for this Pi when the ssh_config names one (pi/mux.py).
    use_controlmaster: bool = True


@dataclass(frozen=True)
class RecordSettings:
    camera: CameraSettings
    receive: ReceiveSettings
    camera_tool: CameraTool = CameraTool.AUTO
    # Where the Pi sends; None means "the local address of the SSH connection".
    laptop_ip: str | None = None
    # Cut into gapless segments of about this many seconds (whole GOPs); 0 = one file.
    segment_s: float = 0.0
    # mp4 or mkv (remuxed with the true frame rate, no re-encoding) or h264 (the raw stream).
    container: str = "mp4"
    keep_raw: bool = False
    view: bool = False
    # MJPEG only: split the stream into one JPEG file a frame.
    frames: bool = False
    # Start even when the disk cannot hold the expected size.
    force: bool = False
    # Camera busy: stop whatever holds it, not only orphans of earlier piorch runs.
    kill_stale: bool = False
    # Start from what an earlier run found on this Pi, confirmed by the start itself (pi/probe_memory.py).
    remember_pi: bool = True
    # Ask the camera for its own frame timestamps where its tool can send them (pi/timestamps.py); False:
    # frame times from the frame rate, and the camera's command line is the recipe's own.
    timestamps: bool = True
    # No bytes for this long while recording: the link is lost; resume into a new file (unless no_resume).
    stall_timeout_s: float = 10.0
    no_resume: bool = False
    # The bitrate came from a flag, the environment or a config file (not the default): worth a word when
    # the encoder ignores it (rpicam-vid's MJPEG).
    bitrate_given: bool = False

    @property
    def needs_link_addresses(self) -> bool:
        """The recording asks the SSH connection's own addresses (jobs/record.py): this laptop's, where the Pi
        sends when no --laptop-ip is given, or the Pi's, the one peer the builtin receiver lets in."""
        return self.laptop_ip is None or (self.receive.backend is Backend.BUILTIN and self.receive.allowed_peer is None)


class StillTool(str, enum.Enum):
    """The still-camera tools; AUTO takes the Pi's own (rpicam-still, then libcamera-still, then raspistill)."""

    AUTO = "auto"
    RASPISTILL = "raspistill"
    LIBCAMERA_STILL = "libcamera-still"
    RPICAM_STILL = "rpicam-still"

    @property
    def is_legacy(self) -> bool:
        return self is StillTool.RASPISTILL


# The legacy stack's raw tools (userland RaspiVidYUV.c, RaspiStillYUV.c): raspivid's and raspistill's language
# without the encoder, writing the camera's buffers whole. Same package (libraspberrypi-bin), own binaries.
RAW_SIBLING: Mapping[str, str] = {"raspivid": "raspividyuv", "raspistill": "raspiyuv"}

# The config's `camera_tool` names a video tool; its still sibling lives on the same camera stack.
STILL_SIBLING: Mapping[CameraTool, StillTool] = {
    CameraTool.AUTO: StillTool.AUTO,
    CameraTool.RASPIVID: StillTool.RASPISTILL,
    CameraTool.LIBCAMERA_VID: StillTool.LIBCAMERA_STILL,
    CameraTool.RPICAM_VID: StillTool.RPICAM_STILL,
}


class ImageFormat(str, enum.Enum):
    JPG = "jpg"
    PNG = "png"
    BMP = "bmp"
    GIF = "gif"

    @property
    def suffix(self) -> str:
        return f".{self.value}"


class RawFormat(str, enum.Enum):
    """Uncompressed pictures, picamera's names: the camera's own bytes where its tool writes that order
    (yuv = I420, rgb; bgr from raspiyuv), else converted on the laptop from the tool's rgb."""

    YUV = "yuv"
    RGB = "rgb"
    BGR = "bgr"
    RGBA = "rgba"
    BGRA = "bgra"

    @property
    def suffix(self) -> str:
        return f".{self.value}"

    @property
    def pixel_format(self) -> str:
        """FFmpeg's name for it (`ffmpeg -f rawvideo -pix_fmt ...`)."""
        return {"yuv": "yuv420p", "rgb": "rgb24", "bgr": "bgr24", "rgba": "rgba", "bgra": "bgra"}[self.value]


PictureFormat: TypeAlias = ImageFormat | RawFormat


def parse_picture_format(text: str) -> PictureFormat:
    """`jpg`, `png`, ... or `yuv`, `rgb`, ...; ValueError for anything else."""
    name = text.lower()
    if name in {fmt.value for fmt in RawFormat}:
        return RawFormat(name)
    return ImageFormat(name)


@dataclass(frozen=True)
class StillSettings:
    """One picture, spoken in each still tool's option language."""

    image_format: PictureFormat = ImageFormat.JPG
    # None: the tool's own default, the sensor's full resolution.
    width: int | None = None
    height: int | None = None
    vflip: bool = False
    hflip: bool = False
    # How long the camera runs before it takes the picture (the tools' -t), so exposure and white balance
    # settle; both tools default to 5 s, which would make a timelapse needlessly slow.
    settle_ms: int = 1000
    # Raw formats only: scale to (width, height) on the laptop.
    resize: tuple[int, int] | None = None


@dataclass(frozen=True)
class SnapSettings:
    still: StillSettings
    receive: ReceiveSettings
    still_tool: StillTool = StillTool.AUTO
    laptop_ip: str | None = None
    count: int = 1
    # From the start of one capture to the start of the next; 0 = back to back.
    interval_s: float = 0.0
    # `--name` template with {counter} fields (checked by stills.build_image_names); None = `<uuid>.<ext>`.
    name_template: str | None = None
    # As RecordSettings.remember_pi.
    remember_pi: bool = True
