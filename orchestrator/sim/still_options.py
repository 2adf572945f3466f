"""Parse raspistill, raspiyuv and rpicam-still / libcamera-still command lines the way the real tools do (pure).

The still twin of options.py, on the same machinery: raspistill is RaspiStill.c's parse_cmdline over RaspiCLI
(raspicli.py; its own table, then the camera-control, common-settings and preview tables it shares with
raspivid, then RaspiTex.c); raspiyuv is RaspiStillYUV.c over the same tables (its own first, no RaspiTex.c);
rpicam-still is boost::program_options (boost_cli.py) over core/options.cpp and
core/still_options.hpp in the simulated release, then ParseStill's checks. Errors are `SimUsageError` with
the real tool's line. The tables are the tools' complete tables (see /work/shared/reference/options/).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.sim.boost_cli import (
    RpicamOption,
    check_common,
    flag,
    option_table,
    parse_time_ms,
    parse_timeout_ms,
    store,
)
from orchestrator.sim.options import Dialect
from orchestrator.sim.profile import PiProfile
from orchestrator.sim.raspicli import (
    RASPISTILL_SOURCES,
    RASPIYUV_SOURCES,
    LegacyOption,
    SimUsageError,
    invalid,
    legacy_table,
    scan_c_int,
    scan_c_uint,
    stdout_or_file,
    walk_legacy_args,
)

LEGACY_STILL_TOOLS = ("raspistill", "raspiyuv")
RPICAM_STILL_TOOLS = ("rpicam-still", "libcamera-still")
LEGACY_ENCODINGS = ("jpg", "bmp", "gif", "png", "ppm", "tga")  # RaspiStill.c encoding_xref, strcmp
RPICAM_ENCODINGS = ("jpg", "yuv420", "rgb", "rgb24", "rgb48", "png", "bmp")  # ParseStill, strcasecmp
LEGACY_DEFAULT_QUALITY = 85  # RaspiStill.c default_status
RPICAM_DEFAULT_QUALITY = 93  # still_options.hpp
LEGACY_DEFAULT_TIMEOUT_MS = 5000
RPICAM_DEFAULT_TIMEOUT = "5sec"

RASPISTILL_OPTIONS: tuple[LegacyOption, ...] = legacy_table(RASPISTILL_SOURCES)
RASPIYUV_OPTIONS: tuple[LegacyOption, ...] = legacy_table(RASPIYUV_SOURCES)
# rpicam-still's table in the newest release (core/options.cpp, then still_options.hpp).
RPICAM_STILL_OPTIONS: tuple[RpicamOption, ...] = option_table("still")
_RASPISTILL_UINT = {"width", "height", "quality", "timelapse", "camselect", "mode", "framestart", "restart"}


def dialect_for_still(tool: str) -> Dialect:
    if tool in LEGACY_STILL_TOOLS:
        return Dialect.LEGACY
    if tool in RPICAM_STILL_TOOLS:
        return Dialect.RPICAM
    known = ", ".join(LEGACY_STILL_TOOLS + RPICAM_STILL_TOOLS)
    raise ValueError(f"not a simulated still tool: {tool!r} (known: {known})")


@dataclass(frozen=True)
class StillOptions:
    """What the simulator needs from a still command line. `output`: None = save nothing, "-" = stdout.
    `encoding`: the tool's own name for it (rpicam's "rgb" becomes "rgb24", as ParseStill does); for
    raspiyuv the raw format: i420, rgb24, bgr24 or luma. `width`/`height`: 0 = the sensor's.
    `quality`: the JPEG quality. `notices`: lines the tool prints while parsing.
    `timeout_ms`: 0 = run until a signal (no picture), as both tools do without -k/-s/timelapse."""

    tool: str
    encoding: str = "jpg"
    timeout_ms: int = LEGACY_DEFAULT_TIMEOUT_MS
    output: str | None = None
    width: int = 0
    height: int = 0
    quality: int = LEGACY_DEFAULT_QUALITY
    nopreview: bool = False
    vflip: bool = False
    hflip: bool = False
    timelapse: bool = False
    keypress: bool = False
    signal: bool = False
    demo: bool = False
    show_help: bool = False
    show_version: bool = False
    list_cameras: bool = False
    notices: tuple[str, ...] = ()
    given: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------- raspistill


def parse_raspistill_args(args: Sequence[str], tool: str = "raspistill") -> StillOptions:
    """RaspiStill.c parse_cmdline over RaspiCLI; the message names the word being parsed when it fails."""
    values, given = walk_legacy_args(RASPISTILL_OPTIONS, args, _apply_raspistill_option)
    quality = int(str(values.get("quality", LEGACY_DEFAULT_QUALITY)))
    return StillOptions(
        tool=tool,
        encoding=str(values.get("encoding", "jpg")),
        quality=min(quality, 100),
        notices=("Setting max quality = 100",) if quality > 100 else (),
        timeout_ms=max(int(str(values.get("timeout", LEGACY_DEFAULT_TIMEOUT_MS))), 0),
        output=stdout_or_file(values),
        width=int(str(values.get("width", 0))),
        height=int(str(values.get("height", 0))),
        nopreview=bool(values.get("nopreview")),
        vflip=bool(values.get("vflip")),
        hflip=bool(values.get("hflip")),
        timelapse="timelapse" in values,
        keypress=bool(values.get("keypress")),
        signal=bool(values.get("signal")),
        demo=bool(values.get("demo")),
        show_help=bool(values.get("help")),
        given=given,
    )


def parse_raspiyuv_args(args: Sequence[str], tool: str = "raspiyuv") -> StillOptions:
    """RaspiStillYUV.c parse_cmdline: raspistill's language with its own table; the picture is I420, or RGB24
    (-rgb), BGR24 (-bgr) or the Y plane (-y)."""
    values, given = walk_legacy_args(RASPIYUV_OPTIONS, args, _apply_raspiyuv_option)
    return StillOptions(
        tool=tool,
        encoding="luma" if values.get("luma") else str(values.get("raw", "i420")),
        timeout_ms=max(int(str(values.get("timeout", LEGACY_DEFAULT_TIMEOUT_MS))), 0),
        output=stdout_or_file(values),
        width=int(str(values.get("width", 0))),
        height=int(str(values.get("height", 0))),
        nopreview=bool(values.get("nopreview")),
        vflip=bool(values.get("vflip")),
        hflip=bool(values.get("hflip")),
        timelapse="timelapse" in values,
        keypress=bool(values.get("keypress")),
        signal=bool(values.get("signal")),
        show_help=bool(values.get("help")),
        given=given,
    )


def _apply_raspiyuv_option(option: LegacyOption, word: str, value: str | None, values: dict[str, object]) -> int:
    # -y excludes -rgb and -bgr: the tool prints why, then names the option it stopped at.
    if option.long in ("rgb", "bgr"):
        if values.get("luma"):
            raise SimUsageError(f"--luma and --rgb/--bgr are mutually exclusive\nInvalid command line option ({word})")
        values["raw"] = option.long + "24"  # the last of -rgb / -bgr wins
        return 0
    if option.long == "luma" and "raw" in values:
        raise SimUsageError(f"--luma and --rgb are mutually exclusive\nInvalid command line option ({word})")
    return _apply_raspistill_option(option, word, value, values)


def _apply_raspistill_option(option: LegacyOption, word: str, value: str | None, values: dict[str, object]) -> int:
    """Store one option's effect; return how many following words it consumed."""
    name = option.long
    if name in _RASPISTILL_UINT or name == "timeout":
        assert value is not None  # params > 0 was checked by the caller
        number = scan_c_int(value) if name == "timeout" else scan_c_uint(value)
        if number is None:
            raise invalid(word)
        values[name] = number
        return 1
    if name == "encoding":
        assert value is not None
        if value not in LEGACY_ENCODINGS:
            raise invalid(word)  # `valid = 0` before `i++`: the message names -e itself
        values[name] = value
        return 1
    if name in ("output", "latest", "exif"):
        if not value:
            raise invalid(word)
        values[name] = value
        return 1
    if name == "demo":
        # The table says no value, but the code takes the next word as the interval if it is no option.
        values[name] = True
        if value is not None and not value.startswith("-"):
            if scan_c_uint(value) is None:
                raise invalid(word)
            return 1
        return 0
    if option.params > 0:
        values[name] = value  # camera-control, preview and GL values are sscanf'd without a check
        return 1
    values[name] = True
    return 0


