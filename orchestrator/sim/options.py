"""Parse raspivid and rpicam-vid / libcamera-vid command lines the way the real tools do.

Two option languages, two pure parsers, one result (`SimOptions`):

- `parse_legacy_args` follows userland's RaspiVid.c + RaspiCLI.c: exactly one leading '-' is stripped and the
  rest is compared (strcmp) with the long name stored as "-bitrate" and the short name stored as "b". So
  `--bitrate` and `-b` work and `-bitrate` is "Invalid command line option (-bitrate)". Values are read with
  sscanf, so "25fps" reads as 25 and "abc" fails.
- `parse_rpicam_args` follows rpicam-apps' core/options.cpp on boost::program_options' default style:
  `--name value`, `--name=value`, unambiguous abbreviations of long names, short aliases with the value
  attached or separate, bool options as flags (value optional, never taken from the next word), stray
  positional words silently ignored. Its messages are boost's; the simulator prints them as the tool does,
  inside `ERROR: *** ... ***`.

Both raise `SimUsageError(message)` with the exact line the real tool prints (minus rpicam's ERROR frame).
`args` never includes the program name. The option tables below are the tools' complete tables
(see /work/shared/reference/options/); tests check them against those files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

LEGACY_TOOLS = ("raspivid",)
RPICAM_TOOLS = ("rpicam-vid", "libcamera-vid")

# raspivid's compiled-in defaults (RaspiVid.c default_status).
LEGACY_DEFAULT_WIDTH = 1920
LEGACY_DEFAULT_HEIGHT = 1080
LEGACY_DEFAULT_BITRATE = 17_000_000
LEGACY_DEFAULT_FRAMERATE = 30
LEGACY_DEFAULT_TIMEOUT_MS = 5000
# The firmware encoder refuses more than this at H.264 level 4 (and for MJPEG); raspivid lowers the value.
LEGACY_MAX_BITRATE_LEVEL4 = 25_000_000
LEGACY_MAX_BITRATE_LEVEL42 = 62_500_000

# rpicam-vid: width/height 0 become 640x480 (OptsInternal::ParseVideo); DEFAULT_FRAMERATE in options.hpp.
RPICAM_DEFAULT_WIDTH = 640
RPICAM_DEFAULT_HEIGHT = 480
RPICAM_DEFAULT_FRAMERATE = 30.0
RPICAM_DEFAULT_TIMEOUT = "5sec"


class SimUsageError(Exception):
    """A command line the real tool would refuse; `message` is the line it prints."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    `timeout_ms`: 0 = run until a signal. `frames`: rpicam's --frames, 0 = not set; overrides the timeout.
    `intra`: requested I-frame period; recorded only (the clip has a fixed period of 25 frames).
    `width`/`height`: recorded only (the clip is 640x360). With show_help / show_version set (rpicam), the
    other fields are not filled in: the tool prints and exits before it looks at them.
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
    # Long names of every option given, in order (rpicam: canonical names after abbreviation).
    given: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------------------------------------
# Legacy (raspivid)
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegacyOption:
    short: str  # as stored in COMMAND_LIST, without the dash: "b", "fps", "?"
    long: str  # without dashes: "bitrate"
    params: int  # the table's num_parameters: only "> 0" matters, for the missing-value check
    source: str


def _legacy(source: str, rows: str) -> tuple[LegacyOption, ...]:
    options = []
    for row in rows.replace(";", "\n").strip().splitlines():
        short, long, params = row.split()
        options.append(LegacyOption(short, long, int(params), source))
    return tuple(options)


