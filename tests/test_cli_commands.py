"""The command line builds only the command it runs (cli.register); what a user sees must not change."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.cli import COMMANDS, commands_for
from tests.e2e_helpers import piorch_argv


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIORCH_CONFIG": os.devnull, "COLUMNS": "200"}
    return subprocess.run(piorch_argv(*args), env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("argv", "expected"), [
    (["record", "--pi", "pi"], ("record",)),
    (["setup-link", "--help"], ("setup-link",)),
    (["snap"], ("snap",)),
    (["--", "snap"], ("snap",)),
    ([], ()),
    (["--help"], ()),
    (["--version"], ()),
    (["recrod"], ()),
    (["--pi", "record"], ()),
    (["setup_link"], ()),
])
def test_commands_for(argv: list[str], expected: tuple[str, ...]) -> None:
    assert commands_for(argv) == expected


def test_help_lists_every_command_in_order() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    listing = result.stdout.split("Commands:", 1)[1].splitlines()
    assert [line.split(maxsplit=1) for line in listing if line.strip()] == [[n, line] for n, line in COMMANDS.items()]


def test_help_imports_no_command() -> None:
    # The listing comes from COMMANDS: `piorch --help` imports no command's module (nor what they import).
    code = ("import sys; from orchestrator.cli import main; sys.argv = ['piorch', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('orchestrator.commands.')), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PIORCH_CONFIG": os.devnull, "COLUMNS": "200"})
    assert result.stderr.strip() == "[]", result.stderr
    assert "Commands:" in result.stdout


def test_a_command_after_double_dash_runs() -> None:
    result = run("--", "recover", "--help")
    assert result.returncode == 0, result.stderr
    assert " recover [OPTIONS]" in result.stdout.splitlines()[0]


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
