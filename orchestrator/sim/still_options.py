"""Parse raspistill and rpicam-still / libcamera-still command lines the way the real tools do (pure).

The still twin of options.py, built from its machinery: raspistill is RaspiStill.c's parse_cmdline (exactly
one '-' stripped, the rest compared with strcmp to the long name stored as "-encoding" and the short name
"e"; the shared camera-control, common-settings and preview tables are raspivid's, plus RaspiTex.c);
rpicam-still is boost::program_options over core/options.cpp (the common part of the video table) plus
core/still_options.hpp, then ParseStill's checks. Errors are `SimUsageError` with the real tool's line.
The tables are the tools' complete tables (see /work/shared/reference/options/); tests check them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.sim.options import (
    _BOOL_WORDS,
    _RPICAM_CHOICES,
    LEGACY_OPTIONS,
    RPICAM_OPTIONS,
    Dialect,
    Kind,
    LegacyOption,
    RpicamOption,
    SimUsageError,
    _check_value,
    _Given,
    _legacy,
    _rpicam,
    find_long_in,
    is_option_word,
    parse_rpicam_time_ms,
    scan_c_int,
    scan_c_uint,
)

LEGACY_STILL_TOOLS = ("raspistill",)
RPICAM_STILL_TOOLS = ("rpicam-still", "libcamera-still")
LEGACY_ENCODINGS = ("jpg", "bmp", "gif", "png", "ppm", "tga")  # RaspiStill.c encoding_xref, strcmp
RPICAM_ENCODINGS = ("jpg", "yuv420", "rgb", "rgb24", "rgb48", "png", "bmp")  # ParseStill, strcasecmp
LEGACY_DEFAULT_TIMEOUT_MS = 5000
RPICAM_DEFAULT_TIMEOUT = "5sec"


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
    `width`/`height`: 0 = the tool's default (recorded only: the sample has its own size).
    `timeout_ms`: 0 = run until a signal (no picture), as both tools do without -k/-s/timelapse."""

    tool: str
    encoding: str = "jpg"
    timeout_ms: int = LEGACY_DEFAULT_TIMEOUT_MS
    output: str | None = None
    width: int = 0
    height: int = 0
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
    given: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------- raspistill

# RaspiStill.c's own table, then the tables it shares with raspivid (camera control, common settings,
# preview), then RaspiTex.c (GL preview), which raspivid does not use.
RASPISTILL_OPTIONS: tuple[LegacyOption, ...] = (
    _legacy(
        "RaspiStill.c",
        """
        q quality 1; r raw 0; l latest 1; t timeout 1; th thumb 1; d demo 0; e encoding 1; x exif 1
        tl timelapse 1; fp fullpreview 0; k keypress 0; s signal 0; g gl 0; gc glcapture 0; bm burst 0
        dt datetime 0; ts timestamp 0; fs framestart 1; rs restart 1
        """,
    )
    + tuple(option for option in LEGACY_OPTIONS if option.source != "RaspiVid.c")
    + _legacy("RaspiTex.c", "gs glscene 1; gw glwin 1")
)
_RASPISTILL_UINT = {"width", "height", "quality", "timelapse", "camselect", "mode", "framestart", "restart"}


def _invalid(word: str) -> SimUsageError:
    return SimUsageError(f"Invalid command line option ({word})")


def parse_raspistill_args(args: Sequence[str], tool: str = "raspistill") -> StillOptions:
    """RaspiStill.c parse_cmdline: one '-' stripped, the rest matched (strcmp) against long and short
    names; the message names the word being parsed when it fails."""
    values: dict[str, object] = {}
    given: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("-"):
            raise _invalid(word)
        option = next((o for o in RASPISTILL_OPTIONS if word[1:] in ("-" + o.long, o.short)), None)
        if option is None:
            raise _invalid(word)
        value = args[i + 1] if i + 1 < len(args) else None
        if option.params > 0 and value is None:
            raise _invalid(word)
        given.append(option.long)
        if option.long == "help":
            values["help"] = True
            break
        i += 1 + _apply_raspistill_option(option, word, value, values)
    output = values.get("output")
    if isinstance(output, str) and output.startswith("-"):
        output = "-"  # RaspiStill.c checks only filename[0] == '-' for stdout
    return StillOptions(
        tool=tool,
        encoding=str(values.get("encoding", "jpg")),
        timeout_ms=max(int(str(values.get("timeout", LEGACY_DEFAULT_TIMEOUT_MS))), 0),
        output=output if isinstance(output, str) else None,
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
        given=tuple(given),
    )


def _apply_raspistill_option(option: LegacyOption, word: str, value: str | None, values: dict[str, object]) -> int:
    """Store one option's effect; return how many following words it consumed."""
    name = option.long
    if name in _RASPISTILL_UINT or name == "timeout":
        assert value is not None  # params > 0 was checked by the caller
        number = scan_c_int(value) if name == "timeout" else scan_c_uint(value)
        if number is None:
            raise _invalid(word)
        values[name] = number
        return 1
    if name == "encoding":
        assert value is not None
        if value not in LEGACY_ENCODINGS:
            raise _invalid(word)  # `valid = 0` before `i++`: the message names -e itself
        values[name] = value
        return 1
    if name in ("output", "latest", "exif"):
        assert value is not None
        if value == "":
            raise _invalid(word)
        values[name] = value
        return 1
    if name == "demo":
        # The table says no value, but the code takes the next word as the interval if it is no option.
        values[name] = True
        if value is not None and not value.startswith("-"):
            if scan_c_uint(value) is None:
                raise _invalid(word)
            return 1
        return 0
    if option.params > 0:
        values[name] = value  # camera-control, preview and GL values are sscanf'd without a check
        return 1
    values[name] = True
    return 0


