"""Parse raspivid and rpicam-vid / libcamera-vid command lines the way the real tools do (pure).

Two option languages, two parsers, one result (`SimOptions`):

- `parse_legacy_args` follows userland's RaspiVid.c over RaspiCLI (raspicli.py): `--bitrate` and `-b`
  work, `-bitrate` is "Invalid command line option (-bitrate)". `parse_raspividyuv_args` is RaspiVidYUV.c,
  the same language with its own table (no encoder: no -b, -ih, -g, -cd; -y and -rgb pick the raw format).
- `parse_rpicam_args` follows rpicam-apps' core/options.cpp over boost::program_options (boost_cli.py), with
  the option table of the simulated release and build (profile.py): an option that release did not have
  is "unrecognised option '--low-latency'", exactly as the real tool says.

Both raise `SimUsageError(message)` with the exact line the real tool prints (minus rpicam's ERROR frame).
`args` never includes the program name. The tables are the tools' complete tables (see
/work/shared/reference/options/); tests check them against those files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from orchestrator.sim.boost_cli import Kind as Kind  # re-exported: callers and tests know it from here
from orchestrator.sim.boost_cli import (
    RpicamOption,
    build_boost_help,
    check_common,
    find_long_in,
    flag,
    option_table,
    parse_bitrate,
    parse_timeout_ms,
    store,
)
from orchestrator.sim.profile import PiProfile
from orchestrator.sim.raspicli import (
    RASPIVID_SOURCES,
    RASPIVIDYUV_SOURCES,
    LegacyOption,
    build_legacy_help,
    find_in,
    invalid,
    legacy_table,
    scan_c_int,
    scan_c_uint,
    stdout_or_file,
    walk_legacy_args,
)
from orchestrator.sim.raspicli import SimUsageError as SimUsageError

LEGACY_TOOLS = ("raspivid", "raspividyuv")
RPICAM_TOOLS = ("rpicam-vid", "libcamera-vid")

# raspivid's compiled-in defaults (RaspiVid.c default_status; main() turns timeout -1 into 5000).
LEGACY_DEFAULT_WIDTH = 1920
LEGACY_DEFAULT_HEIGHT = 1080
LEGACY_DEFAULT_BITRATE = 17_000_000
LEGACY_DEFAULT_FRAMERATE = 30
LEGACY_DEFAULT_TIMEOUT_MS = 5000
# RaspiVid.c create_encoder_component: the firmware encoder takes at most this at H.264 level 4 (and for
# MJPEG), 62.5 Mbit/s at levels 4.1/4.2; raspivid lowers a higher request and says so.
LEGACY_MAX_BITRATE_LEVEL4 = 25_000_000
LEGACY_MAX_BITRATE_LEVEL42 = 62_500_000
# ... and refuses more macroblocks a second than level 4.2 allows (raising the level itself above level 4's).
LEGACY_MAX_MACROBLOCKS_PER_S = 522_240

# rpicam-vid: width/height 0 become 640x480 (OptsInternal::ParseVideo); DEFAULT_FRAMERATE in options.hpp.
RPICAM_DEFAULT_WIDTH = 640
RPICAM_DEFAULT_HEIGHT = 480
RPICAM_DEFAULT_FRAMERATE = 30.0
RPICAM_DEFAULT_TIMEOUT = "5sec"
# H.264 level 4.0's limit in macroblocks/s (ParseVideo raises the level above it, from 1.2.0).
LEVEL4_MACROBLOCKS_PER_S = 245_760

LEGACY_OPTIONS: tuple[LegacyOption, ...] = legacy_table(RASPIVID_SOURCES)
RASPIVIDYUV_OPTIONS: tuple[LegacyOption, ...] = legacy_table(RASPIVIDYUV_SOURCES)
# rpicam-vid's table in the newest release, libav build (the reference table).
RPICAM_OPTIONS: tuple[RpicamOption, ...] = option_table("video")

_LEGACY_PROFILES = ("baseline", "main", "high")
_LEGACY_LEVELS = ("4", "4.1", "4.2")
_LEGACY_RAW_FORMATS = ("yuv", "rgb", "gray")
# Options whose value RaspiVid.c / RaspiCommonSettings.c read with sscanf("%u") and refuse when it fails.
_LEGACY_UINT_OPTIONS = {"width", "height", "bitrate", "framerate", "intra", "qp", "segment", "wrap", "start",
                        "camselect"}


class Dialect(Enum):
    LEGACY = "legacy"
    RPICAM = "rpicam"


def dialect_for(tool: str) -> Dialect:
    """Which option language a tool name speaks; ValueError for a tool the simulator does not play."""
    if tool in LEGACY_TOOLS:
        return Dialect.LEGACY
    if tool in RPICAM_TOOLS:
        return Dialect.RPICAM
    raise ValueError(f"not a simulated camera tool: {tool!r} (known: {', '.join(LEGACY_TOOLS + RPICAM_TOOLS)})")


@dataclass(frozen=True)
class SimOptions:
    """What the simulator needs from a camera command line, with the tool's defaults filled in.

    `output`: None = no output (the real tools then run the camera and save nothing), "-" = stdout.
    `bitrate`: bits/s; 0 = not set (rpicam's default) and the simulator sends the clip at its own rate.
    `timeout_ms`: 0 = run until a signal; below 0 = stop at once. `frames`: rpicam's --frames, 0 = not set;
    overrides the timeout. `intra`: requested I-frame period (0 = not set; raspivid's `-g 0`, one IDR only,
    shows as "intra" in `given`). `codec`: h264, mjpeg, yuv420, libav (rpicam); for raspividyuv the raw
    format it writes: i420, rgb24 or luma. `quality`: rpicam's --quality (MJPEG), None = not set.
    `notices`: lines the tool prints on stderr while parsing. With show_help / show_version set (rpicam),
    the other fields are not filled in: the tool prints and exits before it looks at them.
    """

    tool: str
    width: int
    height: int
    framerate: float
    bitrate: int
    timeout_ms: int
    output: str | None = None
    inline_headers: bool = False
    intra: int = 0
    codec: str = "h264"
    quality: int | None = None
    profile: str | None = None
    level: str | None = None
    frames: int = 0
    nopreview: bool = False
    vflip: bool = False
    hflip: bool = False
    flush: bool = False
    listen: bool = False
    verbose: int = 0
    save_pts: str | None = None
    segment_ms: int = 0
    show_help: bool = False
    show_version: bool = False
    list_cameras: bool = False
    # rpicam's libav encoder settings (and the options it refuses on non-elementary streams)
    libav_format: str = ""
    libav_video_codec: str = "h264_v4l2m2m"
    low_latency: bool = False
    split: bool = False
    circular: bool = False
    pause: bool = False
    notices: tuple[str, ...] = ()
    # Long names of every option given, in order (rpicam: canonical names after abbreviation).
    given: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------------------------------------
# Legacy (raspivid)
# --------------------------------------------------------------------------------------------------------


def find_legacy_option(word: str) -> LegacyOption | None:
    """RaspiCLI's raspicli_get_command_id over raspivid's tables."""
    return find_in(LEGACY_OPTIONS, word)


def parse_legacy_args(args: Sequence[str], tool: str = "raspivid") -> SimOptions:
    """Parse raspivid options (program name excluded). `-?`/`--help` stops parsing like the real tool,
    which prints its help the moment it meets the option."""
    values, given = walk_legacy_args(LEGACY_OPTIONS, args, _apply_legacy_option)
    return _legacy_result(tool, values, given)


def parse_raspividyuv_args(args: Sequence[str], tool: str = "raspividyuv") -> SimOptions:
    """RaspiVidYUV.c parse_cmdline: raspivid's language and defaults (1920x1080, 30 fps, 5 s) without the
    encoder's options; the frames are I420, or RGB24 with -rgb, or the Y plane alone with -y."""
    values, given = walk_legacy_args(RASPIVIDYUV_OPTIONS, args, _apply_raspividyuv_option)
    codec = "rgb24" if values.get("rgb") else "luma" if values.get("luma") else "i420"
    plain = _legacy_result(tool, values, given)
    return replace(plain, codec=codec, bitrate=0, inline_headers=False, profile=None, level=None)


def _apply_raspividyuv_option(option: LegacyOption, word: str, value: str | None, values: dict[str, object]) -> int:
    # The two raw formats exclude each other; the tool says so, then names the option it stopped at.
    other = {"luma": "rgb", "rgb": "luma"}.get(option.long)
    if other is not None and values.get(other):
        raise SimUsageError(f"--luma and --rgb are mutually exclusive\nInvalid command line option ({word})")
    return _apply_legacy_option(option, word, value, values)


def _store_text(values: dict[str, object], name: str, word: str, value: str | None, choices: Sequence[str]) -> int:
    # -cd and -rf: RaspiVid.c has already stepped past the value when it notices a bad one, so it names the value
    assert value is not None  # params > 0 was checked by the caller
    if value == "":
        raise invalid(word)
    if value not in choices:
        raise invalid(value)
    values[name] = value
    return 1


def _apply_legacy_option(option: LegacyOption, word: str, value: str | None, values: dict[str, object]) -> int:
    """Store one option's effect in `values`; return how many following words it consumed."""
    name = option.long
    if name in _LEGACY_UINT_OPTIONS or name in ("timeout", "mode"):
        assert value is not None  # params > 0 was checked by the caller
        number = scan_c_int(value) if name == "timeout" else scan_c_uint(value)
        if number is None:
            raise invalid(word)
        values[name] = number
        if name == "segment":
            values["inline"] = True  # RaspiVid.c: segmenting needs inline headers, so it forces them on
        return 1
    if name in ("output", "vectors", "save-pts", "raw"):
        if not value:
            raise invalid(word)
        values[name] = value
        return 1
    if name == "codec":
        return _store_text(values, name, word, value, ("H264", "MJPEG"))
    if name == "raw-format":
        return _store_text(values, name, word, value, _LEGACY_RAW_FORMATS)
    if name in ("profile", "level"):
        assert value is not None
        known, fallback = (_LEGACY_PROFILES, "high") if name == "profile" else (_LEGACY_LEVELS, "4")
        values[name] = value if value in known else fallback  # an unknown one silently becomes the default
        return 1
    if name == "timed":
        # The table says 0 values but the code reads "on,off" from the next word (and would crash
        # reading past the end of argv; refusing is the polite version).
        if value is None or not re.match(r"\s*[+-]?\d+,\s*[+-]?\d+", value):
            raise invalid(word)
        return 1
    if name == "demo":
        # The table says 1 value but the code only takes the next word if it is not another option.
        if value is not None and not value.startswith("-"):
            if scan_c_uint(value) is None:
                raise invalid(word)
            return 1
        return 0
    if name == "slices":
        slices = scan_c_int(value or "")
        if slices is None or slices <= 0:
            raise invalid(word)
        return 1
    if option.params > 0:
        values[name] = value  # camera-control and preview options sscanf their value without checking it
        return 1
    values[name] = True
    return 0


def _legacy_result(tool: str, values: dict[str, object], given: tuple[str, ...]) -> SimOptions:
    def number(name: str, default: int) -> int:
        value = values.get(name, default)
        assert isinstance(value, int)
        return value

    def text(name: str) -> str | None:
        value = values.get(name)
        return value if isinstance(value, str) else None

    timeout = number("timeout", -1)
    framerate = number("framerate", LEGACY_DEFAULT_FRAMERATE)
    return SimOptions(
        tool=tool,
        width=number("width", LEGACY_DEFAULT_WIDTH),
        height=number("height", LEGACY_DEFAULT_HEIGHT),
        framerate=float(framerate if framerate > 0 else LEGACY_DEFAULT_FRAMERATE),
        bitrate=number("bitrate", LEGACY_DEFAULT_BITRATE),
        timeout_ms=LEGACY_DEFAULT_TIMEOUT_MS if timeout == -1 else timeout,
        output=stdout_or_file(values),
        # -sg and -sp force inline headers on (RaspiVid.c), -ih asks for them.
        inline_headers=bool(values.get("inline") or values.get("split")),
        intra=number("intra", 0),
        codec=(text("codec") or "H264").lower(),
        profile=text("profile") or "high",
        level=text("level") or "4",
        nopreview=bool(values.get("nopreview")),
        vflip=bool(values.get("vflip")),
        hflip=bool(values.get("hflip")),
        flush=bool(values.get("flush")),
        listen=bool(values.get("listen")),
        verbose=1 if values.get("verbose") else 0,
        save_pts=text("save-pts"),
        segment_ms=number("segment", 0),
        show_help=bool(values.get("help")),
        given=given,
    )


def effective_legacy_bitrate(options: SimOptions) -> tuple[int, str | None]:
    """The bitrate raspivid's encoder really gets, and the line it prints when it lowers the request. The
    cap follows the level asked for (-lev), before raspivid raises the level for a high macroblock rate."""
    limit = LEGACY_MAX_BITRATE_LEVEL4
    if options.codec == "h264" and options.level in ("4.1", "4.2"):
        limit = LEGACY_MAX_BITRATE_LEVEL42
    if options.bitrate <= limit:
        return options.bitrate, None
    return limit, f"Bitrate too high: Reducing to {limit / 1e6:g}MBit/s"


def legacy_macroblocks_per_s(options: SimOptions) -> float:
    """VCOS_ALIGN_UP(width, 16) / 16 * VCOS_ALIGN_UP(height, 16) / 16 * framerate, as RaspiVid.c counts."""
    return ((options.width + 15) >> 4) * ((options.height + 15) >> 4) * options.framerate


def legacy_run_ms(timeout_ms: int) -> int:
    """How long raspivid records for -t: pause_and_test_abort sleeps in 100 ms steps (ABORT_INTERVAL) while
    the time waited is below the timeout, so it rounds up to the next 100 ms; below 0 it does not wait."""
    return -(-timeout_ms // 100) * 100 if timeout_ms > 0 else timeout_ms


# --------------------------------------------------------------------------------------------------------
# rpicam-vid / libcamera-vid (boost::program_options)
# --------------------------------------------------------------------------------------------------------


def _to_uint(text: str) -> int:
    return int(text) % 2**32  # lexical_cast<unsigned> wraps a minus sign around like C


def parse_rpicam_args(args: Sequence[str], tool: str = "rpicam-vid", pi: PiProfile | None = None) -> SimOptions:
    """Parse rpicam-vid / libcamera-vid options (program name excluded) with the option table of the Pi's
    release and build, in the order the real tool checks them: syntax and value types, --help (before the
    time strings from 1.8.0, after them before), time strings, --version, then the video options."""
    pi = pi or PiProfile()
    table = option_table("video", pi.version, pi.libav)
    seen = store(table, args)
    help_first = pi.version >= (1, 8, 0)
    if help_first and flag(seen, "help"):
        return SimOptions(tool, 0, 0, 0.0, 0, 0, show_help=True, given=tuple(seen))
    timeout_ms = parse_timeout_ms(seen, table, RPICAM_DEFAULT_TIMEOUT)
    if flag(seen, "help") or flag(seen, "version"):
        return SimOptions(tool, 0, 0, 0.0, 0, timeout_ms, show_help=flag(seen, "help"),
                          show_version=flag(seen, "version"), given=tuple(seen))
    check_common(table, seen)
    # OptsInternal::ParseVideo (VideoOptions::Parse before 1.8.0)
    bitrate_text = seen.get("bitrate", "0")
    bitrate = _to_uint(bitrate_text) if find_long_in(table, "bitrate").ctype == "uint" else parse_bitrate(bitrate_text)
    codec = seen.get("codec", "h264").lower()
    if codec not in ("h264", "libav", "yuv420", "mjpeg"):
        raise SimUsageError(f"unrecognised codec {seen.get('codec')}")
    initial = seen.get("initial", "record").lower()
    if initial not in ("record", "pause"):
        raise SimUsageError(f"incorrect initial value {seen.get('initial')}")
    framerate = float(seen.get("framerate", "-1"))
    framerate = framerate if framerate > 0 else RPICAM_DEFAULT_FRAMERATE
    width = _to_uint(seen.get("width", "0")) or RPICAM_DEFAULT_WIDTH
    height = _to_uint(seen.get("height", "0")) or RPICAM_DEFAULT_HEIGHT
    verbose = _to_uint(seen.get("verbose", "1"))
    libav_codec = seen.get("libav-video-codec", "h264_v4l2m2m")
    notices: tuple[str, ...] = ()
    macroblocks = ((width + 15) >> 4) * ((height + 15) >> 4) * framerate
    x264 = codec == "h264" or (codec == "libav" and libav_codec == "libx264")
    if pi.version >= (1, 2, 0) and x264 and macroblocks > LEVEL4_MACROBLOCKS_PER_S and verbose >= 1:
        notices = ("Overriding H.264 level 4.2",)
    return SimOptions(
        tool=tool,
        width=width,
        height=height,
        framerate=framerate,
        bitrate=bitrate,
        timeout_ms=timeout_ms,
        output=seen.get("output"),
        inline_headers=flag(seen, "inline"),
        intra=_to_uint(seen.get("intra", "0")),
        codec=codec,
        quality=int(seen["quality"]) if "quality" in seen else None,
        profile=seen.get("profile"),
        level=seen.get("level"),
        frames=_to_uint(seen.get("frames", "0")),
        nopreview=flag(seen, "nopreview"),
        vflip=flag(seen, "vflip"),
        hflip=flag(seen, "hflip"),
        flush=flag(seen, "flush"),
        listen=flag(seen, "listen"),
        verbose=verbose,
        save_pts=seen.get("save-pts"),
        segment_ms=_to_uint(seen.get("segment", "0")),
        list_cameras=flag(seen, "list-cameras"),
        libav_format=seen.get("libav-format", ""),
        libav_video_codec=libav_codec,
        low_latency=flag(seen, "low-latency"),
        split=flag(seen, "split"),
        circular="circular" in seen and int(seen["circular"]) > 0,
        pause=initial == "pause",
        notices=notices,
        given=tuple(seen),
    )


def parse_args(tool: str, args: Sequence[str], pi: PiProfile | None = None) -> SimOptions:
    """Parse `args` in the language of `tool` (ValueError for an unknown tool)."""
    if tool == "raspividyuv":
        return parse_raspividyuv_args(args, tool)
    if dialect_for(tool) is Dialect.LEGACY:
        return parse_legacy_args(args, tool)
    return parse_rpicam_args(args, tool, pi)


def build_raspivid_help(tool: str) -> str:
    if tool == "raspividyuv":
        return build_legacy_help(tool, RASPIVIDYUV_OPTIONS, "Display camera output to display, and optionally "
                                 "saves an uncompressed YUV420 or RGB file ")
    headline = "Display camera output to display, and optionally saves an H264 capture at requested bitrate"
    return build_legacy_help(tool, LEGACY_OPTIONS, headline)


def build_rpicam_help(pi: PiProfile | None = None) -> str:
    """rpicam-vid --help for the Pi's release and build (boost's listing, without the descriptions)."""
    pi = pi or PiProfile()
    return build_boost_help(option_table("video", pi.version, pi.libav),
                            "(piorch camera simulator: plays a recorded test clip instead of a camera)")

