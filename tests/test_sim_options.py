"""The camera simulator's option languages (pure tables): raspivid's RaspiCLI and rpicam-vid's boost, each
checked against the tools' complete option tables in shared/reference/options/ and against the exact
messages the real tools print.
"""

from __future__ import annotations

import pytest

from orchestrator.sim.options import (
    LEGACY_OPTIONS,
    RPICAM_OPTIONS,
    Kind,
    SimUsageError,
    effective_legacy_bitrate,
    find_legacy_option,
    parse_legacy_args,
    parse_rpicam_args,
)
from tests.system_tools import require_reference

# ------------------------------------------------------------------------------------- legacy option table


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {"width": 1920, "height": 1080, "framerate": 30.0, "bitrate": 17_000_000, "timeout_ms": 5000}),
        (["--bitrate", "8000000"], {"bitrate": 8_000_000}),
        (["-b", "8000000"], {"bitrate": 8_000_000}),
        (["-h", "720", "-w", "1280"], {"height": 720, "width": 1280}),
        (["--height", "720", "--width", "1280"], {"height": 720, "width": 1280}),
        (["-fps", "25"], {"framerate": 25.0}),
        (["-fps", "25fps"], {"framerate": 25.0}),  # sscanf("%u") stops at the first non-digit
        (["--framerate", "49"], {"framerate": 49.0}),
        (["-t", "0"], {"timeout_ms": 0}),
        (["-o", "-"], {"output": "-"}),
        (["-o", "-anything"], {"output": "-"}),  # RaspiVid.c only looks at filename[0] == '-'
        (["-o", "/tmp/x.h264"], {"output": "/tmp/x.h264"}),
        (["-ih"], {"inline_headers": True}),
        (["-sg", "1000"], {"inline_headers": True, "segment_ms": 1000}),
        (["-sp"], {"inline_headers": True}),
        (["-cd", "MJPEG"], {"codec": "mjpeg"}),
        (["-cd", "H264"], {"codec": "h264"}),
        (["-pf", "baseline"], {"profile": "baseline"}),
        (["-pf", "nonsense"], {"profile": "high"}),
        (["-lev", "4.2"], {"level": "4.2"}),
        (["-g", "30"], {"intra": 30}),
        (["-d", "-t", "100"], {"timeout_ms": 100}),  # -d takes its value only if it is not an option
        (["-d", "500", "-t", "100"], {"timeout_ms": 100}),
        (["-td", "1000,2000", "-t", "7"], {"timeout_ms": 7}),  # table says 0 values, code reads one
        (["-ae", "32,0xff,0x808000", "-t", "7"], {"timeout_ms": 7}),  # table says 2, it is one word
        (["-vf", "-hf", "-n", "-fl", "-l"], {"vflip": True, "hflip": True, "nopreview": True, "flush": True}),
        (["-ISO", "800", "-awb", "off", "-ex", "sports", "-t", "3"], {"timeout_ms": 3}),
        (["-?", "-bogus"], {"show_help": True}),  # help is printed the moment it is met
        (["--help"], {"show_help": True}),
    ],
)
def test_legacy_parses(args: list[str], expected: dict[str, object]) -> None:
    options = parse_legacy_args(args)
    assert {key: getattr(options, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-bitrate", "8000000"], "Invalid command line option (-bitrate)"),
        (["-framerate", "25"], "Invalid command line option (-framerate)"),
        (["--b", "1"], "Invalid command line option (--b)"),
        (["--fps", "25"], "Invalid command line option (--fps)"),
        (["-b"], "Invalid command line option (-b)"),
        (["-b", "abc"], "Invalid command line option (-b)"),
        (["-w", "wide"], "Invalid command line option (-w)"),
        (["-cd", "h264"], "Invalid command line option (h264)"),  # RaspiVid.c names the value here
        (["-cd", "mjpeg"], "Invalid command line option (mjpeg)"),  # strcmp: case-sensitive
        (["-cd", "Mjpeg"], "Invalid command line option (Mjpeg)"),
        (["-cd", ""], "Invalid command line option (-cd)"),
        (["-fps=25"], "Invalid command line option (-fps=25)"),
        (["--bitrate=8000000"], "Invalid command line option (--bitrate=8000000)"),
        (["record.h264"], "Invalid command line option (record.h264)"),
        (["-t", "100", "-o"], "Invalid command line option (-o)"),
        (["-o", ""], "Invalid command line option (-o)"),
        (["-td"], "Invalid command line option (-td)"),
        (["-sl", "0"], "Invalid command line option (-sl)"),
        (["-gl"], "Invalid command line option (-gl)"),  # raspistill's GL preview, not raspivid's
        (["-q", "90"], "Invalid command line option (-q)"),  # raspistill's JPEG quality
        (["-rf", "bayer"], "Invalid command line option (bayer)"),
    ],
)
def test_legacy_refuses(args: list[str], message: str) -> None:
    with pytest.raises(SimUsageError) as caught:
        parse_legacy_args(args)
    assert caught.value.message == message