# ------------------------------------------------------------------------------- rpicam-still (boost)

# core/options.cpp (every rpicam app: the video table up to its first video option), then still_options.hpp.
_FIRST_VIDEO_OPTION = next(i for i, option in enumerate(RPICAM_OPTIONS) if option.long == "bitrate")
RPICAM_STILL_OPTIONS: tuple[RpicamOption, ...] = RPICAM_OPTIONS[:_FIRST_VIDEO_OPTION] + _rpicam(
    """
    quality,q value int; exif,x value str; timelapse value str; framestart value uint
    datetime flag bool; timestamp flag bool; restart value uint; keypress,k flag bool; signal,s flag bool
    thumb value str; encoding,e value str; raw,r flag bool; latest value str; immediate flag bool
    autofocus-on-capture flag bool; zsl flag bool
    """
)
_BY_SHORT = {option.short: option for option in RPICAM_STILL_OPTIONS if option.short}
# std::vector<std::string> options collect every occurrence instead of refusing the second.
_REPEATABLE = {"exif"}


def _find_long(name: str) -> RpicamOption:
    return find_long_in(RPICAM_STILL_OPTIONS, name)


def _is_option_word(word: str) -> bool:
    return is_option_word(RPICAM_STILL_OPTIONS, _BY_SHORT, word)


def _tokenize(args: Sequence[str]) -> list[_Given]:
    """boost's cmdline parser over the still table (options.py's tokenizer, which knows the video table)."""
    given: list[_Given] = []
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            break
        if word.startswith("--"):
            name, has_eq, attached = word[2:].partition("=")
            try:
                option = _find_long(name)
            except SimUsageError as error:
                if error.message.startswith("unrecognised"):
                    raise SimUsageError(f"unrecognised option '{word}'") from None
                raise
            spelled, value = f"--{option.long}", attached if has_eq else None
        elif word.startswith("-") and len(word) >= 2:
            if word[1] not in _BY_SHORT:
                raise SimUsageError(f"unrecognised option '{word}'")
            option, spelled, value = _BY_SHORT[word[1]], f"-{word[1]}", word[2:] or None
        else:
            continue  # positional words are dropped: rpicam declares none
        if value is None:
            if option.kind is Kind.VALUE:
                if i >= len(args) or _is_option_word(args[i]):
                    raise SimUsageError(f"the required argument for option '{spelled}' is missing")
                value = args[i]
                i += 1
            else:
                value = option.implicit or "true"  # flags and implicit values always carry one
        given.append(_Given(option, spelled, value))
    return given


def parse_rpicam_still_args(args: Sequence[str], tool: str = "rpicam-still") -> StillOptions:
    """Options::Parse then StillOptions' ParseStill, in the order the real tool checks."""
    seen: dict[str, str] = {}
    for item in _tokenize(args):
        if item.option.long in seen and item.option.long not in _REPEATABLE:
            raise SimUsageError(f"option '--{item.option.long}' cannot be specified more than once")
        _check_value(item)
        seen[item.option.long] = item.value

    def flag(name: str) -> bool:
        return name in seen and _BOOL_WORDS[seen[name].lower()]

    timeout_ms = parse_rpicam_time_ms(seen.get("timeout", RPICAM_DEFAULT_TIMEOUT))
    if flag("help") or flag("version"):
        return StillOptions(tool, timeout_ms=timeout_ms, show_help=flag("help"), show_version=flag("version"),
                            given=tuple(seen))
    if int(seen.get("rotation", "0")) % 360 not in (0, 180):
        raise SimUsageError("illegal rotation value")
    for name, (choices, message) in _RPICAM_CHOICES.items():
        if name in seen and seen[name] not in choices:
            raise SimUsageError(message.format(seen[name]))
    # ParseStill
    timelapse_ms = parse_rpicam_time_ms(seen.get("timelapse", "0ms"))
    if (flag("keypress") or flag("signal")) and timelapse_ms:
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
        encoding=encoding.lower(),
        timeout_ms=max(timeout_ms, 0),
        output=seen.get("output"),
        width=int(seen.get("width", "0")) % 2**32,
        height=int(seen.get("height", "0")) % 2**32,
        nopreview=flag("nopreview"),
        vflip=flag("vflip"),
        hflip=flag("hflip"),
        timelapse=timelapse_ms > 0,
        keypress=flag("keypress"),
        signal=flag("signal"),
        list_cameras=flag("list-cameras"),
        given=tuple(seen),
    )


def parse_still_args(tool: str, args: Sequence[str]) -> StillOptions:
    if dialect_for_still(tool) is Dialect.LEGACY:
        return parse_raspistill_args(args, tool)
    return parse_rpicam_still_args(args, tool)
