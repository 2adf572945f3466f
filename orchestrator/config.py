"""Configuration: one table of keys, read from defaults < config file < PIORCH_* environment < flags.

Every key is documented in `configs/piorch.example.toml`. A bad value names the file (or variable), the
key and the fix, so a user never has to guess which of the four layers is wrong.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


def check_port(value: int) -> str | None:
    # 0 asks the builtin receiver for any free port (the Pi is told which one).
    return None if 0 <= value <= 65535 else "must be a TCP port between 1 and 65535 (0: any free port)"


def check_bitrate(value: int) -> str | None:
    # 62.5 Mbit/s is H.264 level 4.2's ceiling, raspivid's highest (MAX_BITRATE_LEVEL42). What each tool does
    # with a value in range is decided in pi/camera.py: raspivid gets `-lev 4.2` above 25 Mbit/s (at its default
    # level 4 it would silently lower it to 25) and an MJPEG bitrate over 25 Mbit/s is refused (raspivid's MJPEG
    # ceiling); rpicam-vid passes it to its H.264 encoder and ignores it for MJPEG (quality only).
    return None if 100_000 <= value <= 62_500_000 else "must be between 100000 and 62500000 bit/s"


def check_dimension(value: int) -> str | None:
    if not 64 <= value <= 4096:
        return "must be between 64 and 4096 pixels"
    return None if value % 2 == 0 else "must be an even number of pixels"


def check_fps(value: int) -> str | None:
    return None if 1 <= value <= 120 else "must be between 1 and 120 frames per second"


_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def check_ip(value: str) -> str | None:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return "must be an IP address such as 192.168.50.1"
    # ipaddress takes any text as an IPv6 zone (`fe80::1%...`): only an interface name is one.
    zone = getattr(address, "scope_id", None)
    if zone is not None and not _ZONE.fullmatch(zone):
        return "has a zone that is not an interface name (fe80::1%eth0)"
    return None


def check_choice(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


# A Pi target is `[user@]host[:port]` or an ssh_config alias. The pattern keeps out whitespace, shell
# metacharacters and a leading '-' (which ssh tools would read as an option).
_TARGET = re.compile(r"^(?:[A-Za-z0-9._-]+@)?(?:[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


def check_pi_target(value: str) -> str | None:
    # fullmatch: `$` would also accept a trailing newline.
    if _TARGET.fullmatch(value) and not value.startswith("-"):
        return None
    return "must be [user@]host[:port] or an alias from ~/.ssh/config (letters, digits, . _ - only)"


def check_pi_targets(values: list[str]) -> str | None:
    for value in values:
        if check_pi_target(value) is not None:
            return f"holds {value!r}, which is not [user@]host[:port] or an alias"
    return None


def parse_pi_ports(values: list[str]) -> dict[str, int]:
    """`["cam1=10410", ...]` -> {"cam1": 10410}; ValueError naming the entry that is wrong."""
    ports: dict[str, int] = {}
    for value in values:
        name, _, port = value.partition("=")
        if not name or check_pi_target(name) is not None or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"holds {value!r}, which is not NAME=PORT")
        ports[name] = int(port)
    return ports


def check_pi_ports(values: list[str]) -> str | None:
    try:
        parse_pi_ports(values)
    except ValueError as exc:
        return str(exc)
    return None


# Keys that would hold a secret. piorch itself has none; a file that has one and that others can read is
# refused, so a password pasted into the config is not left readable by every user of the laptop.
_SECRET = re.compile(r"pass|secret|token|private|credential", re.IGNORECASE)


@dataclass(frozen=True)
class Key:
    name: str
    kind: type
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None


KEYS: dict[str, Key] = {
    key.name: key
    for key in (
        Key("pi", str, "", "the Pi to record from: [user@]host[:port] or an ~/.ssh/config alias",
            check_pi_target),
        Key("pis", list, [], "several Pis recorded at once (used when no --pi is given), e.g. [\"cam1\", \"cam2\"]",
            check_pi_targets),
        Key("pi_ports", list, [], "a port of its own for some Pis of a multi-Pi recording, e.g. [\"cam2=10450\"]",
            check_pi_ports),
        Key("laptop_ip", str, "", "address the Pi sends to (empty: the local address of the SSH connection)",
            check_ip),
        Key("port", int, 10401, "TCP port the laptop receives on", check_port),
        Key("out", str, "recv", "folder for received files"),
        Key("bitrate", int, 16_000_000, "H.264 bitrate in bit/s", check_bitrate),
        Key("width", int, 1920, "video width in pixels", check_dimension),
        Key("height", int, 1080, "video height in pixels", check_dimension),
        Key("fps", int, 30, "frames per second", check_fps),
        Key("vflip", bool, False, "flip the picture vertically"),
        Key("hflip", bool, False, "flip the picture horizontally"),
        Key("timestamps", bool, True, "record: ask the camera for its own frame timestamps (-pts/--save-pts through "
            "a named pipe on the Pi); false: frame times from the frame rate"),
        Key("camera_tool", str, "auto", "auto, raspivid, libcamera-vid or rpicam-vid",
            check_choice("auto", "raspivid", "libcamera-vid", "rpicam-vid")),
        Key("container", str, "mp4", "file type: mp4 or mkv (remuxed, true frame rate) or h264 (raw stream)",
            check_choice("mp4", "mkv", "h264")),
        Key("backend", str, "builtin", "laptop receiver: builtin (Python) or nc (local netcat)",
            check_choice("builtin", "nc")),
        Key("ssh_config", str, "~/.ssh/config", "OpenSSH client config read for aliases, keys, known_hosts"),
        Key("connect_timeout", float, 10.0, "seconds to wait for the SSH connection"),
        Key("use_controlmaster", bool, True, "run through the OpenSSH ControlMaster the ssh_config names for the "
            "Pi when its socket is open (no connection of piorch's own); false: always connect with paramiko"),
        Key("remember_pi", bool, True, "start from what the last run found on the Pi (checked by the start "
            "itself) instead of asking it first; false: ask every time"),
        Key("pi_ip", str, "", "the Pi's address on the direct cable (empty: setup-link picks a free subnet's .2)",
            check_ip),
        Key("link_prefix", int, 24, "prefix length of the direct cable's subnet",
            lambda value: None if 8 <= value <= 30 else "must be between 8 and 30"),
        Key("iface", str, "", "laptop interface of the direct cable (empty: the wired one, found by itself)"),
        Key("pi_boot_dir", str, "", "boot folder on the Pi for setup-link --pi (empty: /boot/firmware, then /boot)"),
    )
}


def default_config_path() -> Path:
    # platformdirs gives ~/.config/piorch on Linux, the right folders elsewhere.
    from platformdirs import user_config_path

    return user_config_path("piorch") / "config.toml"


@dataclass(frozen=True)
class Config:
    """The merged values and, for each key, which layer it came from (for messages and `--show`)."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def _coerce(key: Key, raw: Any, origin: str) -> Any:
    """Turn a TOML or environment value into the key's type, or raise naming the origin and key."""
    kind = key.kind
    value: Any
    if kind is bool:
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            value = raw.lower() in ("1", "true", "yes", "on")
        else:
            raise ConfigError(f"{origin}: key '{key.name}' must be true or false, not {raw!r}",
                              f"set {key.name} = true or false")
    elif kind is int:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ConfigError(f"{origin}: key '{key.name}' must be a whole number, not {raw!r}",
                              f"set {key.name} = {key.default}")
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{origin}: key '{key.name}' must be a whole number, not {raw!r}",
                              f"set {key.name} = {key.default}") from None
    elif kind is list:
        # A TOML array of strings, or in the environment a comma-separated list.
        items = [part.strip() for part in raw.split(",") if part.strip()] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ConfigError(f"{origin}: key '{key.name}' must be a list of strings, not {raw!r}",
                              f'set {key.name} = ["cam1", "cam2"]')
        value = items
    elif kind is float:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{origin}: key '{key.name}' must be a number, not {raw!r}",
                              f"set {key.name} = {key.default}") from None
    else:
        if not isinstance(raw, str):
            raise ConfigError(f"{origin}: key '{key.name}' must be a string, not {raw!r}",
                              f'set {key.name} = "..." in quotes')
        value = raw
    if key.check is not None and value not in ("", []) and (problem := key.check(value)) is not None:
        if origin.startswith("option"):
            raise ConfigError(f"{origin} {problem} (got {value!r})", "give a valid value")
        raise ConfigError(f"{origin}: key '{key.name}' {problem} (got {value!r})", f"fix {key.name} in {origin}")
    return value


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse one TOML file into checked values; unknown keys are refused so typos do not pass silently."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", "create it or drop --config") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text", "save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML ({exc})", "fix the syntax on that line") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc.strerror})", "check its permissions") from None
    secrets = [name for name in data if _SECRET.search(name)]
    if secrets and path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} holds a secret ('{secrets[0]}') and other users can read it",
                          f"remove it (piorch never needs one), or at least chmod 600 {path}")
    values: dict[str, Any] = {}
    for name, raw in data.items():
        key = KEYS.get(name)
        if key is None:
            known = ", ".join(sorted(KEYS))
            raise ConfigError(f"{path}: unknown key '{name}'", f"remove it; known keys are {known}")
        values[name] = _coerce(key, raw, str(path))
    return values


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, key in KEYS.items():
        var = "PIORCH_" + name.upper()
        if var in environ:
            values[name] = _coerce(key, environ[var], f"environment variable {var}")
    return values


