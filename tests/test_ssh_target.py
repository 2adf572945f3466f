"""Where to connect, as written by the user: `[user@]host[:port]` targets and ProxyJump hops (pure)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import ConnectError
from orchestrator.pi.target import SshTarget, installed_version, parse_target, resolve_target
from tests.system_tools import nameless_uid, run_as_nameless_user

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("text", "parsed"), [
    ("cam1", (None, "cam1", None)),
    ("pi@192.168.50.2", ("pi", "192.168.50.2", None)),
    ("pi@192.168.50.2:2222", ("pi", "192.168.50.2", 2222)),
    ("[fe80::1]:22", (None, "fe80::1", 22)),
])
def test_targets(text: str, parsed: tuple[str | None, str, int | None]) -> None:
    assert parse_target(text) == parsed


def test_a_target_that_is_no_address_is_refused() -> None:
    with pytest.raises(ConnectError):
        parse_target("pi@host:port")


@pytest.mark.parametrize(("proxy_jump", "hops"), [
    (None, ()),
    ("jump1", ("jump1",)),
    ("jump1, pi@jump2:2222", ("jump1", "pi@jump2:2222")),
    # OpenSSH also takes a hop as an ssh URI (ssh_config(5) ProxyJump).
    ("ssh://pi@gateway:2222,ssh://jump2/", ("pi@gateway:2222", "jump2")),
    ("SSH://gateway", ("gateway",)),
])
def test_jump_hops(proxy_jump: str | None, hops: tuple[str, ...]) -> None:
    target = SshTarget("cam1", "10.0.0.2", proxy_jump=proxy_jump)
    assert target.jump_hops == hops
    for hop in hops:
        parse_target(hop)  # each one reads as a target


def test_an_ssh_config_port_that_is_no_number_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host cam1\n    HostName 10.0.0.2\n    Port abc\nHost cam2\n    Port 70000\n")
    for alias, port in (("cam1", "abc"), ("cam2", "70000")):
        with pytest.raises(ConnectError, match=f"Port '{port}' for {alias} is no port number"):
            resolve_target(alias, config)
    assert resolve_target("cam1:2222", config).port == 2222  # a port given with the Pi wins, as in OpenSSH


def _imports_after_loading(tmp_path: Path, config_text: str | None) -> dict[str, object]:
    """load_paramiko in a fresh interpreter: which of the left-out modules it imported, and the version."""
    config = tmp_path / "ssh_config"
    if config_text is not None:
        config.write_text(config_text)
    code = (
        "import json, sys; from pathlib import Path; from orchestrator.pi.target import load_paramiko; "
        f"paramiko = load_paramiko(Path({str(config)!r})); "
        "seen = {name: name in sys.modules for name in ('invoke', 'importlib.metadata')}; "
        "seen['version'] = paramiko.__version__; "
        "import importlib.metadata; seen['real_version'] = importlib.metadata.version('paramiko'); "
        "seen['metadata_is_real'] = importlib.metadata.distribution('paramiko').metadata['Name'].lower(); "
        "print(json.dumps(seen))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def test_paramiko_is_loaded_without_invoke_or_importlib_metadata(tmp_path: Path) -> None:
    seen = _imports_after_loading(tmp_path, "Host cam1\n  HostName 10.0.0.2\n")
    assert seen["invoke"] is False
    assert seen["importlib.metadata"] is False
    # paramiko's own version is still right, and importlib.metadata works as usual afterwards.
    assert seen["version"] == seen["real_version"]
    assert seen["metadata_is_real"] == "paramiko"


def test_a_config_with_match_exec_gets_invoke(tmp_path: Path) -> None:
    pytest.importorskip("invoke")
    seen = _imports_after_loading(tmp_path, "Match exec \"true\"\n  User pi\n")
    assert seen["invoke"] is True


def _fake_package(root: Path, name: str, versions: tuple[str, ...]) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    for version in versions:
        info = root / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nText.\n")


def test_installed_version_reads_the_one_dist_info_beside_the_package(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path / "one", "fakepkg", ("1.2.3",))
    _fake_package(tmp_path / "two", "otherpkg", ("1.0", "2.0"))  # two installs' leftovers: not plain
    (tmp_path / "none" / "barepkg").mkdir(parents=True)
    (tmp_path / "none" / "barepkg" / "__init__.py").write_text("")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "one"), str(tmp_path / "two"), str(tmp_path / "none")])
    assert installed_version("fakepkg") == "1.2.3"
    assert installed_version("otherpkg") is None
    assert installed_version("barepkg") is None
    assert installed_version("notinstalled") is None


def test_another_thread_importing_importlib_metadata_meanwhile_gets_a_working_module() -> None:
    # While paramiko's import holds the stand-in (here: held open inside it by a finder that waits), a
    # thread of the user's (the Python API) or a fleet's imports importlib.metadata and uses it.
    code = """
