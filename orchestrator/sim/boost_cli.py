"""The rpicam tools' option language: boost::program_options as rpicam-apps uses it (pure).

Shared by rpicam-vid and rpicam-still. boost's default style: `--name value`, `--name=value`, unambiguous
abbreviations of long names, short aliases with the value attached or separate, bool options as flags
(value optional, never taken from the next word), positional words silently dropped (rpicam declares
none). The messages are boost's; the tools print them inside `ERROR: *** ... ***`.

Which options exist depends on the release and on whether the build has libav: the tables are data,
rpicam_options.txt, one row an option with the releases it exists in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache
from pathlib import Path

from orchestrator.sim.raspicli import SimUsageError
from orchestrator.sim.tables import read_sections

TABLE_PATH = Path(__file__).with_name("rpicam_options.txt")
Version = tuple[int, int, int]
# The option tables of the newest release this simulator knows, in a build with libav.
NEWEST: Version = (1, 13, 0)

# boost's validate() for bool, after lower-casing; an empty attached value ("--inline=") means true.
BOOL_WORDS = dict.fromkeys(("", "on", "yes", "1", "true"), True) | dict.fromkeys(("off", "no", "0", "false"), False)
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)
_STOF_PREFIX = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# TimeVal<> and Bitrate in core/options.hpp: a float, then optionally exactly one of these suffixes. An
# unknown suffix is ignored (the default unit applies). Note the real table maps "M" to 1000, not 10^6:
# `-b 8M` is 8 kbit/s on a real Pi too.
_TIME_UNITS_NS = {"min": 60e9, "sec": 1e9, "s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}
_BITRATE_UNITS = {"bps": 1, "b": 1, "kbps": 1000, "k": 1000, "K": 1000, "mbps": 1_000_000, "m": 1_000_000, "M": 1000}
# Enumerated values OptsInternal::Parse checks, with the message each failure throws.
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "metering": (("centre", "spot", "average", "matrix", "custom"), "Invalid metering mode: {}"),
    "exposure": (("normal", "sport", "short", "long", "custom"), "Invalid exposure mode:{}"),
    "awb": (
        ("auto", "normal", "incandescent", "tungsten", "fluorescent", "indoor", "daylight", "cloudy", "custom"),
        "Invalid AWB mode: {}",
    ),
    "hdr": (("off", "auto", "sensor", "single-exp"), "Invalid HDR option provided: {}"),
}


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
    repeatable: bool = False  # a std::vector option: every occurrence is kept


@dataclass(frozen=True)
class _Row:
    option: RpicamOption
    since: Version
    before: Version | None
    libav_until: Version | None

    def present(self, version: Version, libav: bool) -> bool:
        if version < self.since or (self.before is not None and version >= self.before):
            return False
        return libav or self.libav_until is None or version >= self.libav_until


def parse_version(text: str) -> Version:
    """"1.4.0" -> (1, 4, 0); ValueError for anything else."""
    parts = text.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError(f"not a release number like 1.13.0: {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _parse_row(words: list[str]) -> _Row:
    long, _, short = words[0].partition(",")
    kind, ctype = Kind(words[1]), words[2]
    extras = words[3:]
    implicit = "true" if kind is Kind.FLAG else None
    if kind is Kind.IMPLICIT:
        implicit, extras = extras[0], extras[1:]
    fields = dict(extra.partition("=")[::2] for extra in extras)
    option = RpicamOption(long, short or None, kind, ctype, implicit, "repeat" in fields)
    since = parse_version(fields["since"]) if "since" in fields else (1, 0, 0)
    before = parse_version(fields["before"]) if "before" in fields else None
    libav_until = parse_version(fields["libav-until"]) if "libav-until" in fields else None
    return _Row(option, since, before, libav_until)


@cache
def _load_sections() -> dict[str, tuple[_Row, ...]]:
    return {name: tuple(_parse_row(row) for row in rows) for name, rows in read_sections(TABLE_PATH).items()}


@cache
def option_table(app: str, version: Version = NEWEST, libav: bool = True) -> tuple[RpicamOption, ...]:
    """The options of rpicam `app` ("video" or "still") in that release and build, in the tool's order."""
    sections = _load_sections()
    rows = (*sections["common"], *sections[app])
    return tuple(row.option for row in rows if row.present(version, libav))


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


def is_option_word(table: Sequence[RpicamOption], by_short: Mapping[str, RpicamOption], word: str) -> bool:
    """boost refuses to take a word as an option's value when that word parses as a known option."""
    if word.startswith("--") and len(word) > 2:
        try:
            find_long_in(table, word[2:].partition("=")[0])
        except SimUsageError:
            return False
        return True
    return word.startswith("-") and len(word) >= 2 and word[1] in by_short


@dataclass(frozen=True)
class Given:
    option: RpicamOption
    spelled: str  # how boost names it in messages: "--bitrate" for long forms, "-b" for short forms
    value: str