def load_config(
    flags: Mapping[str, Any],
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Merge the four layers. `flags` holds only options the user gave (None means not given).

    The file is `config_file` when given (it must exist), else the user file when it exists.
    """
    environ = os.environ if environ is None else environ
    values = {name: key.default for name, key in KEYS.items()}
    sources = dict.fromkeys(KEYS, "default")
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is not None:
        layers.append((str(config_file), read_config_file(config_file)))
    else:
        user_file = Path(environ["PIORCH_CONFIG"]) if "PIORCH_CONFIG" in environ else default_config_path()
        if user_file.is_file():
            layers.append((str(user_file), read_config_file(user_file)))
    layers.append(("environment", read_environment(environ)))
    checked_flags = {}
    for name, raw in flags.items():
        if raw is None:
            continue
        key = KEYS[name]
        checked_flags[name] = _coerce(key, raw, f"option --{name.replace('_', '-')}")
    layers.append(("flag", checked_flags))
    for origin, layer in layers:
        for name, value in layer.items():
            values[name] = value
            sources[name] = origin
    return Config(values=values, sources=sources)


def build_config_text(current: str, updates: Mapping[str, Any]) -> str:
    """Return `current` TOML text with `updates` set: existing `key = ...` lines are replaced in place,
    new keys appended; comments and other keys are kept as they were (pure, for `setup-link`)."""
    lines = current.splitlines()
    pending = dict(updates)
    for index, line in enumerate(lines):
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if match and match.group(1) in pending:
            name = match.group(1)
            lines[index] = f"{name} = {_toml_value(pending.pop(name))}"
    lines.extend(f"{name} = {_toml_value(value)}" for name, value in pending.items())
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