import sys, threading
from orchestrator.pi.target import load_paramiko
inside, go_on = threading.Event(), threading.Event()
def held(frame, event, arg):
    # Paused where paramiko's own import runs paramiko.transport's body (module locks held, the global
    # import lock not), as a slow import would be.
    if event == "call" and frame.f_code.co_name == "<module>" and frame.f_code.co_filename.endswith(
            "paramiko/transport.py"):
        inside.set(); go_on.wait(10)
    return None
def load():
    sys.settrace(held)
    load_paramiko(None)
loader = threading.Thread(target=load); loader.start()
assert inside.wait(10)
import importlib.metadata
print(importlib.metadata.version("paramiko"), importlib.metadata.distribution("paramiko").metadata["Name"])
go_on.set(); loader.join()
import paramiko
print(paramiko.__version__)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    during, name, after = done.stdout.split()
    assert during == after and name.lower() == "paramiko"


def test_the_ssh_config_is_parsed_once_for_every_pi_and_again_when_it_changes(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import paramiko

    config = tmp_path / "ssh_config"
    config.write_text("Host cam1\n    HostName 10.0.0.1\nHost cam2\n    HostName 10.0.0.2\n")
    parsed: list[str] = []
    original = paramiko.SSHConfig.from_path

    def counting(path: str) -> paramiko.SSHConfig:
        parsed.append(path)
        return original(path)

    monkeypatch.setattr(paramiko.SSHConfig, "from_path", staticmethod(counting))
    assert [resolve_target(name, config).hostname for name in ("cam1", "cam2", "cam1")] == \
        ["10.0.0.1", "10.0.0.2", "10.0.0.1"]
    assert parsed == [str(config)]
    config.write_text("Host cam1\n    HostName 10.0.0.11\n")
    assert resolve_target("cam1", config).hostname == "10.0.0.11"
    assert resolve_target("cam2", config).hostname == "cam2"
    assert parsed == [str(config)] * 2


# Pieces of ssh_config for test_the_lookup_answers_as_paramikos_own: patterns and values with and without
# every token paramiko knows, and `~` alone where it is a token (IdentityFile, ProxyCommand) and where it is
# not (HostName, ControlPath, ProxyJump, UserKnownHostsFile, LocalCommand).
_PATTERNS = ("cam1", "cam*", "!cam2", "cam?", "*.lab", "*", "other", "cam1 cam3", "!*.lab *")
_MATCHES = ("host cam1", "originalhost cam*", "user pi", "user !pi", "localuser tester", "localuser !tester",
            "all", "host cam2 user root")
_VALUES = (
    ("HostName", ("10.0.0.%h", "%h.lab", "10.0.0.2", "pi-%h", "~h")),
    ("User", ("pi", "root", "%u")),
    ("Port", ("2222", "22")),
    ("IdentityFile", ("~/.ssh/id_ed25519", "%d/.ssh/%u-%h", "/keys/%C", "/keys/%r@%l", "/keys/plain",
                      "~/%%h/%h", "/k/~x")),
    ("ControlPath", ("none", "~/.ssh/cm-%C", "/tmp/%r@%h:%p", "/tmp/%L-%n-%l-%u", "~/cm")),
    ("ProxyJump", ("none", "jump@%h:%p", "hop1,hop2", "~j")),
    ("ProxyCommand", ("none", "nc %h %p", "~/bin/tunnel %h %r", "~/bin/tunnel")),
    ("UserKnownHostsFile", ("~/.ssh/known_%h", "/kh/plain", "~/.ssh/known_hosts2")),
    ("LocalCommand", ("~/bin/hello", "echo %h")),
    ("IdentitiesOnly", ("yes", "no")),
)


def _random_config(rng: random.Random) -> str:
    blocks = []
    for _ in range(rng.randint(1, 6)):
        head = f"Host {rng.choice(_PATTERNS)}" if rng.random() < 0.7 else f"Match {rng.choice(_MATCHES)}"
        lines = [f"    {key} {rng.choice(values)}" for key, values in rng.sample(_VALUES, rng.randint(1, 5))]
        blocks.append("\n".join([head, *lines]))
    return "\n".join(blocks) + "\n"


def test_the_lookup_answers_as_paramikos_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """piorch's SSHConfig leaves out work (target._lean_config_class): on 300 random configs, every host
    asked gets what paramiko's own lookup gives, or the same error."""
    import socket

    import paramiko

    from orchestrator.pi.target import _lean_config_class

    monkeypatch.setenv("USER", "tester")
    monkeypatch.setenv("LOGNAME", "tester")
    # %l is the laptop's FQDN: a fixed one, so no name lookup leaves this machine.
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "laptop.example")
    rng = random.Random(14)
    lean = _lean_config_class()
    compared = 0
    for _ in range(300):
        text = _random_config(rng)
        own, ours = paramiko.SSHConfig.from_text(text), lean.from_text(text)
        for host in ("cam1", "cam2", "cam3", "pi.lab", "other", "x"):
            try:
                expected: object = dict(own.lookup(host))
            except Exception as exc:  # the same failure is what is compared
                expected = type(exc)
            try:
                got: object = dict(ours.lookup(host))
            except Exception as exc:
                got = type(exc)
            assert got == expected, f"{host} in:\n{text}"
            compared += 1
    assert compared == 1800


