"""Where the Pi is: `[user@]host[:port]` or an alias, with the OpenSSH client config (~/.ssh/config) applied.

paramiko never reads ~/.ssh/config by itself, so HostName, User, Port, IdentityFile, IdentitiesOnly,
UserKnownHostsFile, ProxyJump and ProxyCommand are looked up here (paramiko.SSHConfig; `Include` is not
supported by it). paramiko is imported here, the first thing a connection needs (see `load_paramiko`).
"""

from __future__ import annotations

import functools
import getpass
import importlib
import importlib.machinery
import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

from orchestrator.errors import ConnectError

T = TypeVar("T")

# The only OpenSSH config lines paramiko needs `invoke` for (`Match exec`); an `Include`d file might hold one.
_NEEDS_INVOKE = re.compile(r"^\s*(?:match\b.*\bexec\b|include\b)", re.IGNORECASE | re.MULTILINE)


def load_paramiko(ssh_config: Path | None) -> ModuleType:
    """paramiko, imported without the two imports of its own that piorch's connections never use.

    - paramiko.config imports invoke at import time (60-140 ms of piorch's start) only to run `Match exec`
      lines. When the config has none, invoke's import is made to fail fast for paramiko's own import
      (paramiko then keeps None, as when invoke is not installed).
    - paramiko 4 and newer read their own version at import time with `importlib.metadata.version`, and
      importing importlib.metadata (email, zipfile, csv) costs 10-16 ms of the start (benchmarks/startup.py).
      The version is read from paramiko's dist-info beside it instead (`installed_version`); any other use
      of that module, or a version not plainly there, gets the real importlib.metadata.

    Both stand-ins are only in place during paramiko's own import (importlib.metadata also as the importlib
    package's attribute, so that another thread's `import importlib.metadata` meanwhile gets a module that
    works): a later `import invoke` or `import importlib.metadata` works as usual.
    """
    if "paramiko" not in sys.modules:
        stand_ins: dict[str, ModuleType | None] = {}
        if "invoke" not in sys.modules and not _may_need_invoke(ssh_config):
            stand_ins["invoke"] = None
        metadata: ModuleType | None = None
        if "importlib.metadata" not in sys.modules and (version := installed_version("paramiko")) is not None:
            metadata = stand_ins["importlib.metadata"] = _metadata_knowing("paramiko", version)
        sys.modules.update(stand_ins)  # type: ignore[arg-type]
        if metadata is not None:
            importlib.metadata = metadata  # type: ignore[assignment]
        try:
            import paramiko
        finally:
            for name, module in stand_ins.items():
                if name in sys.modules and sys.modules[name] is module:
                    del sys.modules[name]
            if metadata is not None and getattr(importlib, "metadata", None) is metadata:
                del importlib.metadata
    import paramiko

    return paramiko


def installed_version(name: str) -> str | None:
    """The `Version:` in the one dist-info beside the copy of package `name` that an import finds on
    sys.path, read as importlib.metadata would; None where that is not plain (not a folder on the file
    system, no dist-info or two, an unreadable METADATA), and then the real importlib.metadata answers."""
    try:
        spec = importlib.machinery.PathFinder.find_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith("__init__.py"):
            return None
        folder = Path(spec.origin).parent.parent
        prefix = f"{name}-"
        found = [item for item in os.listdir(folder) if item.startswith(prefix) and item.endswith(".dist-info")]
        if len(found) != 1:
            return None
        with open(folder / found[0] / "METADATA", encoding="utf-8") as metadata:
            for line in metadata:
                if line.startswith("Version:"):
                    return line[len("Version:"):].strip() or None
                if not line.strip():  # the end of the headers
                    return None
    except (OSError, ValueError):  # an unreadable folder, a path too long, a METADATA that is not UTF-8
        return None
    return None


def _metadata_knowing(name: str, version: str) -> ModuleType:
    """A stand-in for importlib.metadata that answers `version(name)` and hands everything else to the real
    module (imported then, with the stand-in out of the way)."""
    stand_in = ModuleType("importlib.metadata")

    def real() -> ModuleType:
        if sys.modules.get("importlib.metadata") is stand_in:
            del sys.modules["importlib.metadata"]
        import importlib.metadata

        return importlib.metadata

    def answer(distribution_name: str) -> str:
        return version if distribution_name == name else str(real().version(distribution_name))

    stand_in.version = answer  # type: ignore[attr-defined]
    stand_in.__getattr__ = lambda attribute: getattr(real(), attribute)  # type: ignore[method-assign]
    return stand_in