def test_legacy_bitrate_is_capped_like_the_firmware() -> None:
    assert effective_legacy_bitrate(parse_legacy_args(["-b", "30000000"])) == (
        25_000_000,
        "Bitrate too high: Reducing to 25MBit/s",
    )
    assert effective_legacy_bitrate(parse_legacy_args(["-b", "30000000", "-lev", "4.2"])) == (30_000_000, None)
    assert effective_legacy_bitrate(parse_legacy_args(["-b", "-1", "-lev", "4.2"]))[0] == 62_500_000


def _reference_rows(name: str) -> list[list[str]]:
    path = require_reference(name)
    return [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_legacy_table_matches_the_real_one() -> None:
    rows = _reference_rows("raspivid_options.txt")
    assert len(rows) == len(LEGACY_OPTIONS)
    for short, long, params, *_ in rows:
        by_long, by_short = find_legacy_option("-" + long[2:]), find_legacy_option(short[1:])
        assert by_long is not None and by_long is by_short, (short, long)
        assert by_long.params == int(params), long


def test_rpicam_table_matches_the_real_one() -> None:
    rows = _reference_rows("rpicam_vid_options.txt")
    ours = {option.long: option for option in RPICAM_OPTIONS}
    assert len(rows) == len(ours)
    for short, long, ctype, _default, implicit, *_ in rows:
        option = ours[long[2:]]
        assert option.short == (short[1:] or None), long
        assert (option.kind is Kind.FLAG) == (ctype == "bool"), long
        assert (option.kind is Kind.VALUE) == (implicit == ""), long
        if implicit:
            assert option.implicit == implicit.strip('"'), long


# ------------------------------------------------------------------------------------- rpicam option table


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {"width": 640, "height": 480, "framerate": 30.0, "bitrate": 0, "timeout_ms": 5000, "verbose": 1}),
        (["--bitrate=8000000"], {"bitrate": 8_000_000}),
        (["--bitrate", "8000000"], {"bitrate": 8_000_000}),
        (["-b", "16mbps"], {"bitrate": 16_000_000}),
        (["-b16mbps"], {"bitrate": 16_000_000}),
        (["-b", "500k"], {"bitrate": 500_000}),
        (["-b", "8M"], {"bitrate": 8_000}),  # rpicam-apps maps "M" to 1000: a real trap, kept on purpose
        (["--bit", "2mbps"], {"bitrate": 2_000_000}),
        (["-t", "10s"], {"timeout_ms": 10_000}),
        (["-t", "500ms"], {"timeout_ms": 500}),
        (["-t", "2min"], {"timeout_ms": 120_000}),
        (["-t", "1.5sec"], {"timeout_ms": 1500}),
        (["-t", "1500"], {"timeout_ms": 1500}),
        (["-t", "10x"], {"timeout_ms": 10}),  # an unknown unit is ignored: milliseconds
        (["--timeout=0"], {"timeout_ms": 0}),
        (["--tim", "3s"], {"timeout_ms": 3000}),
        (["--width", "1280", "--height", "720"], {"width": 1280, "height": 720}),
        (["--wid=1280"], {"width": 1280}),
        (["--framer", "25"], {"framerate": 25.0}),
        (["--framerate", "29.97"], {"framerate": 29.97}),
        (["-h", "720"], {"show_help": True}),  # -h is help here; 720 is a positional word, ignored
        (["--version"], {"show_version": True}),
        (["--inline", "-n", "--flush", "--hflip"], {"inline_headers": True, "nopreview": True, "flush": True}),
        (["--inline=false"], {"inline_headers": False}),
        (["--inline=yes"], {"inline_headers": True}),
        (["--codec", "MJPEG"], {"codec": "mjpeg"}),  # rpicam lower-cases the codec name
        (["--codec=MjPeG"], {"codec": "mjpeg"}),
        (["--codec", "H264"], {"codec": "h264"}),
        (["--codec", "libav"], {"codec": "libav"}),
        (["-o", "-"], {"output": "-"}),
        (["-o-"], {"output": "-"}),
        (["-v"], {"verbose": 2}),
        (["-v0"], {"verbose": 0}),
        (["-v", "0"], {"verbose": 2}),  # an implicit value is never taken from the next word
        (["record.h264", "-t", "1s"], {"output": None, "timeout_ms": 1000}),  # forgot -o: no output at all
        (["-t", "1s", "--", "--width", "9"], {"width": 640}),
        (["--frames", "10", "-g", "30"], {"frames": 10, "intra": 30}),
        (["--list-cameras"], {"list_cameras": True}),
        (["--metadata", "-", "--metadata-format", "txt"], {"output": None}),
    ],
)
def test_rpicam_parses(args: list[str], expected: dict[str, object]) -> None:
    options = parse_rpicam_args(args)
    assert {key: getattr(options, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--foo"], "unrecognised option '--foo'"),
        (["--foo=1"], "unrecognised option '--foo=1'"),
        (["-x"], "unrecognised option '-x'"),
        (["-width", "1280"], "unrecognised option '-width'"),
        (["-bitrate", "1"], "Invalid bitrate string provided"),  # -b with the value "itrate"
        (["-timeout", "5"], "Invalid time string provided"),
        (["--fl"], "option '--fl' is ambiguous and matches '--flicker-period', and '--flush'"),
        (["--fram", "25"], "option '--fram' is ambiguous and matches '--framerate', and '--frames'"),
        (["--width", "abc"], "the argument ('abc') for option '--width' is invalid"),
        (["--framerate", "fast"], "the argument ('fast') for option '--framerate' is invalid"),
        (
            ["--inline=maybe"],
            "the argument ('maybe') for option '--inline' is invalid. "
            "Valid choices are 'on|off', 'yes|no', '1|0' and 'true|false'",
        ),
        (["-o"], "the required argument for option '-o' is missing"),
        (["--output", "--inline"], "the required argument for option '--output' is missing"),
        (["-t", "abc"], "Invalid time string provided"),
        (["--codec", "h265"], "unrecognised codec h265"),
        (["--width", "1", "--width", "2"], "option '--width' cannot be specified more than once"),
        (["-t", "1", "--timeout", "2"], "option '--timeout' cannot be specified more than once"),
        (["--awb", "purple"], "Invalid AWB mode: purple"),
        (["--rotation", "90"], "illegal rotation value"),
        (["--initial", "later"], "incorrect initial value later"),
    ],
)
def test_rpicam_refuses(args: list[str], message: str) -> None:
    with pytest.raises(SimUsageError) as caught:
        parse_rpicam_args(args)
    assert caught.value.message == message
