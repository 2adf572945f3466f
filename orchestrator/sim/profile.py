"""Which Raspberry Pi the simulator plays: board, rpicam-apps build and release, from the shim's environment.

  PIORCH_SIM_BOARD=pi4|pi5      pi4 (default): VideoCore IV/VI, hardware H.264 encoder, legacy tools possible.
                                pi5: no H.264 hardware (rpicam-vid encodes H.264 with libx264 through libav),
                                no legacy camera stack (no raspivid/raspividyuv/raspistill/raspiyuv).
  PIORCH_SIM_BUILD=full|lite    full (default): rpicam-apps with libav. lite: rpicam-apps-lite (before 1.8.1) or
                                rpicam-apps-core alone (1.8.1 on): no libav encoder, hence no H.264 on a Pi 5.
  PIORCH_SIM_VERSION=1.13.0     the rpicam-apps (libcamera-apps before 1.4.0) release: its option tables, its
                                tool names, its messages and its --version text. Unset: the newest release's
                                tables and messages, with every tool name installed (the simulator as it
                                always was: raspivid, libcamera-vid and rpicam-vid side by side).

Release facts (github.com/raspberrypi/rpicam-apps tags and debian/changelog): the apps were renamed
rpicam-* in 1.4.0 and kept libcamera-* symlinks until 1.8.0 removed them (apps/meson.build); the Pi 5
came with Bookworm, whose first package was libcamera-apps 1.2.2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from orchestrator.sim.boost_cli import NEWEST, Version, parse_version

ENV_BOARD = "PIORCH_SIM_BOARD"
ENV_BUILD = "PIORCH_SIM_BUILD"
ENV_VERSION = "PIORCH_SIM_VERSION"

RENAMED_RPICAM: Version = (1, 4, 0)  # rpicam-vid appears; libcamera-vid becomes a symlink to it
OLD_NAMES_REMOVED: Version = (1, 8, 0)  # the libcamera-* symlinks are gone
FIRST_PI5_RELEASE: Version = (1, 2, 2)
VERSION_NUMBER_IN_BUILD_LINE: Version = (1, 5, 2)  # utils/version.py prints "v1.5.2 <commit> <date>" from here
CAPABILITIES_LINE: Version = (1, 5, 3)  # "rpicam-apps capabilites: ..." (sic) from here

# Every release: its tag's commit (12 digits, as utils/version.py prints it) and its date.
_RELEASES = """
1.0.0 b89cc36c3872 18-10-2022 (10:56:42); 1.0.1 73ab09fcf408 09-11-2022 (10:56:30)
1.0.2 9c5d3191b3f4 01-12-2022 (16:13:22); 1.1.0 4fea2eed6830 04-01-2023 (15:27:12)
1.1.1 9f08463997b8 25-01-2023 (11:24:48); 1.1.2 54a781dffdd1 01-03-2023 (08:44:41)
1.2.0 8c94e5703e4b 28-06-2023 (10:29:09); 1.2.1 7e4d3d71867f 11-07-2023 (10:42:39)
1.2.2 83e5ae54bfc1 28-09-2023 (12:41:16); 1.3.0 f8b05c47894c 20-10-2023 (07:50:35)
1.4.0 dd744cb385e2 15-11-2023 (15:42:38); 1.4.1 f74361ee6a56 23-11-2023 (14:34:42)
1.4.2 9ae39f85ae6b 30-01-2024 (10:23:29); 1.4.3 6202c09b2bfa 16-02-2024 (09:01:34)
1.4.4 414a7383464b 18-04-2024 (09:16:33); 1.5.0 49344f2a8d18 30-05-2024 (15:07:17)
1.5.1 d7a1a13b041e 05-09-2024 (13:30:38); 1.5.2 a8ccf9f3cd9d 28-09-2024 (09:17:27)
1.5.3 50958df98d3c 12-11-2024 (11:29:27); 1.6.0 025ca84648c9 27-01-2025 (14:31:36)
1.7.0 5a3f5965aca9 28-04-2025 (13:31:19); 1.8.0 b4b6d1faf533 07-07-2025 (09:56:38)
1.8.1 eb293b055248 16-07-2025 (13:30:17); 1.9.0 eca9928b76c1 03-09-2025 (11:12:24)
1.9.1 6782818adcb8 09-10-2025 (12:00:17); 1.10.0 24906da670e9 24-10-2025 (08:05:03)
1.10.1 59fd439cfbba 27-11-2025 (16:15:40); 1.11.0 d92a65175b4b 18-12-2025 (13:21:00)
1.11.1 2ebb5820566f 02-02-2026 (11:29:42); 1.12.0 f5174e5099fd 29-04-2026 (10:10:45)
1.13.0 6fcb0a381071 07-08-2026 (09:11:11)
"""
RELEASES: dict[Version, str] = {
    parse_version(entry.split()[0]): entry.split(maxsplit=1)[1]
    for entry in _RELEASES.replace("\n", ";").split(";")
    if entry.strip()
}
LIBCAMERA_BUILD = "v0.3.0+piorch-simulator"


class Board(str, Enum):
    PI4 = "pi4"
    PI5 = "pi5"


class Build(str, Enum):
    FULL = "full"
    LITE = "lite"


LEGACY_TOOL_NAMES = ("raspivid", "raspividyuv", "raspistill", "raspiyuv")
SENSOR_IDS = {
    Board.PI4: "/base/soc/i2c0mux/i2c@1/imx219@10",
    Board.PI5: "/base/axi/pcie@120000/rp1/i2c@88000/imx219@10",
}


@dataclass(frozen=True)
class PiProfile:
    board: Board = Board.PI4
    build: Build = Build.FULL
    version: Version = NEWEST
    pinned: bool = False  # PIORCH_SIM_VERSION was set: tool names follow that release

    @property
    def libav(self) -> bool:
        return self.build is Build.FULL

    @property
    def hardware_h264(self) -> bool:
        """Platform::VC4 in rpicam-apps: every Pi before the 5 has the bcm2835 H.264 encoder."""
        return self.board is Board.PI4

    @property
    def sensor_id(self) -> str:
        return SENSOR_IDS[self.board]

    def describe(self) -> str:
        version = ".".join(map(str, self.version)) if self.pinned else "newest, every name"
        return f"{ENV_BOARD}={self.board.value} {ENV_BUILD}={self.build.value} rpicam-apps {version}"

    def has_tool(self, tool: str) -> bool:
        """Whether `tool` exists on this Pi (`command -v` finds it)."""
        if tool in LEGACY_TOOL_NAMES:
            return self.board is Board.PI4  # the Pi 5 runs only Bookworm and later: no MMAL, no raspivid
        if not self.pinned:
            return True
        if tool.startswith("rpicam-"):
            return self.version >= RENAMED_RPICAM
        if tool.startswith("libcamera-"):
            return self.version < OLD_NAMES_REMOVED
        return True


def _choice(env: Mapping[str, str], name: str, enum: type[Board] | type[Build]) -> Board | Build:
    text = env.get(name) or enum.__members__[next(iter(enum.__members__))].value
    try:
        return enum(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected {' or '.join(member.value for member in enum)}") from None


def profile_from_env(env: Mapping[str, str]) -> PiProfile:
    """The Pi the environment describes; ValueError (naming the variable) for one that never existed."""
    board = _choice(env, ENV_BOARD, Board)
    build = _choice(env, ENV_BUILD, Build)
    assert isinstance(board, Board) and isinstance(build, Build)
    text = env.get(ENV_VERSION)
    if not text:
        return PiProfile(board, build)
    try:
        version = parse_version(text)
    except ValueError as error:
        raise ValueError(f"{ENV_VERSION}: {error}") from None
    if version not in RELEASES:
        known = ", ".join(".".join(map(str, release)) for release in RELEASES)
        raise ValueError(f"{ENV_VERSION}={text}: not an rpicam-apps release (known: {known})")
    if board is Board.PI5 and version < FIRST_PI5_RELEASE:
        raise ValueError(
            f"{ENV_BOARD}=pi5 with {ENV_VERSION}={text}: no such Pi (the Pi 5 came with Bookworm, "
            "whose first camera apps were libcamera-apps 1.2.2)"
        )
    return PiProfile(board, build, version, pinned=True)


def build_version_text(profile: PiProfile) -> str:
    """What `rpicam-vid --version` prints (core/options.cpp, utils/version.py, core/version.cpp.in)."""
    stamp = RELEASES.get(profile.version, RELEASES[NEWEST])
    number = "v" + ".".join(map(str, profile.version))
    if profile.version < RENAMED_RPICAM:
        lines = [f"libcamera-apps build: {stamp}"]
    elif profile.version < VERSION_NUMBER_IN_BUILD_LINE:
        lines = [f"rpicam-apps build: {stamp}"]
    else:
        lines = [f"rpicam-apps build: {number} {stamp}"]
    if profile.version >= CAPABILITIES_LINE:
        # rpicam-apps-lite (and rpicam-apps-core alone, from 1.8.1) has the DRM preview only, and no libav
        gui = 1 if profile.libav else 0
        lines.append(f"rpicam-apps capabilites: egl:{gui} qt:{gui} drm:1 libav:{int(profile.libav)}")
    lines.append(f"libcamera build: {LIBCAMERA_BUILD}")
    return "\n".join(lines) + "\n"