# Lookup order of RaspiVid.c parse_cmdline: its own table, then RaspiCamControl, RaspiCommonSettings,
# RaspiPreview. No name appears twice, so the order only documents where each option comes from.
LEGACY_OPTIONS: tuple[LegacyOption, ...] = (
    _legacy(
        "RaspiVid.c",
        """
        b bitrate 1; t timeout 1; d demo 1; fps framerate 1; e penc 0
        g intra 1; pf profile 1; td timed 0; s signal 0; k keypress 0
        i initial 1; qp qp 1; ih inline 0; sg segment 1; wr wrap 1
        sn start 1; sp split 0; c circular 0; x vectors 1; if irefresh 1
        fl flush 0; pts save-pts 1; cd codec 1; lev level 1; r raw 1
        rf raw-format 1; l listen 0; stm spstimings 0; sl slices 1
        """,
    )
    + _legacy(
        "RaspiCamControl.c",
        """
        sh sharpness 1; co contrast 1; br brightness 1; sa saturation 1; ISO ISO 1
        vs vstab 0; ev ev 1; ex exposure 1; fli flicker 1; awb awb 1
        ifx imxfx 1; cfx colfx 1; mm metering 1; rot rotation 1; hf hflip 0
        vf vflip 0; roi roi 1; ss shutter 1; awbg awbgains 1; drc drc 1
        st stats 0; a annotate 1; 3d stereo 1; dec decimate 0; 3dswap 3dswap 0
        ae annotateex 2; ag analoggain 1; dg digitalgain 1; set settings 0; fw focus 0
        """,
    )
    + _legacy(
        "RaspiCommonSettings.c",
        """
        ? help 0; w width 1; h height 1; o output 1; v verbose 0
        cs camselect 1; md mode 1; gps gpsdexif 0
        """,
    )
    + _legacy(
        "RaspiPreview.c",
        """
        p preview 1; f fullscreen 0; op opacity 1; n nopreview 0; dn dispnum 1
        """,
    )
)

_LEGACY_PROFILES = ("baseline", "main", "high")
_LEGACY_LEVELS = ("4", "4.1", "4.2")
_LEGACY_RAW_FORMATS = ("yuv", "rgb", "gray")
# Options whose value RaspiVid.c / RaspiCommonSettings.c read with sscanf("%u") and refuse when it fails.
_LEGACY_UINT_OPTIONS = {
    "width",
    "height",
    "bitrate",
    "framerate",
    "intra",
    "qp",
    "segment",
    "wrap",
    "start",
    "camselect",
}
_C_INT = re.compile(r"\s*([+-]?)(\d+)")


def find_legacy_option(word: str) -> LegacyOption | None:
    """RaspiCLI's raspicli_get_command_id on `argv[i] + 1` (the word with exactly one dash removed)."""
    for option in LEGACY_OPTIONS:
        if word == "-" + option.long or word == option.short:
            return option
    return None


def scan_c_uint(text: str) -> int | None:
    """sscanf(text, "%u"): leading blanks and a sign allowed, digits required, the rest ignored; a minus
    wraps around like C's unsigned int. None when nothing matched (sscanf returned 0)."""
    match = _C_INT.match(text)
    if match is None:
        return None
    value = int(match.group(2))
    return (-value) % 2**32 if match.group(1) == "-" else value % 2**32


def scan_c_int(text: str) -> int | None:
    """sscanf(text, "%d"); None when nothing matched."""
    match = _C_INT.match(text)
    if match is None:
        return None
    return -int(match.group(2)) if match.group(1) == "-" else int(match.group(2))


def _invalid(word: str) -> SimUsageError:
    return SimUsageError(f"Invalid command line option ({word})")


def parse_legacy_args(args: Sequence[str], tool: str = "raspivid") -> SimOptions:
    """Parse raspivid options (program name excluded). `-?`/`--help` stops parsing like the real tool,
    which prints its help the moment it meets the option."""
    values: dict[str, object] = {}
    given: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("-"):
            raise _invalid(word)
        option = find_legacy_option(word[1:])
        if option is None:
            raise _invalid(word)
        has_next = i + 1 < len(args)
        if option.params > 0 and not has_next:
            raise _invalid(word)
        given.append(option.long)
        if option.long == "help":
            values["help"] = True
            break
        consumed = _apply_legacy_option(option, word, args[i + 1] if has_next else None, values)
        i += 1 + consumed
    return _legacy_result(tool, values, tuple(given))


