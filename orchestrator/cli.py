"""The `piorch` command line: parse options into settings, pick a display, call one core function.

This is the one place where errors become messages and exit codes. Commands live in `commands/`, one
module each; heavy imports (paramiko, sh, rich.live) happen inside them, so `piorch --help` is instant.
"""

from __future__ import annotations

import functools
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


def _register() -> None:
    # One import line per command: commands are added independently.
    from orchestrator.commands import demo  # noqa: I001
    from orchestrator.commands import listen
    from orchestrator.commands import record
    from orchestrator.commands import recover
    from orchestrator.commands import setup_link
    from orchestrator.commands import trust
    from orchestrator.commands import doctor
    from orchestrator.commands import bootstrap
    from orchestrator.commands import snap

    app.command("record")(reports_errors(record.record))
    app.command("listen")(reports_errors(listen.listen))
    app.command("demo")(reports_errors(demo.demo))
    app.command("trust")(reports_errors(trust.trust))
    app.command("recover")(reports_errors(recover.recover))
    app.command("setup-link")(reports_errors(setup_link.setup_link))
    app.command("doctor")(reports_errors(doctor.doctor))
    app.command("bootstrap")(reports_errors(bootstrap.bootstrap))
    app.command("snap")(reports_errors(snap.snap))


_register()


def main() -> None:
    # Library log records never reach the terminal: paramiko logs every failed handshake at ERROR, with a
    # traceback, from its own thread, and with no handler configured logging's last-resort handler would
    # print them to stderr. piorch reports each failure itself, as one line (see reports_errors).
    logging.getLogger().addHandler(logging.NullHandler())
    app()
