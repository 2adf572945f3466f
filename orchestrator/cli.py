"""The `piorch` command line: parse options into settings, pick a display, call one core function.

This is the one place where errors become messages and exit codes. Commands live in `commands/`, one
module each; heavy imports (paramiko, sh, rich.live) happen inside them, so `piorch --help` is instant.
"""

from __future__ import annotations

import functools
import gc
import importlib
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from orchestrator import __version__
from orchestrator.errors import Interrupted, PiorchError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="piorch",
    help="Record a Raspberry Pi camera straight to this laptop over one Ethernet cable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def fail(message: str, fix: str = "", code: int = 1) -> typer.Exit:
    """Print the one-line error and return the Exit to raise."""
    sys.stderr.write(f"piorch: error: {message}{': ' + fix if fix else ''}\n")
    return typer.Exit(code)


def reports_errors(function: F) -> F:
    """Map every user-facing error to its one-line message and exit code; Ctrl+C is exit 130."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Interrupted as exc:
            # A normal way to stop, not an error: said as what happened and what state it left.
            sys.stderr.write(f"piorch: {exc}\n")
            raise typer.Exit(exc.exit_code) from None
        except PiorchError as exc:
            raise fail(exc.message, exc.fix, exc.exit_code) from None
        except KeyboardInterrupt:
            sys.stderr.write("piorch: interrupted\n")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def version_callback(value: bool) -> None:
    if value:
        print(f"piorch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """Record a Raspberry Pi camera straight to this laptop over one Ethernet cable.

    The Pi runs `camera | nc`, started over SSH; the laptop receives each connection into a UUID-named
    file (`.tmp` until complete) with a JSON manifest beside it.
    """


# Every command, in the order `piorch --help` lists them, with the line it is listed with; each lives in
# orchestrator/commands/<name>.py as a function of the same name (dashes as underscores).
COMMANDS: dict[str, str] = {
    "record": "Record the Pi's camera into files on this laptop.",
    "listen": "Receive every connection into its own file, with a manifest.",
    "demo": "Record from a built-in simulated Pi: no Pi, no network needed.",
    "trust": "Fetch the Pi's SSH host key and record it once you confirm.",
    "recover": "Finish the .tmp files that a killed run left behind.",
    "setup-link": "Give the direct cable static addresses on both ends.",
    "doctor": "Check everything a recording needs, each with a one-line fix.",
    "bootstrap": "Get a Pi ready for `piorch record`; safe to run again.",
    "snap": "Take a picture (or a timelapse) with the Pi's still camera.",
}


def register(names: tuple[str, ...]) -> None:
    """Add `names` to the app. A run of one command imports and builds only that one: the others' modules
    and typer's conversion of their options are a quarter of the start-up that precedes the SSH connect.
    No names: every command is listed (`piorch --help`, a mistyped command) but none is built, as none of
    them can run then."""
    for name in names:
        attribute = name.replace("-", "_")
        module = importlib.import_module(f"orchestrator.commands.{attribute}")
        app.command(name, short_help=COMMANDS[name])(reports_errors(getattr(module, attribute)))
    if not names:
        for name, line in COMMANDS.items():
            app.command(name, short_help=line)(_listed_only)


def _listed_only() -> None:
    # commands_for builds the command that a command line names, so click never runs one of these.
    raise AssertionError("a command was run without being built")


def commands_for(argv: list[str]) -> tuple[str, ...]:
    """The command a command line runs (the first word, or the one after `--`), alone; none where it runs
    none (`piorch --help`, `--version`, a mistyped command: click lists them or says which exist)."""
    words = argv[1:] if argv[:1] == ["--"] else argv
    return (words[0],) if words and words[0] in COMMANDS else ()


def main() -> None:
    # Library log records never reach the terminal: paramiko logs every failed handshake at ERROR, with a
    # traceback, from its own thread, and with no handler configured logging's last-resort handler would
    # print them to stderr. piorch reports each failure itself, as one line (see reports_errors).
    logging.getLogger().addHandler(logging.NullHandler())
    # Start-up builds tens of thousands of objects that live as long as the process (modules, classes, the
    # methods dataclasses generate); at the default threshold (700) the collector walks them again and again
    # before the first SSH packet is sent (~15 ms of the imports that follow). Cycles are still collected,
    # less often. The command line's process only: importing this module changes nothing.
    gc.set_threshold(50_000, 20, 20)
    register(commands_for(sys.argv[1:]))
    app()
