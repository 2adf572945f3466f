"""Errors a user can meet. Each carries its own message and fix; the CLI maps them to exit codes.

The core raises these and never prints or exits; `cli.py` is the one place that turns them into a
one-line message and an exit code (the HTTPie model).
"""

from __future__ import annotations


class PiorchError(Exception):
    """A problem the user can fix: `message` says what is wrong, `fix` what to do about it."""

    exit_code = 1

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}: {self.fix}" if self.fix else self.message


class UsageError(PiorchError):
    """Bad option values or combinations."""

    exit_code = 2


class ConfigError(PiorchError):
    """A configuration file that cannot be used; the message names the file and the key."""

    exit_code = 2


class HostKeyError(PiorchError):
    """The Pi's SSH host key is unknown or has changed."""

    exit_code = 3


class ConnectError(PiorchError):
    """The Pi cannot be reached or refuses the login."""

    exit_code = 3


class RemoteError(PiorchError):
    """Something on the Pi failed: missing tool, camera not detected, camera busy."""

    exit_code = 4


class ReceiverError(PiorchError):
    """The laptop side cannot receive: port busy, address not local, folder not writable."""

    exit_code = 5


class Interrupted(PiorchError):
    """Ctrl+C or SIGTERM: a normal way to stop, reported with exit code 130."""

    exit_code = 130
