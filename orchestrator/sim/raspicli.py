"""The legacy camera tools' option language (userland RaspiCLI.c), shared by raspivid and raspistill (pure).

RaspiCLI's raspicli_get_command_id gets `argv[i] + 1`: exactly one leading '-' is stripped and the rest is
compared (strcmp) with the long name, stored as "-bitrate", and with the short name, stored as "b". So
`--bitrate` and `-b` work and `-bitrate` is "Invalid command line option (-bitrate)". Values are read
with sscanf, so "25fps" reads as 25 and "abc" fails. The tables are data: raspicam_options.txt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from orchestrator.sim.tables import read_sections

TABLE_PATH = Path(__file__).with_name("raspicam_options.txt")
RASPIVID_SOURCES = ("RaspiVid.c", "RaspiCamControl.c", "RaspiCommonSettings.c", "RaspiPreview.c")
RASPISTILL_SOURCES = ("RaspiStill.c", "RaspiCamControl.c", "RaspiCommonSettings.c", "RaspiPreview.c", "RaspiTex.c")
RASPIVIDYUV_SOURCES = ("RaspiVidYUV.c", "RaspiCamControl.c", "RaspiCommonSettings.c", "RaspiPreview.c")
RASPIYUV_SOURCES = ("RaspiStillYUV.c", "RaspiCamControl.c", "RaspiCommonSettings.c", "RaspiPreview.c")
_C_INT = re.compile(r"\s*([+-]?)(\d+)")
# What every legacy tool prints last when a camera component failed (RaspiCamControl.c
# raspicamcontrol_check_configuration, camera detected and enough GPU memory). The message ends in "\n" and
# vcos logging adds another, hence the empty line.
RASPICAM_FAILED = ("mmal: Failed to run camera app. Please check for firmware updates", "")


class SimUsageError(Exception):
    """A command line the real tool would refuse; `message` is the line it prints."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class LegacyOption:
    short: str  # as stored in COMMAND_LIST, without the dash: "b", "fps", "?"
    long: str  # without dashes: "bitrate"
    params: int  # the table's num_parameters: only "> 0" matters, for the missing-value check
    source: str


@cache
def _load_sections() -> dict[str, tuple[LegacyOption, ...]]:
    return {
        source: tuple(LegacyOption(short, long, int(params), source) for short, long, params in rows)
        for source, rows in read_sections(TABLE_PATH).items()
    }


def legacy_table(sources: Sequence[str]) -> tuple[LegacyOption, ...]:
    """The tables a tool looks options up in, in its lookup order (no name appears twice)."""
    sections = _load_sections()
    return tuple(option for source in sources for option in sections[source])


def find_in(table: Sequence[LegacyOption], word: str) -> LegacyOption | None:
    """raspicli_get_command_id on `argv[i] + 1` (the word with exactly one dash removed)."""
    for option in table:
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


def invalid(word: str) -> SimUsageError:
    return SimUsageError(f"Invalid command line option ({word})")


# apply(option, word, next word or None, values) stores the option's effect and returns how many of the
# following words it consumed.
ApplyOption = Callable[[LegacyOption, str, "str | None", dict[str, object]], int]


def walk_legacy_args(
    table: Sequence[LegacyOption], args: Sequence[str], apply: ApplyOption
) -> tuple[dict[str, object], tuple[str, ...]]:
    """parse_cmdline's loop, common to raspivid and raspistill: every word must be a known option, an option
    with parameters needs a next word, and `-?`/`--help` stops parsing (the tool prints its help the moment
    it meets it). Returns the values `apply` stored and the long names given, in order."""
    values: dict[str, object] = {}
    given: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("-"):
            raise invalid(word)
        option = find_in(table, word[1:])
        if option is None:
            raise invalid(word)
        value = args[i + 1] if i + 1 < len(args) else None
        if option.params > 0 and value is None:
            raise invalid(word)
        given.append(option.long)
        if option.long == "help":
            values["help"] = True
            break
        i += 1 + apply(option, word, value, values)
    return values, tuple(given)


def stdout_or_file(values: dict[str, object]) -> str | None:
    """The -o value as both tools see it: they check only filename[0] == '-' for stdout."""
    output = values.get("output")
    if not isinstance(output, str):
        return None
    return "-" if output.startswith("-") else output


def build_legacy_help(tool: str, table: Sequence[LegacyOption], headline: str) -> str:
    """A short version of the tool's help text (the real one lists the same options, with descriptions)."""
    lines = [headline, "", f"usage: {tool} [options]", "", "Image parameter commands", ""]
    lines += [f"-{option.short}, --{option.long}" for option in table]
    lines += ["", "(piorch camera simulator: plays recorded pictures instead of a camera)", ""]
    return "\n".join(lines)
