"""Where to connect, as written by the user: `[user@]host[:port]` targets and ProxyJump hops (pure)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import ConnectError
from orchestrator.pi.target import SshTarget, installed_version, parse_target, resolve_target


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