# ------------------------------------------------------------------------------- rpicam-still (boost)


def parse_rpicam_still_args(args: Sequence[str], tool: str = "rpicam-still", pi: PiProfile | None = None
                            ) -> StillOptions:
    """Options::Parse then StillOptions' ParseStill, in the order the real tool checks."""
    pi = pi or PiProfile()
    table = option_table("still", pi.version, pi.libav)
    seen = store(table, args)
    if pi.version >= (1, 8, 0) and flag(seen, "help"):
        return StillOptions(tool, show_help=True, given=tuple(seen))
    timeout_ms = parse_timeout_ms(seen, table, RPICAM_DEFAULT_TIMEOUT)
    if flag(seen, "help") or flag(seen, "version"):
        return StillOptions(tool, timeout_ms=timeout_ms, show_help=flag(seen, "help"),
                            show_version=flag(seen, "version"), given=tuple(seen))
    check_common(table, seen)
    # ParseStill
    timelapse_text = seen.get("timelapse", "0")
    timelapse_ms = int(timelapse_text) if table_type(table, "timelapse") == "uint" else parse_time_ms(timelapse_text)
    if (flag(seen, "keypress") or flag(seen, "signal")) and timelapse_ms:
        raise SimUsageError("keypress/signal and timelapse options are mutually exclusive")
    thumb = seen.get("thumb", "320:240:70")
    parts = thumb.split(":")
    # sscanf(thumb, "%u:%u:%u") must match three numbers unless the value is "none".
    if thumb.lower() != "none" and (len(parts) < 3 or any(scan_c_uint(part) is None for part in parts[:3])):
        raise SimUsageError(f"bad thumbnail parameters {thumb}")
    encoding = seen.get("encoding", "jpg")
    if encoding.lower() not in RPICAM_ENCODINGS:
        raise SimUsageError(f"invalid encoding format {encoding}")
    return StillOptions(
        tool=tool,
        encoding="rgb24" if encoding.lower() == "rgb" else encoding.lower(),
        quality=int(seen.get("quality", RPICAM_DEFAULT_QUALITY)),
        timeout_ms=max(timeout_ms, 0),
        output=seen.get("output"),
        width=int(seen.get("width", "0")) % 2**32,
        height=int(seen.get("height", "0")) % 2**32,
        nopreview=flag(seen, "nopreview"),
        vflip=flag(seen, "vflip"),
        hflip=flag(seen, "hflip"),
        timelapse=timelapse_ms > 0,
        keypress=flag(seen, "keypress"),
        signal=flag(seen, "signal"),
        list_cameras=flag(seen, "list-cameras"),
        given=tuple(seen),
    )


def table_type(table: Sequence[RpicamOption], name: str) -> str:
    return next(option.ctype for option in table if option.long == name)


def parse_still_args(tool: str, args: Sequence[str], pi: PiProfile | None = None) -> StillOptions:
    if tool == "raspiyuv":
        return parse_raspiyuv_args(args, tool)
    if dialect_for_still(tool) is Dialect.LEGACY:
        return parse_raspistill_args(args, tool)
    return parse_rpicam_still_args(args, tool, pi)
