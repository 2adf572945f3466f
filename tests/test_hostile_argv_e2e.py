"""Hostile strings against every command line piorch builds, through a real sshd (issue 5, security).

Two layers:
- the remote pipeline script itself: a hypothesis property drives camera arguments and the laptop address
  with shell metacharacters, unicode and injection payloads through `build_pipeline_script`, a real
  `SshHost` connection and the fake Pi's login shell; stand-ins in the Pi's bin/ log their argv, and the Pi's
  home holds one canary file that must be the only file there afterwards (an injected `touch` or `rm` would
  show). tests/test_builders.py checks the same script in a local sh; this adds sshd, the login shell that
  runs the command string, paramiko's encoding and the remote sh;
- the real CLI: every string option of `record` and `snap` given a hostile value is refused with exit 2 and
  one line on stderr before any SSH session opens, or, for a value piorch legitimately takes (an --out folder
  with quotes in its name, a --name template full of metacharacters), the run works and the Pi ran exactly
  the argv piorch intended (the camera simulator's runs.jsonl, a logging nc).

Along the way: no secret (the bootstrap password variable, the SSH private key) appears in any message,
manifest or log.
"""

from __future__ import annotations

import json
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from orchestrator.netcat import NetcatFlavour, build_nc_send_argv
from orchestrator.pi.camera import build_camera_argv
from orchestrator.pi.scripts import CAMERA_EXIT_MARK, NC_EXIT_MARK, PGID_MARK, build_pipeline_script
from orchestrator.pi.ssh import SshHost
from orchestrator.pi.still import build_still_argv
from orchestrator.pi.timestamps import FrameClock, TimestampPlan, add_timestamp_options
from orchestrator.settings import CameraSettings, CameraTool, SshSettings, StillSettings, StillTool
from tests.e2e_helpers import FakePi, manifests, piorch_argv, piorch_env, start_fake_pi
from tests.sshd_server import SshServer, SshServerInfo
from tests.system_tools import require_tool

pytestmark = pytest.mark.e2e

CANARY_TEXT = "piorch canary: an injected rm or > would change this file\n"
# Set for every CLI run: a secret that must never reach an output, a manifest or a log.
SECRET = "piorch-secret-Zq7wX2"
# Shell metacharacters, whitespace piorch must keep inside one argument, and a few non-ASCII letters.
METACHARACTERS = [*"$`'\"\\;|&()<>*?!#~\n\t {}[]=%^-", "é", "€", "ß", "\u00a0", "😀"]
# Ways out of a quoted word into a shell command; each payload would create a file `pwned` in the Pi's home.
BREAKOUTS = ["", ";", "\n", "&&", "||", "|", "&", "'", "';", '"', '";', "$(", "`", "'$(", '"$(', "}", ")"]
CLOSERS = ["", ")", "`", "'", '"', ";#", " #", "'\"`)"]
PAYLOADS = [
    "$(touch pwned)", "`touch pwned`", "'; touch pwned; '", '"; touch pwned; "', "x\ntouch pwned",
    "$(rm -f canary)", "'$(touch pwned)'", "\\'; touch pwned #", "*", "~", "$HOME", "${IFS}touch${IFS}pwned",
    "-oProxyCommand=touch pwned", "}; touch pwned; {", "a'\"'\"'; touch pwned", "!!", "#",
]
# No NUL: an argv element cannot hold one (execve ends the string there), so no builder can pass it on.
ANY_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=16)
HOSTILE = st.one_of(
    st.text(st.sampled_from(METACHARACTERS + list("ab")), max_size=16),
    ANY_TEXT,
    st.builds(lambda before, out, close: f"{before}{out}touch pwned{close}", st.sampled_from(["", "x", "-"]),
              st.sampled_from(BREAKOUTS), st.sampled_from(CLOSERS)),
    st.sampled_from(PAYLOADS),
)


# ------------------------------------------------------------------------------------ the pipeline script

# The stand-ins: each appends its argv (as JSON, without argv[0]) to LOG/<its name>.jsonl; the nc one also
# swallows its stdin, as nc does with the camera's stream.
ARGV_LOGGER = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.path.join({log!r}, name + ".jsonl"), "a", encoding="utf-8") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
if name == "nc-sink":
    sys.stdin.buffer.read()
