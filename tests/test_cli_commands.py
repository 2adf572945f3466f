"""The command line builds only the command it runs (cli.register); what a user sees must not change."""

from __future__ import annotations

import os
import subprocess

import pytest

from orchestrator.cli import COMMANDS, commands_for
from tests.e2e_helpers import piorch_argv


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIORCH_CONFIG": os.devnull, "COLUMNS": "100"}
    return subprocess.run(piorch_argv(*args), env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("argv", "expected"), [
    (["record", "--pi", "pi"], ("record",)),
    (["setup-link", "--help"], ("setup-link",)),
    (["snap"], ("snap",)),
    ([], COMMANDS),
    (["--help"], COMMANDS),
    (["--version"], COMMANDS),
    (["recrod"], COMMANDS),
    (["--pi", "record"], COMMANDS),
    (["setup_link"], COMMANDS),
])
def test_commands_for(argv: list[str], expected: tuple[str, ...]) -> None:
    assert commands_for(argv) == expected


def test_help_lists_every_command_in_order() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.split("Commands:", 1)[1].splitlines() if line.strip()]
    assert listed == list(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_alone_has_its_help(name: str) -> None:
    result = run(name, "--help")
    assert result.returncode == 0, result.stderr
    # `python -m orchestrator` here, `piorch` for a user: the program's name is typer's to choose.
    usage = result.stdout.splitlines()[0]
    assert usage.startswith("Usage: ") and f" {name} [OPTIONS]" in usage
    assert result.stderr == ""


def test_mistyped_command_names_the_real_ones() -> None:
    result = run("recrod")
    assert result.returncode == 2
    assert "No such command 'recrod'" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_option_of_one_command_is_one_error() -> None:
    result = run("record", "--no-such-option")
    assert result.returncode == 2
    assert "No such option: --no-such-option" in result.stderr
    assert "Traceback" not in result.stderr