def tokenize(table: Sequence[RpicamOption], args: Sequence[str]) -> list[Given]:
    """boost's cmdline::run: split words into options and values; positional words are dropped."""
    by_short = {option.short: option for option in table if option.short}
    given: list[Given] = []
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            break  # everything after "--" is positional, and rpicam declares no positional options
        if word.startswith("--"):
            name, has_eq, attached = word[2:].partition("=")
            try:
                option = find_long_in(table, name)
            except SimUsageError as error:
                if error.message.startswith("unrecognised"):
                    raise SimUsageError(f"unrecognised option '{word}'") from None
                raise
            spelled = f"--{option.long}"
            value: str | None = attached if has_eq else None
        elif word.startswith("-") and len(word) >= 2:
            found = by_short.get(word[1])
            if found is None:
                raise SimUsageError(f"unrecognised option '{word}'")
            option, spelled = found, f"-{word[1]}"
            value = word[2:] or None
        else:
            continue  # a positional word: parse_command_line keeps it, store() skips it (no name)
        if value is None:
            if option.kind is Kind.VALUE:
                if i >= len(args) or is_option_word(table, by_short, args[i]):
                    raise SimUsageError(f"the required argument for option '{spelled}' is missing")
                value = args[i]
                i += 1
            else:
                assert option.implicit is not None  # flags and implicit options always carry one
                value = option.implicit
        given.append(Given(option, spelled, value))
    return given


def check_value(item: Given) -> None:
    """boost's validators (lexical_cast) for the option's C++ type."""
    ctype, value = item.option.ctype, item.value
    if ctype == "bool":
        if value.lower() not in BOOL_WORDS:
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


def store(table: Sequence[RpicamOption], args: Sequence[str]) -> dict[str, str]:
    """parse_command_line + store: canonical long name -> value, in the order given; an option given twice
    is refused unless it collects values (then the last one is kept here)."""
    seen: dict[str, str] = {}
    for item in tokenize(table, args):
        if item.option.long in seen and not item.option.repeatable:
            raise SimUsageError(f"option '--{item.option.long}' cannot be specified more than once")
        check_value(item)
        seen[item.option.long] = item.value
    return seen


def flag(seen: Mapping[str, str], name: str) -> bool:
    return name in seen and BOOL_WORDS[seen[name].lower()]


def parse_time_ms(text: str, default_unit_ns: float = 1e6) -> int:
    """TimeVal<milliseconds>::set: "10s", "500ms", "2min", "1.5sec"; a bare number is milliseconds."""
    match = _STOF_PREFIX.match(text)
    if match is None:
        raise SimUsageError("Invalid time string provided")
    number = float(match.group(0))
    unit_ns = _TIME_UNITS_NS.get(text[match.end() :], default_unit_ns)
    return int(number * unit_ns / 1e6)


def parse_timeout_ms(seen: Mapping[str, str], table: Sequence[RpicamOption], default: str = "5sec") -> int:
    """--timeout in ms: a time string with units, or (a uint option before 1.2.2) plain milliseconds."""
    text = seen.get("timeout", default)
    if find_long_in(table, "timeout").ctype == "uint":
        return int(seen.get("timeout", "5000")) % 2**64
    return parse_time_ms(text)


def parse_bitrate(text: str) -> int:
    """Bitrate::set: bits/s; "10mbps", "10m", "500kbps", "500k"; a bare number is bits/s."""
    match = _STOF_PREFIX.match(text)
    if match is None:
        raise SimUsageError("Invalid bitrate string provided")
    number = float(match.group(0))
    return max(int(number * _BITRATE_UNITS.get(text[match.end() :], 1)), 0)


def check_common(table: Sequence[RpicamOption], seen: Mapping[str, str]) -> None:
    """The checks OptsInternal::Parse makes after --help/--version, that every rpicam app shares."""
    if int(seen.get("rotation", "0")) % 360 not in (0, 180):
        raise SimUsageError("illegal rotation value")
    for name, (choices, message) in CHOICES.items():
        # --hdr was a plain bool before 1.3.0: no modes to check then
        if name in seen and find_long_in(table, name).ctype == "str" and seen[name] not in choices:
            raise SimUsageError(message.format(seen[name]))


def build_boost_help(table: Sequence[RpicamOption], note: str) -> str:
    """boost's options_description listing (names and value syntax; the descriptions are left out)."""
    lines = ["Valid options are:"]
    for option in table:
        name = f"-{option.short} [ --{option.long} ]" if option.short else f"--{option.long}"
        # boost prints an implicit bool as lexical_cast<string>(true), which is "1"
        implicit = "1" if option.kind is Kind.FLAG else option.implicit
        lines.append(f"  {name} arg" if option.kind is Kind.VALUE else f"  {name} [=arg(={implicit})]")
    return "\n".join([*lines, note, ""])