else:
    sys.stdout.write("frame bytes\\n")
"""


@dataclass(frozen=True)
class PiShell:
    info: SshServerInfo
    host: SshHost
    logs: Path


def read_argv_log(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def home_is_untouched(home: Path) -> None:
    """Only the canary, unchanged: no `touch` went through, no `rm`, no redirection."""
    assert sorted(p.name for p in home.iterdir()) == ["canary"]
    assert (home / "canary").read_text() == CANARY_TEXT


@pytest.fixture(scope="module")
def pi_shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PiShell]:
    """One sshd and one SSH connection for the whole property (hypothesis runs every example in one test)."""
    from tests.conftest import _require_sshd

    _require_sshd()
    logs = tmp_path_factory.mktemp("argv-logs")
    with SshServer() as server:
        info = server.info
        for name in ("camera-logger", "nc-sink"):
            tool = info.bin_dir / name
            tool.write_text(ARGV_LOGGER.format(python=sys.executable, log=str(logs)))
            tool.chmod(0o755)
        (info.home / "canary").write_text(CANARY_TEXT)
        host = SshHost.connect(SshSettings(target=info.alias, ssh_config=info.ssh_config))
        try:
            yield PiShell(info, host, logs)
        finally:
            host.close()


@settings(max_examples=25, deadline=None)
@given(camera_args=st.lists(HOSTILE, min_size=1, max_size=6), laptop_ip=HOSTILE)
@example(camera_args=PAYLOADS, laptop_ip="fe80::1%$(touch pwned)")
@example(camera_args=["", " ", "-", "--", "'", '"', "\\", "\n"], laptop_ip="x'\"; rm -f canary #")
def test_the_pi_runs_exactly_the_intended_argv(pi_shell: PiShell, camera_args: list[str], laptop_ip: str) -> None:
    """Whatever the strings hold, the Pi runs the two programs with exactly these arguments and nothing else."""
    for log in pi_shell.logs.iterdir():
        log.unlink()
    camera_argv = ["camera-logger", *camera_args]
    nc_argv = build_nc_send_argv(NetcatFlavour.OPENBSD, laptop_ip, 10401, nc="nc-sink")
    result = pi_shell.host.run(build_pipeline_script(camera_argv, nc_argv), timeout=30)
    lines = result.stdout.splitlines()
    assert lines[0].startswith(PGID_MARK + " "), result.stderr
    assert f"{CAMERA_EXIT_MARK} 0" in lines and f"{NC_EXIT_MARK} 0" in lines, result.stderr
    assert read_argv_log(pi_shell.logs / "camera-logger.jsonl") == [camera_args]
    assert read_argv_log(pi_shell.logs / "nc-sink.jsonl") == [nc_argv[1:]]
    assert sorted(p.name for p in pi_shell.logs.iterdir()) == ["camera-logger.jsonl", "nc-sink.jsonl"]
    home_is_untouched(pi_shell.info.home)
    assert sorted(p.name for p in pi_shell.info.bin_dir.iterdir()) == ["camera-logger", "nc-sink"]


# ----------------------------------------------------------------------------------------- the real CLI

# Logs every nc call on the Pi except the probe's `nc -h`, then runs the real OpenBSD netcat.
NC_LOGGER = """#!{python}
import json, os, sys
if sys.argv[1:] != ["-h"]:
    with open({log!r}, "a", encoding="utf-8") as log:
        log.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv({nc_openbsd!r}, ["nc", *sys.argv[1:]])