def _may_need_invoke(ssh_config: Path | None) -> bool:
    if ssh_config is None:
        return False
    try:
        text = ssh_config.expanduser().read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False  # no file: no Match exec
    return _NEEDS_INVOKE.search(text) is not None


@dataclass(frozen=True)
class SshTarget:
    """Where and how to connect, after ~/.ssh/config was applied."""

    alias: str
    hostname: str
    port: int = 22
    user: str | None = None
    identity_files: tuple[Path, ...] = ()
    identities_only: bool = False
    # Empty means OpenSSH's default, expanded when used (not at import: HOME may change, e.g. under sudo).
    known_hosts: tuple[Path, ...] = ()
    # The hops as written (`a,b`), or None; the config's `ProxyJump none` is None too.
    proxy_jump: str | None = None
    proxy_command: str | None = None

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH names this host in known_hosts: bare for port 22, `[host]:port` otherwise."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def display(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.hostname}{'' if self.port == 22 else f':{self.port}'}"

    @property
    def jump_hops(self) -> tuple[str, ...]:
        """The ProxyJump hosts in the order they are passed through, each as `[user@]host[:port]`: OpenSSH
        also takes a hop as an ssh URI (`ssh://[user@]host[:port]`, ssh_config(5)), read here the same."""
        hops = (hop.strip() for hop in (self.proxy_jump or "").split(","))
        return tuple(_without_scheme(hop) for hop in hops if hop)


def _without_scheme(hop: str) -> str:
    if hop.lower().startswith("ssh://"):
        hop = hop[len("ssh://"):]
        return hop[:-1] if hop.endswith("/") else hop
    return hop


_TARGET = re.compile(r"^(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:]+)(?::(?P<port>\d+))?$")


