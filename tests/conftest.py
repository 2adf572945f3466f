"""Shared fixtures. The sshd fixture logic lives in tests/sshd_server.py; this file only wires it to pytest."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from tests.sshd_server import DEFAULT_ALIAS, SshServer, SshServerFactory, SshServerInfo
from tests.system_tools import E2E_REQUIRED_ENV, require_tool


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e: end-to-end test against a real OpenSSH sshd on loopback "
        f"(skipped without sshd unless {E2E_REQUIRED_ENV}=1, then it fails)",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skip for a missing system tool is listed at the test that needed the tool, not inside the helper."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]  # pluggy's Result
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and longrepr[0].endswith("system_tools.py"):
        path, line, _ = item.reportinfo()
        report.longrepr = (str(path), (line or 0) + 1, longrepr[2])


def _require_sshd() -> None:
    """The fake Pi needs sshd, and ssh-keygen for its keys; skipped without them (failed in CI)."""
    require_tool("sshd")
    require_tool("ssh-keygen")


# Function scope: a server starts in ~0.05 s (two ed25519 keys + sshd; stop ~5 ms), so every test gets its own
# keys, port, bin_dir and home, and a test that kills or restarts "the Pi" cannot affect the next one.
@pytest.fixture
def sshd_server() -> Iterator[SshServer]:
    """The running fake Pi itself, for tests that kill() or restart() it."""
    _require_sshd()
    with SshServer() as server:
        yield server


@pytest.fixture
def sshd(sshd_server: SshServer) -> SshServerInfo:
    """How to reach the fake Pi: host, port, keys, ssh_config with the `testpi` alias, bin_dir, home."""
    return sshd_server.info


@pytest.fixture
def sshd_factory() -> Iterator[SshServerFactory]:
    """Start extra, independent fake Pis: `pi = sshd_factory(extra_env={...}, alias="pi2")`."""
    _require_sshd()
    servers: list[SshServer] = []

    def start(extra_env: Mapping[str, str] | None = None, *, alias: str = DEFAULT_ALIAS) -> SshServer:
        server = SshServer(extra_env, alias=alias)
        server.start()
        servers.append(server)
        return server

    yield start
    errors: list[BaseException] = []
    # Stop in reverse order of starting; one failing stop must not leave the others running.
    for server in reversed(servers):
        try:
            server.stop()
        except Exception as exc:  # reported below, after every server got its chance to stop
            errors.append(exc)
    if errors:
        raise errors[0]