"""


@dataclass(frozen=True)
class Laptop:
    pi: FakePi
    env: dict[str, str]
    nc_log: Path
    cwd: Path  # piorch's working directory: a local injection would leave a file here

    def sessions(self) -> int:
        """SSH logins the Pi accepted so far (sshd logs each one at LogLevel VERBOSE)."""
        return self.pi.server.log_path.read_text(errors="replace").count("Accepted publickey")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(piorch_argv(*args), env=self.env, cwd=self.cwd, capture_output=True, text=True,
                              timeout=60)


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Laptop]:
    from tests.conftest import _require_sshd

    _require_sshd()
    tmp = tmp_path_factory.mktemp("hostile-cli")
    pi = start_fake_pi(tmp, ("raspivid", "raspistill"))
    try:
        nc_log = tmp / "nc-argv.jsonl"
        nc = pi.info.bin_dir / "nc"
        nc.write_text(NC_LOGGER.format(python=sys.executable, log=str(nc_log),
                                       nc_openbsd=require_tool("nc.openbsd")))
        nc.chmod(0o755)
        (pi.info.home / "canary").write_text(CANARY_TEXT)
        cwd = tmp / "cwd"
        cwd.mkdir()
        env = piorch_env(tmp, pi.info.ssh_config)
        env["PIORCH_BOOTSTRAP_PASSWORD"] = SECRET
        yield Laptop(pi, env, nc_log, cwd)
    finally:
        pi.server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nothing_left_anywhere(laptop: Laptop) -> None:
    home_is_untouched(laptop.pi.info.home)
    assert [p.name for p in laptop.cwd.iterdir() if p.name != "out"] == []


def assert_no_secret(laptop: Laptop, *texts: str, folders: tuple[Path, ...] = ()) -> None:
    """Neither the bootstrap password variable nor the SSH private key in any output, file or log."""
    key_body = laptop.pi.info.user_key.read_text().splitlines()[1]  # a line of the base64 private key
    for text in texts:
        assert SECRET not in text and key_body not in text
    for folder in (*folders, laptop.pi.log_dir, laptop.pi.info.home):
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert SECRET.encode() not in data and key_body.encode() not in data, path
    log = laptop.pi.server.log_path.read_bytes()
    assert SECRET.encode() not in log and key_body.encode() not in log


# (command, option, hostile value, why it is known to fail today or None: all found bugs are fixed).
# The command gets `--pi testpi`
# unless the option is --pi itself.
REFUSED = [
    ("record", "--pi", "testpi;touch pwned", None),
    ("record", "--pi", "$(touch pwned)", None),
    ("record", "--pi", "-oProxyCommand=touch pwned", None),
    ("record", "--pi", "testpi touch", None),
    ("record", "--pi", "pi@-oProxyCommand=x", None),
    ("record", "--pi", "testpi\n", None),
    ("snap", "--pi", "`touch pwned`", None),
    ("record", "--laptop-ip", "127.0.0.1;touch pwned", None),
    ("record", "--laptop-ip", "$(touch pwned)", None),
    ("record", "--laptop-ip", "127.0.0.1\n", None),
    ("record", "--laptop-ip", "fe80::1%$(touch pwned)", None),
    ("snap", "--laptop-ip", "::1%'\ntouch pwned", None),
    ("record", "--camera-tool", "raspivid;touch pwned", None),
    ("record", "--camera-tool", "raspivid ", None),
    ("snap", "--camera-tool", "raspistill$(touch pwned)", None),
    ("record", "--backend", "nc|touch pwned", None),
    ("snap", "--backend", "builtin\n", None),
    ("record", "--container", "mp4;touch pwned", None),
    ("record", "--container", "../mp4", None),
    ("record", "--codec", "h264 && touch pwned", None),
    ("record", "--segment", "10s;touch pwned", None),
    ("record", "--segment", "nan", None),
    ("record", "--segment", "inf", None),
    ("record", "--port", "10401;touch pwned", None),
    ("record", "--bitrate", "$(touch pwned)", None),
    ("record", "--config", "/nonexistent/$(touch pwned).toml", None),
    ("snap", "--format", "jpg;touch pwned", None),
    ("snap", "--format", "../jpg", None),
    ("snap", "--name", "../pwned", None),
    ("snap", "--name", "$(touch pwned)/x", None),
    ("snap", "--name", "{counter.__class__}", None),
    ("snap", "--name", "{0}", None),
    ("snap", "--name", "-rf", None),
    ("snap", "--name", ".hidden", None),
    ("snap", "--name", "a\nb", None),
    ("snap", "--name", "{counter:99999999d}", None),
]


def said_once(stderr: str, option: str) -> bool:
    """piorch's own one-line error; for an option typer itself parses as a number, click's usage error
    (usage line, hint, then `Error: Invalid value for '--bitrate': ...`), which also names the option."""
    if stderr.startswith("piorch: error: "):
        return stderr.count("\n") == 1
    last = stderr.strip().splitlines()[-1]
    return stderr.startswith("Usage: ") and last.startswith(f"Error: Invalid value for '{option}'")


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [pytest.param(c, o, v, marks=pytest.mark.xfail(reason=why, strict=True)) if why else (c, o, v)
     for c, o, v, why in REFUSED],
)
def test_hostile_option_is_refused_before_anything_runs(laptop: Laptop, command: str, option: str,
                                                        value: str) -> None:
    sessions = laptop.sessions()
    out = laptop.cwd / "out"
    args = [command, *(() if option == "--pi" else ("--pi", laptop.pi.info.alias)), option, value]
    result = laptop.run(*args, "--out", str(out), *(("--seconds", "1") if command == "record" else ()))
    assert_refused_before_anything_ran(laptop, result, option, sessions)


# The same values through the other layers: (config file or environment, key, value, known failure or None).
REFUSED_LAYERS = [
    ("file", "pi", "$(touch pwned)", None),
    ("file", "pis", ["testpi", "testpi;touch pwned"], None),
    ("file", "laptop_ip", "127.0.0.1 ; touch pwned", None),
    ("file", "laptop_ip", "fe80::1%\x00touch pwned", None),
    ("file", "camera_tool", "rpicam-vid`touch pwned`", None),
    ("file", "container", "mkv\n", None),
    ("environment", "pi", "testpi\n", None),
    ("environment", "laptop_ip", "fe80::1%x y", None),
    ("environment", "backend", "nc;touch pwned", None),
]


@pytest.mark.parametrize(
    ("layer", "key", "value"),
    [pytest.param(la, k, v, marks=pytest.mark.xfail(reason=why, strict=True)) if why else (la, k, v)
     for la, k, v, why in REFUSED_LAYERS],
)
def test_hostile_config_value_is_refused_before_anything_runs(laptop: Laptop, tmp_path: Path, layer: str,
                                                              key: str, value: str | list[str]) -> None:
    sessions = laptop.sessions()
    out = laptop.cwd / "out"
    env = dict(laptop.env)
    config = tmp_path / "config.toml"
    if layer == "file":
        # JSON strings and arrays of BMP text are valid TOML values, escapes included.
        config.write_text(f"{key} = {json.dumps(value)}\n" + ("" if key in ("pi", "pis") else 'pi = "testpi"\n'))
    else:
        config.write_text("" if key == "pi" else 'pi = "testpi"\n')
        env[f"PIORCH_{key.upper()}"] = str(value)
    result = subprocess.run(piorch_argv("record", "--config", str(config), "--seconds", "1", "--out", str(out)),
                            env=env, cwd=laptop.cwd, capture_output=True, text=True, timeout=60)
    assert_refused_before_anything_ran(laptop, result, key, sessions)


def assert_refused_before_anything_ran(laptop: Laptop, result: subprocess.CompletedProcess[str], option: str,
                                       sessions: int) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert said_once(result.stderr, option), result.stderr
    assert laptop.sessions() == sessions, "piorch logged in to the Pi before refusing"
    assert laptop.pi.runs() == [] and not laptop.nc_log.exists()
    out = laptop.cwd / "out"
    assert not out.exists() or not any(out.iterdir())
    nothing_left_anywhere(laptop)
    assert_no_secret(laptop, result.stdout, result.stderr)


# A folder name that is every quoting problem at once; piorch takes it (it is only ever a local path).
HOSTILE_FOLDER = "rec $(touch pwned) `touch pwned` 'q' \"dq\" ;|&*?\\ é\ttab #"


def test_record_into_a_hostile_folder_runs_exactly_the_intended_argv(laptop: Laptop, tmp_path: Path) -> None:
    out = tmp_path / HOSTILE_FOLDER
    port = free_port()
    runs_before = len(laptop.pi.runs())
    result = laptop.run("record", "--pi", laptop.pi.info.alias, "--seconds", "1", "--out", str(out),
                        "--laptop-ip", "127.0.0.1", "--port", str(port), "--bitrate", "2000000", "--width", "640",
                        "--height", "360", "--fps", "25", "--container", "mp4")
    assert result.returncode == 0, result.stderr
    (run,) = laptop.pi.runs()[runs_before:]
    (manifest,) = manifests(out)
    assert manifest["status"] == "complete" and (out / str(manifest["file"])).suffix == ".mp4"
    # What piorch meant (its own manifest) is what the Pi ran, and that is build_camera_argv's line with the
    # camera's timestamps asked for (pi/timestamps.py); only -t varies: it is the time left when the camera
    # starts, at most the 1 s asked for.
    assert run["argv"] == manifest["remote_argv"]
    argv = [str(arg) for arg in cast(list, run["argv"])]
    duration_ms = int(argv[argv.index("-t") + 1])
    assert 500 <= duration_ms <= 1000
    camera = CameraSettings(bitrate=2_000_000, width=640, height=360, fps=25, duration_ms=duration_ms)
    asked = TimestampPlan(FrameClock.CAMERA)
    assert argv == add_timestamp_options(build_camera_argv(camera, CameraTool.RASPIVID), asked)
    nc_calls = read_argv_log(laptop.nc_log)
    laptop.nc_log.unlink()
    assert nc_calls == [build_nc_send_argv(NetcatFlavour.OPENBSD, "127.0.0.1", port)[1:]]
    nothing_left_anywhere(laptop)
    assert_no_secret(laptop, result.stdout, result.stderr, folders=(out,))


def test_a_relative_folder_that_looks_like_an_ffmpeg_url_is_still_a_folder(laptop: Laptop) -> None:
    runs_before = len(laptop.pi.runs())
    result = laptop.run("record", "--pi", laptop.pi.info.alias, "--seconds", "1", "--out", "pipe:1",
                        "--port", "0", "--bitrate", "2000000", "--width", "640", "--height", "360", "--fps", "25",
                        "--container", "mp4")
    laptop.nc_log.unlink(missing_ok=True)
    out = laptop.cwd / "pipe:1"
    try:
        assert result.returncode == 0, result.stderr
        assert len(laptop.pi.runs()) == runs_before + 1
        (manifest,) = manifests(out)
        assert str(manifest["file"]).endswith(".mp4"), result.stderr
    finally:
        if out.exists():  # the other tests check that piorch's working folder stays empty
            shutil.rmtree(out)


def test_snap_name_template_full_of_metacharacters_names_the_file_and_nothing_else(laptop: Laptop,
                                                                                    tmp_path: Path) -> None:
    out = tmp_path / HOSTILE_FOLDER
    template = "$(touch pwned) `id` 'q' \"dq\" ;|&*?~ é {counter:03d}"
    runs_before = len(laptop.pi.runs())
    result = laptop.run("snap", "--pi", laptop.pi.info.alias, "--out", str(out), "--name", template,
                        "--port", "0", "--camera-tool", "raspistill", "--width", "640", "--height", "480")
    assert result.returncode == 0, result.stderr
    expected = "$(touch pwned) `id` 'q' \"dq\" ;|&*?~ é 001.jpg"
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".jpg") == [expected]
    (run,) = laptop.pi.runs()[runs_before:]
    still = StillSettings(width=640, height=480)
    assert run["argv"] == build_still_argv(still, StillTool.RASPISTILL)
    (nc_call,) = read_argv_log(laptop.nc_log)
    laptop.nc_log.unlink()
    # The port is the receiver's pick; -n: the address is never looked up in DNS.
    assert nc_call[:4] == ["-v", "-n", "-N", "127.0.0.1"] and len(nc_call) == 5
    nothing_left_anywhere(laptop)
    assert_no_secret(laptop, result.stdout, result.stderr, folders=(out,))


def test_pipeline_script_quotes_for_the_login_shell_too() -> None:
    """The script is parsed twice (the login shell, then `sh -c`): one split gives back exactly 5 words."""
    script = build_pipeline_script(["cam", *PAYLOADS], ["nc", "$(touch pwned)", "1"])
    words = shlex.split(script)
    assert words[:5] == ["exec", "setsid", "-w", "sh", "-c"] and len(words) == 6
