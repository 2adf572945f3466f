"""Frozen settings objects: what the CLI hands to the core, after every value was checked."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


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


@dataclass(frozen=True)
class SshSettings:
    target: str
    ssh_config: Path | None = None
    accept_new_host_key: bool = False
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class RecordSettings:
    camera: CameraSettings
    receive: ReceiveSettings
    camera_tool: CameraTool = CameraTool.AUTO
    # Where the Pi sends; None means "the local address of the SSH connection".
    laptop_ip: str | None = None