def parse_target(text: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` -> (user, host, port); IPv6 goes in brackets."""
    match = _TARGET.match(text)
    if not match:
        raise ConnectError(f"cannot read the Pi address {text!r}", "write it as [user@]host[:port]")
    host = match.group("host").strip("[]")
    port = int(match.group("port")) if match.group("port") else None
    return match.group("user"), host, port


class ReadOnce(Generic[T]):
    """What reading a file gave, kept per path for the process and read again once its stat differs: the
    ssh_config for every Pi it names, a known_hosts file for every Pi in it (pi/hostkey.py). `get` may be
    called from the threads of several Pis at once."""

    def __init__(self, read: Callable[[Path], T]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._kept: dict[Path, tuple[tuple[int, int, int, int], T]] = {}

    def get(self, path: Path, info: os.stat_result) -> T:
        signature = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            kept = self._kept.get(path)
            if kept is None or kept[0] != signature:
                kept = self._kept[path] = (signature, self._read(path))
            return kept[1]


def login_name(target: SshTarget) -> str:
    """The user to log in as: the target's, else the laptop user's, as ssh does."""
    if target.user:
        return target.user
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no name: see _nameless_user_error
        raise ConnectError(f"no user to log in to {target.display} as: this laptop's uid {os.getuid()} has no "
                           "name (no USER, no passwd entry)",
                           f"name the user: NAME@{target.alias} (in ProxyJump for a jump host), or a User line "
                           "for it in the ssh_config") from None


def _nameless_user_error() -> BaseException | None:
    """What getpass.getuser() raises for a uid with no passwd entry and none of LOGNAME, USER, LNAME and
    USERNAME (KeyError up to Python 3.12, OSError since), or None when the laptop's user has a name."""
    try:
        getpass.getuser()
    except (KeyError, OSError) as exc:
        return exc
    return None


def _is_nameless_user_error(exc: BaseException) -> bool:
    """`exc` is getuser's own failure, not another KeyError or OSError of the lookup (an unreadable file)."""
    own = _nameless_user_error()
    return own is not None and type(own) is type(exc) and own.args == exc.args


def _parse_config(path: Path) -> Any:
    return _lean_config_class().from_path(str(path))


@functools.cache
def _lean_config_class() -> Any:
    """paramiko's SSHConfig, minus work whose result its lookup then throws away. Each lookup goes through
    every Host block twice, and for each block whose patterns do not match, paramiko asks the laptop's user
    name (getpass) before it looks at the block's `Match` conditions, even when it has none. Then, for each
    value that may hold `%` tokens or `~`, it asks the user name and the host name and builds every token's
    replacement (the local FQDN by two name lookups for IdentityFile and ControlPath) before it looks
    whether the value holds any. A lookup costs ~90 us and ~40 system calls that way (a fleet makes one per
    Pi, each letting go of the GIL while the other Pis log in), ~30 us and none without it.

    The answers are the same: a block without `Match` never matches through it, and a value without `%`
    has no token but `~`, the last one paramiko replaces. It also means a laptop user with no name (a
    container's uid with no passwd entry and no USER) can use a config with no Match block and no %-token;
    paramiko's own lookup failed as soon as one block did not match the host."""
    import paramiko  # resolve_target has loaded it (load_paramiko)

    class LeanConfig(paramiko.SSHConfig):
        def _does_match(self, match_list: list[dict[str, Any]], target_hostname: str, canonical: bool,
                        final: bool, options: dict[str, Any]) -> Any:
            if not match_list:
                return []  # what paramiko's loop gives for no conditions, without asking the user name
            return super()._does_match(  # type: ignore[misc]  # private: not in paramiko's stubs
                match_list, target_hostname, canonical, final, options)

        def _tokenize(self, config: dict[str, Any], target_hostname: str, key: str, value: Any) -> Any:
            if isinstance(value, str) and "%" not in value:
                if "~" not in value or "~" not in self._allowed_tokens(key):  # type: ignore[attr-defined]
                    return value
                return value.replace("~", os.path.expanduser("~"))  # as paramiko's own `~` token
            return super()._tokenize(config, target_hostname, key, value)  # type: ignore[misc]

    return LeanConfig


# paramiko's SSHConfig of each file: a lookup only reads it, so the threads of several Pis share one.
_CONFIGS: ReadOnce[Any] = ReadOnce(_parse_config)


def resolve_target(text: str, ssh_config: Path | None) -> SshTarget:
    """Apply the OpenSSH client config (when it exists) to a `[user@]host[:port]` or alias."""
    user, host, port = parse_target(text)
    looked: dict[str, Any] = {}
    load_paramiko(ssh_config)  # here, for every connection: invoke left out where it can be
    if ssh_config is not None and ssh_config.expanduser().is_file():
        try:
            path = ssh_config.expanduser()
            looked = dict(_CONFIGS.get(path, path.stat()).lookup(host))
        except Exception as exc:  # paramiko raises several unrelated types for a bad file
            if _is_nameless_user_error(exc):
                raise ConnectError(f"SSH config {ssh_config} needs this laptop's user name (for a Match block, or "
                                   f"a %-token in HostName, IdentityFile, ControlPath, ProxyCommand or ProxyJump), "
                                   f"and uid {os.getuid()} has none: no USER, no passwd entry",
                                   "set USER (USER=name piorch ...)") from None
            raise ConnectError(f"cannot read SSH config {ssh_config} ({exc})",
                               "fix that file or point ssh_config elsewhere") from None
    try:
        known = tuple(Path(p).expanduser() for p in str(looked.get("userknownhostsfile", "")).split() if p)
        identities = tuple(Path(p).expanduser() for p in looked.get("identityfile", []))
    except RuntimeError as exc:  # `~someone/...` for a user this laptop does not have
        raise ConnectError(f"cannot read SSH config {ssh_config} ({exc})",
                           "fix that file or point ssh_config elsewhere") from None
    given_port = str(looked.get("port", 22))
    if port is None and not (given_port.isdigit() and 0 < int(given_port) < 65536):
        raise ConnectError(f"cannot read SSH config {ssh_config} (Port {given_port!r} for {host} is no port number)",
                           "fix that file or point ssh_config elsewhere")
    jump = looked.get("proxyjump")
    return SshTarget(
        alias=text,
        hostname=str(looked.get("hostname", host)),
        port=port or int(given_port),
        user=user or looked.get("user"),
        identity_files=identities,
        identities_only=str(looked.get("identitiesonly", "no")).lower() == "yes",
        known_hosts=known or (Path("~/.ssh/known_hosts").expanduser(),),
        # paramiko turns `ProxyCommand none` into None itself, but leaves `ProxyJump none` as the word.
        proxy_jump=None if jump is None or str(jump).lower() == "none" else str(jump),
        proxy_command=looked.get("proxycommand"),
    )