def _apply_legacy_option(option: LegacyOption, word: str, value: str | None, values: dict[str, object]) -> int:
    """Store one option's effect in `values`; return how many following words it consumed."""
    name = option.long
    if name in _LEGACY_UINT_OPTIONS:
        assert value is not None  # params > 0 was checked by the caller
        number = scan_c_uint(value)
        if number is None:
            raise _invalid(word)
        values[name] = number
        if name == "segment":
            values["inline"] = True  # RaspiVid.c: segmenting needs inline headers, so it forces them on
        return 1
    if name == "timeout":
        assert value is not None
        number = scan_c_int(value)
        if number is None:
            raise _invalid(word)
        values[name] = number
        return 1
    if name == "mode":
        assert value is not None
        if scan_c_uint(value) is None:
            raise _invalid(word)
        return 1
    if name in ("output", "vectors", "save-pts", "raw"):
        assert value is not None
        if value == "":
            raise _invalid(word)
        values[name] = value
        return 1
    if name == "codec":
        assert value is not None
        if value == "":
            raise _invalid(word)
        if value not in ("H264", "MJPEG"):
            # RaspiVid.c has already stepped past the value when it notices, so it names the value.
            raise _invalid(value)
        values[name] = value
        return 1
    if name == "raw-format":
        assert value is not None
        if value not in _LEGACY_RAW_FORMATS:
            raise _invalid(value)  # same step-past-the-value quirk as -cd
        return 1
    if name == "profile":
        assert value is not None
        values[name] = value if value in _LEGACY_PROFILES else "high"  # unknown: silently high
        return 1
    if name == "level":
        assert value is not None
        values[name] = value if value in _LEGACY_LEVELS else "4"  # unknown: silently 4
        return 1
    if name == "timed":
        # The table says 0 values but the code reads "on,off" from the next word (and would crash
        # reading past the end of argv; refusing is the polite version).
        if value is None or not re.match(r"\s*[+-]?\d+,\s*[+-]?\d+", value):
            raise _invalid(word)
        return 1
    if name == "demo":
        # The table says 1 value but the code only takes the next word if it is not another option.
        if value is not None and not value.startswith("-"):
            if scan_c_uint(value) is None:
                raise _invalid(word)
            return 1
        return 0
    if name == "slices":
        assert value is not None
        slices = scan_c_int(value)
        if slices is None or slices <= 0:
            raise _invalid(word)
        return 1
    if option.params > 0:
        # Camera-control and preview options sscanf their value without checking it.
        values[name] = value
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

    output = text("output")
    if output is not None and output.startswith("-"):
        output = "-"  # RaspiVid.c checks only filename[0] == '-' for stdout
    timeout = number("timeout", LEGACY_DEFAULT_TIMEOUT_MS)
    framerate = number("framerate", LEGACY_DEFAULT_FRAMERATE)
    codec = text("codec") or "H264"
    return SimOptions(
        tool=tool,
        width=number("width", LEGACY_DEFAULT_WIDTH),
        height=number("height", LEGACY_DEFAULT_HEIGHT),
        framerate=float(framerate if framerate > 0 else LEGACY_DEFAULT_FRAMERATE),
        bitrate=number("bitrate", LEGACY_DEFAULT_BITRATE),
        timeout_ms=max(timeout, 0),
        output=output,
        # -sg and -sp force inline headers on (RaspiVid.c), -ih asks for them.
        inline_headers=bool(values.get("inline") or values.get("split")),
        intra=number("intra", 0),
        codec=codec.lower(),
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
    """The bitrate raspivid's encoder really gets, and the line it prints when it lowers the request."""
    limit = LEGACY_MAX_BITRATE_LEVEL4
    if options.codec == "h264" and options.level in ("4.1", "4.2"):
        limit = LEGACY_MAX_BITRATE_LEVEL42
    if options.bitrate <= limit:
        return options.bitrate, None
    return limit, f"Bitrate too high: Reducing to {limit / 1e6:g}MBit/s"


# --------------------------------------------------------------------------------------------------------
# rpicam-vid / libcamera-vid (boost::program_options)
# --------------------------------------------------------------------------------------------------------


class Kind(Enum):
    VALUE = "value"  # needs a value: --name V, --name=V, -xV, -x V
    FLAG = "flag"  # value<bool> with implicit_value(true): takes a value only as --name=V or -xV
    IMPLICIT = "implicit"  # non-bool with implicit_value: same syntax as FLAG, other type


@dataclass(frozen=True)
class RpicamOption:
    long: str
    short: str | None
    kind: Kind
    ctype: str  # "uint", "int", "float", "str", "bool"
    implicit: str | None = None


def _rpicam(rows: str) -> tuple[RpicamOption, ...]:
    options = []
    for row in rows.replace(";", "\n").strip().splitlines():
        parts = row.split()
        names, kind, ctype = parts[0], Kind(parts[1]), parts[2]
        long, _, short = names.partition(",")
        implicit = parts[3] if len(parts) > 3 else ("true" if kind is Kind.FLAG else None)
        options.append(RpicamOption(long, short or None, kind, ctype, implicit))
    return tuple(options)


# core/options.cpp (every rpicam app) followed by core/video_options.hpp (rpicam-vid).
RPICAM_OPTIONS: tuple[RpicamOption, ...] = _rpicam(
    """
    help,h flag bool; version flag bool; list-cameras flag bool; camera value uint
    verbose,v implicit uint 2; config,c implicit str config.txt; info-text value str; width value uint
    height value uint; timeout,t value str; output,o value str; post-process-file value str
    post-process-libs value str; nopreview,n flag bool; preview,p value str; fullscreen,f flag bool
    qt-preview flag bool; preview-libs value str; preview-backend value str; hflip flag bool
    vflip flag bool; rotation value int; roi value str; shutter value str
    analoggain value float; gain value float; metering value str; exposure value str
    ev value float; awb value str; awbgains value str; ccm value str
    flush flag bool; wrap value uint; brightness value float; contrast value float
    saturation value float; sharpness value float; framerate value float; denoise value str
    viewfinder-width value uint; viewfinder-height value uint; tuning-file value str; lores-width value uint
    lores-height value uint; lores-par flag bool; mode value str; viewfinder-mode value str
    buffer-count value uint; viewfinder-buffer-count value uint; no-raw flag bool; autofocus-mode value str
    autofocus-range value str; autofocus-speed value str; autofocus-window value str; lens-position value str
    hdr implicit str auto; metadata value str; metadata-format value str; flicker-period value str
    bitrate,b value str; profile value str; level value str; intra,g value uint
    inline flag bool; codec value str; encoder-libs value str; save-pts value str
    quality,q value int; listen,l flag bool; keypress,k flag bool; signal,s flag bool
    initial,i value str; split flag bool; segment value uint; circular implicit uint 4
    frames value uint; libav-video-codec value str; libav-video-codec-opts value str; libav-format value str
    libav-audio flag bool; audio-codec value str; audio-source value str; audio-device value str
    audio-channels value uint; audio-bitrate value str; audio-samplerate value uint; av-sync value str
    low-latency flag bool; sync value str
    """
)

_RPICAM_BY_SHORT = {option.short: option for option in RPICAM_OPTIONS if option.short}
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)
_STOF_PREFIX = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# boost's validate() for bool, after lower-casing; an empty attached value ("--inline=") means true.
_BOOL_WORDS = dict.fromkeys(("", "on", "yes", "1", "true"), True) | dict.fromkeys(("off", "no", "0", "false"), False)
# Enumerated values OptsInternal::Parse / ParseVideo check, with the message each failure throws.
_RPICAM_CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "metering": (("centre", "spot", "average", "matrix", "custom"), "Invalid metering mode: {}"),
    "exposure": (("normal", "sport", "short", "long", "custom"), "Invalid exposure mode:{}"),
    "awb": (
        ("auto", "normal", "incandescent", "tungsten", "fluorescent", "indoor", "daylight", "cloudy", "custom"),
        "Invalid AWB mode: {}",
    ),
    "hdr": (("off", "auto", "sensor", "single-exp"), "Invalid HDR option provided: {}"),
}
# TimeVal<> and Bitrate in core/options.hpp: a float, then optionally exactly one of these suffixes. An
# unknown suffix is ignored (the default unit applies). Note the real table maps "M" to 1000, not 10^6:
# `-b 8M` is 8 kbit/s on a real Pi too.
_TIME_UNITS_NS = {"min": 60e9, "sec": 1e9, "s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}
_BITRATE_UNITS = {"bps": 1, "b": 1, "kbps": 1000, "k": 1000, "K": 1000, "mbps": 1_000_000, "m": 1_000_000, "M": 1000}


def find_long_in(table: Sequence[RpicamOption], name: str) -> RpicamOption:
    """boost's find with allow_guessing over one option table: an exact long name, else the only long
    name that starts with `name`. Raises SimUsageError (unknown or ambiguous) with boost's message."""
    exact = [option for option in table if option.long == name]
    if exact:
        return exact[0]
    prefixed = sorted(option.long for option in table if option.long.startswith(name))
    if len(prefixed) == 1:
        return next(option for option in table if option.long == prefixed[0])
    if not prefixed:
        raise SimUsageError(f"unrecognised option '--{name}'")
    quoted = [f"'--{long}'" for long in prefixed]
    raise SimUsageError(f"option '--{name}' is ambiguous and matches {', '.join(quoted[:-1])}, and {quoted[-1]}")


def find_rpicam_long(name: str) -> RpicamOption:
    """find_long_in over rpicam-vid's table."""
    return find_long_in(RPICAM_OPTIONS, name)


def is_option_word(table: Sequence[RpicamOption], by_short: Mapping[str, RpicamOption], word: str) -> bool:
    """boost refuses to take a word as an option's value when that word parses as a known option."""
    if word.startswith("--") and len(word) > 2:
        try:
            find_long_in(table, word[2:].partition("=")[0])
        except SimUsageError:
            return False
        return True
    return word.startswith("-") and len(word) >= 2 and word[1] in by_short


def _is_known_option_word(word: str) -> bool:
    return is_option_word(RPICAM_OPTIONS, _RPICAM_BY_SHORT, word)


@dataclass(frozen=True)
class _Given:
    option: RpicamOption
    spelled: str  # how boost names it in messages: "--bitrate" for long forms, "-b" for short forms
    value: str


def _tokenize_rpicam(args: Sequence[str]) -> list[_Given]:
    """boost's cmdline::run: split words into options and values; positional words are dropped."""
    given: list[_Given] = []
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            break  # everything after "--" is positional, and rpicam declares no positional options
        if word.startswith("--"):
            name, has_eq, attached = word[2:].partition("=")
            try:
                option = find_rpicam_long(name)
            except SimUsageError as error:
                if error.message.startswith("unrecognised"):
                    raise SimUsageError(f"unrecognised option '{word}'") from None
                raise
            spelled = f"--{option.long}"
            value: str | None = attached if has_eq else None
        elif word.startswith("-") and len(word) >= 2:
            found = _RPICAM_BY_SHORT.get(word[1])
            if found is None:
                raise SimUsageError(f"unrecognised option '{word}'")
            option, spelled = found, f"-{word[1]}"
            value = word[2:] or None
        else:
            continue  # a positional word: parse_command_line keeps it, store() skips it (no name)
        if value is None:
            if option.kind is Kind.VALUE:
                if i >= len(args) or _is_known_option_word(args[i]):
                    raise SimUsageError(f"the required argument for option '{spelled}' is missing")
                value = args[i]
                i += 1
            else:
                assert option.implicit is not None
                value = option.implicit
        given.append(_Given(option, spelled, value))
    return given


def _check_value(item: _Given) -> None:
    """boost's validators (lexical_cast) for the option's C++ type."""
    ctype, value = item.option.ctype, item.value
    if ctype == "bool":
        if value.lower() not in _BOOL_WORDS:
            raise SimUsageError(
                f"the argument ('{value}') for option '{item.spelled}' is invalid. "
                "Valid choices are 'on|off', 'yes|no', '1|0' and 'true|false'"
            )
        return
    if ctype in ("uint", "int"):
        ok = re.fullmatch(r"[+-]?\d+", value) is not None
    elif ctype == "float":
        ok = _FLOAT_TEXT.fullmatch(value) is not None
    else:
        ok = True
    if not ok:
        raise SimUsageError(f"the argument ('{value}') for option '{item.spelled}' is invalid")


def parse_rpicam_time_ms(text: str, default_unit_ns: float = 1e6) -> int:
    """TimeVal<milliseconds>::set: "10s", "500ms", "2min", "1.5sec"; a bare number is milliseconds."""
    match = _STOF_PREFIX.match(text)
    if match is None:
        raise SimUsageError("Invalid time string provided")
    number = float(match.group(0))
    unit_ns = _TIME_UNITS_NS.get(text[match.end() :], default_unit_ns)
    return int(number * unit_ns / 1e6)


def parse_rpicam_bitrate(text: str) -> int:
    """Bitrate::set: bits/s; "10mbps", "10m", "500kbps", "500k"; a bare number is bits/s."""
    match = _STOF_PREFIX.match(text)
    if match is None:
        raise SimUsageError("Invalid bitrate string provided")
    number = float(match.group(0))
    return max(int(number * _BITRATE_UNITS.get(text[match.end() :], 1)), 0)


def _to_uint(text: str) -> int:
    return int(text) % 2**32  # lexical_cast<unsigned> wraps a minus sign around like C


def parse_rpicam_args(args: Sequence[str], tool: str = "rpicam-vid") -> SimOptions:
    """Parse rpicam-vid / libcamera-vid options (program name excluded), in the order the real tool
    checks them: syntax, then value types, then time strings, then --help/--version, then video options."""
    seen: dict[str, _Given] = {}
    for item in _tokenize_rpicam(args):
        if item.option.long in seen:
            raise SimUsageError(f"option '--{item.option.long}' cannot be specified more than once")
        _check_value(item)
        seen[item.option.long] = item

    def raw(name: str, default: str | None = None) -> str | None:
        return seen[name].value if name in seen else default

    def flag(name: str) -> bool:
        value = raw(name)
        return value is not None and _BOOL_WORDS[value.lower()]

    def uint(name: str, default: int = 0) -> int:
        value = raw(name)
        return default if value is None else _to_uint(value)

    timeout_text = raw("timeout", RPICAM_DEFAULT_TIMEOUT)
    assert timeout_text is not None
    timeout_ms = parse_rpicam_time_ms(timeout_text)
    given = tuple(seen)
    if flag("help") or flag("version"):
        return SimOptions(
            tool=tool,
            width=0,
            height=0,
            framerate=0.0,
            bitrate=0,
            timeout_ms=timeout_ms,
            show_help=flag("help"),
            show_version=flag("version"),
            given=given,
        )
    rotation = int(raw("rotation", "0") or "0")
    if rotation % 360 not in (0, 180):
        raise SimUsageError("illegal rotation value")
    for name, (choices, message) in _RPICAM_CHOICES.items():
        value = raw(name)
        if value is not None and value not in choices:
            raise SimUsageError(message.format(value))
    # OptsInternal::ParseVideo
    bitrate = parse_rpicam_bitrate(raw("bitrate", "0bps") or "0")
    codec = (raw("codec", "h264") or "").lower()
    if codec not in ("h264", "libav", "yuv420", "mjpeg"):
        raise SimUsageError(f"unrecognised codec {raw('codec')}")
    initial = (raw("initial", "record") or "").lower()
    if initial not in ("record", "pause"):
        raise SimUsageError(f"incorrect initial value {raw('initial')}")
    framerate = float(raw("framerate", "-1") or "-1")
    return SimOptions(
        tool=tool,
        width=uint("width") or RPICAM_DEFAULT_WIDTH,
        height=uint("height") or RPICAM_DEFAULT_HEIGHT,
        framerate=framerate if framerate > 0 else RPICAM_DEFAULT_FRAMERATE,
        bitrate=bitrate,
        timeout_ms=max(timeout_ms, 0),
        output=raw("output"),
        inline_headers=flag("inline"),
        intra=uint("intra"),
        codec=codec,
        profile=raw("profile"),
        level=raw("level"),
        frames=uint("frames"),
        nopreview=flag("nopreview"),
        vflip=flag("vflip"),
        hflip=flag("hflip"),
        flush=flag("flush"),
        listen=flag("listen"),
        verbose=uint("verbose", 1),
        save_pts=raw("save-pts"),
        segment_ms=uint("segment"),
        list_cameras=flag("list-cameras"),
        given=given,
    )


def parse_args(tool: str, args: Sequence[str]) -> SimOptions:
    """Parse `args` in the language of `tool` (ValueError for an unknown tool)."""
    if dialect_for(tool) is Dialect.LEGACY:
        return parse_legacy_args(args, tool)
    return parse_rpicam_args(args, tool)


def build_legacy_help(tool: str) -> str:
    """A short version of raspivid's help text (the real one lists the same options)."""
    lines = [
        "Display camera output to display, and optionally saves an H264 capture at requested bitrate",
        "",
        f"usage: {tool} [options]",
        "",
        "Image parameter commands",
        "",
    ]
    lines += [f"-{option.short}, --{option.long}" for option in LEGACY_OPTIONS]
    lines += ["", "(piorch camera simulator: plays a recorded test clip instead of a camera)", ""]
    return "\n".join(lines)


def build_rpicam_help() -> str:
    """boost's options_description listing, abridged."""
    lines = ["Valid options are:"]
    for option in RPICAM_OPTIONS:
        name = f"-{option.short} [ --{option.long} ]" if option.short else f"--{option.long}"
        suffix = f" [=arg(={option.implicit})]" if option.kind is not Kind.VALUE else " arg"
        lines.append(f"  {name}{suffix}")
    lines.append("(piorch camera simulator: plays a recorded test clip instead of a camera)")
    return "\n".join(lines) + "\n"
