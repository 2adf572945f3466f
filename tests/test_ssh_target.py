"""Where to connect, as written by the user: `[user@]host[:port]` targets and ProxyJump hops (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConnectError
from orchestrator.pi.target import SshTarget, parse_target, resolve_target


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