def _resolve_without_a_user_name(tmp_path: Path, config_text: str, target: str, mode: int = 0o644) -> str:
    """resolve_target and login_name as a uid with no passwd entry and no USER (run_as_nameless_user); what
    they gave or the error's message and fix."""
    config = tmp_path / "ssh_config"
    config.write_text(config_text)
    config.chmod(mode)
    code = (
        "import getpass, os; from pathlib import Path\n"
        "from orchestrator.errors import ConnectError\n"
        "from orchestrator.pi.target import login_name, resolve_target\n"
        "try:\n"
        f"    target = resolve_target({target!r}, Path({str(config)!r}))\n"
        "    print('target', target.hostname, login_name(target))\n"
        "except ConnectError as exc:\n"
        "    print('error', exc.message, '|', exc.fix)\n"
    )
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = run_as_nameless_user([sys.executable, "-c", code], env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().replace(f"uid {nameless_uid()} ", "uid UID ")


def test_a_laptop_user_without_a_name_reads_a_config_that_never_needs_it(tmp_path: Path) -> None:
    """paramiko's own lookup asks the laptop's user name for every block and fails for such a uid; a
    config that names the Pi's user and no %u needs none."""
    # `Host other` does not match cam1: paramiko asked the user name right there.
    config = ("Host other\n    Port 2\nHost cam1\n    HostName 10.0.0.2\n    User pi\n"
              "    IdentityFile ~/.ssh/id_ed25519\nHost *\n    Port 22\n")
    assert _resolve_without_a_user_name(tmp_path, config, "cam1") == "target 10.0.0.2 pi"


NEEDS_NAME = ("error SSH config {config} needs this laptop's user name (for a Match block, or a %-token in "
              "HostName, IdentityFile, ControlPath, ProxyCommand or ProxyJump), and uid UID has none: no USER, no "
              "passwd entry | set USER (USER=name piorch ...)")


@pytest.mark.parametrize(("config", "target", "says"), [
    # The config asks for the name: one line naming what is missing and how to give it.
    ("Host cam1\n    HostName 10.0.0.2\n    IdentityFile /keys/%u\n", "cam1", NEEDS_NAME),
    ("Match localuser bob\n    User x\n", "cam1", NEEDS_NAME),
    ("Host cam1\n    HostName %h.lan\n    User pi\n", "cam1", NEEDS_NAME),
    # Nothing names the user to log in as: it cannot be guessed (ssh refuses such a uid outright).
    ("Host other\n    User x\nHost cam1\n    HostName 10.0.0.2\n", "cam1",
     "error no user to log in to 10.0.0.2 as: this laptop's uid UID has no name (no USER, no passwd entry) | "
     "name the user: NAME@cam1 (in ProxyJump for a jump host), or a User line for it in the ssh_config"),
])
def test_a_laptop_user_without_a_name_is_told_what_to_set(tmp_path: Path, config: str, target: str,
                                                         says: str) -> None:
    assert _resolve_without_a_user_name(tmp_path, config, target) == says.format(config=tmp_path / "ssh_config")


def test_another_failure_of_the_lookup_is_not_blamed_on_a_nameless_user(tmp_path: Path) -> None:
    """CanonicalizeHostname without CanonicalDomains makes paramiko raise a KeyError of its own: that is the
    config's fault, said as such, even for a uid with no name."""
    config = "Host other\n    Port 2\nHost cam1\n    CanonicalizeHostname yes\n    User pi\n"
    said = _resolve_without_a_user_name(tmp_path, config, "cam1")
    assert said == f"error cannot read SSH config {tmp_path / 'ssh_config'} ('canonicaldomains') | fix that file or " \
        "point ssh_config elsewhere"


def test_an_unreadable_config_is_not_blamed_on_a_nameless_user(tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    said = _resolve_without_a_user_name(tmp_path, "Host cam1\n    User pi\n", "cam1", mode=0o000)
    assert said == f"error cannot read SSH config {config} ([Errno 13] Permission denied: '{config}') | fix that " \
        "file or point ssh_config elsewhere"
