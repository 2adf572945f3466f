"""What the Pi's camera stack can do, read from what its own tool says (pure).

The probe (pi/scripts.py) asks the libcamera tool that will run for `--version` and `--help`, and reads the
board's device-tree model, in the same round trip as everything else. From those answers:

- the tool's build line. rpicam-apps prints `rpicam-apps build: v1.13.0 0123456789ab 01-01-2025 (10:00:00)`
  (`libcamera-apps build:` before 1.4.0); before 1.5.2 there is no version number in it, only a commit and the
  build date (rpicam-apps utils/version.py, commit f95c7c7). From 1.5.3 a second line says whether libav is
  built in: `rpicam-apps capabilites: egl:1 qt:1 drm:1 libav:1` (the misspelling is the tool's own,
  core/options.cpp).
- the long option names its `--help` lists. boost::program_options prints one option a line, indented two
  spaces: `  -t [ --timeout ] arg (=5sec)` or `  --width arg (=0)`; descriptions that wrap are indented far
  more. An optional option is sent only when the tool lists it, so an older build never gets an option it
  would refuse.
- the board, only a hint: which H.264 encoder the tool will pick depends on the Pi, which the tool does not
  print (see `h264_encoder`).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

# Lengths past which a probe answer is cut: a tool or board that prints more is not what piorch expects.
MAX_BOARD_CHARS = 120
MAX_BUILD_CHARS = 120


class BoardFamily(str, enum.Enum):
    """Raspberry Pi generations by how they encode H.264."""

    VC4 = "vc4"  # Pi 0-4, 400, CM 1-4: the VideoCore hardware encoder
    PISP = "pisp"  # Pi 5, 500, CM5: no hardware H.264 encoder


class H264Encoder(str, enum.Enum):
    HARDWARE = "hardware"  # the VideoCore encoder (Pi 0-4): raspivid, or rpicam-vid on a VC4 Pi
    SOFTWARE = "software"  # libx264 through libav, in rpicam-vid (Pi 5)
    NONE = "none"  # a Pi 5 whose rpicam-apps has no libav (rpicam-apps-lite): no H.264 at all
    UNKNOWN = "unknown"  # board not recognised, or the tool's answers could not be read


# The Pi 5 family first: "Raspberry Pi Compute Module 5" must not fall into the VC4 pattern's
# "Compute Module". Model strings as the firmware writes them: "Raspberry Pi 5 Model B Rev 1.0",
# "Raspberry Pi 4 Model B Rev 1.4", "Raspberry Pi Zero 2 W Rev 1.0", "Raspberry Pi Model B Plus Rev 1.2",
# "Raspberry Pi Compute Module 4 Rev 1.0", "Raspberry Pi 400 Rev 1.0", "Raspberry Pi 500 Rev 1.0".
_PISP_BOARD = re.compile(r"^Raspberry Pi (?:5|500|Compute Module 5)\b")
_VC4_BOARD = re.compile(r"^Raspberry Pi (?:Model [AB]\b|[1-4]\b|400\b|Zero\b|Compute Module\b)")


def board_family(model: str | None) -> BoardFamily | None:
    """The generation of a device-tree model string; None for anything else (another board, unreadable)."""
    if not model:
        return None
    if _PISP_BOARD.match(model):
        return BoardFamily.PISP
    if _VC4_BOARD.match(model):
        return BoardFamily.VC4
    return None


def clean_board(text: str) -> str | None:
    """The model line as the probe printed it, cut to a sane length; None when empty."""
    cleaned = "".join(ch for ch in text if ch.isprintable()).strip()[:MAX_BOARD_CHARS]
    return cleaned or None


@dataclass(frozen=True)
class ToolFacts:
    """What one libcamera tool said about itself. raspivid has no `--version`: it gets none of this."""

    tool: str
    # The build line after "build: ", e.g. "v1.13.0 0123456789ab 01-01-2025 (10:00:00)"; None if not printed.
    build: str | None = None
    # (major, minor, patch) when the build line carries a version number (rpicam-apps 1.5.2 and later).
    version: tuple[int, int, int] | None = None
    # The capabilities line's libav:N (1.5.3 and later); None when the tool printed no such line.
    libav_capability: bool | None = None
    # Long option names from `--help`, without the dashes.
    options: frozenset[str] = field(default_factory=frozenset)

    @property
    def help_read(self) -> bool:
        return bool(self.options)

    @property
    def has_libav(self) -> bool | None:
        """Is libav built in? The capabilities line when there is one; before it (up to 1.8.0) the libav
        options are listed only in builds with libav (`#if LIBAV_PRESENT` in core/video_options.hpp);
        None when neither answer could be read."""
        if self.libav_capability is not None:
            return self.libav_capability
        if not self.help_read:
            return None
        return bool({"libav-format", "libav-video-codec"} & self.options)

    @property
    def version_text(self) -> str | None:
        """"1.13.0" when known, else the build line itself (an old build's commit and date)."""
        if self.version is not None:
            return ".".join(str(part) for part in self.version)
        return self.build


_BUILD_LINE = re.compile(r"^\s*(?:rpicam|libcamera)-apps build:\s*(?P<build>.*)$")
_VERSION = re.compile(r"^v(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b")
_CAPABILITIES = re.compile(r"^\s*(?:rpicam|libcamera)-apps capabilit(?:i)?es:\s*(?P<caps>.*)$")
_LIBAV_CAP = re.compile(r"(?:^|\s)libav:([01])(?:\s|$)")
# Two spaces, an optional short form "-x [ ", then the long name. Wrapped descriptions are indented further.
_HELP_OPTION = re.compile(r"^ {1,4}(?:-[A-Za-z0-9] \[ )?--([a-z0-9][a-z0-9-]{0,40})\b")


def parse_tool_version(text: str) -> tuple[str | None, tuple[int, int, int] | None, bool | None]:
    """`--version` output -> (build line, version number, libav capability)."""
    build: str | None = None
    version: tuple[int, int, int] | None = None
    libav: bool | None = None
    for line in text.splitlines():
        if build is None and (match := _BUILD_LINE.match(line)):
            build = "".join(ch for ch in match.group("build") if ch.isprintable()).strip()[:MAX_BUILD_CHARS] or None
            if build and (number := _VERSION.match(build)):
                version = (int(number.group(1)), int(number.group(2)), int(number.group(3)))
        elif libav is None and (match := _CAPABILITIES.match(line)) and (cap := _LIBAV_CAP.search(match["caps"])):
            libav = cap.group(1) == "1"
    return build, version, libav


def parse_help_options(text: str) -> frozenset[str]:
    """The long option names a boost `--help` listing shows."""
    return frozenset(match.group(1) for line in text.splitlines() if (match := _HELP_OPTION.match(line)))


def parse_tool_facts(tool: str, version_text: str, help_text: str) -> ToolFacts:
    build, version, libav = parse_tool_version(version_text)
    return ToolFacts(tool=tool, build=build, version=version, libav_capability=libav,
                     options=parse_help_options(help_text))


def h264_encoder(legacy_tool: bool, board: str | None, facts: ToolFacts | None) -> H264Encoder:
    """Which H.264 encoder the tool will use on this Pi.

    raspivid drives the VideoCore firmware encoder: hardware, always. rpicam-vid (encoder/encoder.cpp,
    h264_codec_select) takes the hardware encoder on a VC4 Pi (1.5 and later: the bcm2835-isp platform;
    before: /dev/video11 being bcm2835-codec-encode, which only Pi 0-4 have), else libx264 through libav when
    libav is built in, else fails with "Unable to find an appropriate H.264 codec". The tool does not print
    the platform, so the board name decides hardware or not; the tool's own answers decide libav.
    """
    if legacy_tool:
        return H264Encoder.HARDWARE
    family = board_family(board)
    if family is BoardFamily.VC4:
        return H264Encoder.HARDWARE
    if family is not BoardFamily.PISP or facts is None:
        return H264Encoder.UNKNOWN
    libav = facts.has_libav
    if libav is None:
        return H264Encoder.UNKNOWN
    return H264Encoder.SOFTWARE if libav else H264Encoder.NONE


@dataclass(frozen=True)
class CameraStack:
    """The board, the chosen tool's facts and the H.264 encoder it will use: for the argv, the refusals,
    doctor and the manifest."""

    board: str | None
    facts: ToolFacts | None
    encoder: H264Encoder

    @property
    def tool_version(self) -> str | None:
        return self.facts.version_text if self.facts else None

    def has_option(self, name: str) -> bool:
        return self.facts is not None and name in self.facts.options


def describe_stack(legacy_tool: bool, board: str | None, facts: ToolFacts | None) -> CameraStack:
    return CameraStack(board=board, facts=facts, encoder=h264_encoder(legacy_tool, board, facts))
