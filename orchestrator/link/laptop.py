"""The laptop's network, at the edge: a snapshot of its interfaces and routes, and running the link commands.

Commands are built in `linkplan.py`; here they run through `sh`, behind sudo when piorch is not root (said
first, and the password is asked once by `sudo -v`). `prefix` is put in front of every command: empty for
the laptop itself, `ip netns exec NS` to work inside a network namespace (the tests do).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

from orchestrator.link.plan import (
    NM_PROFILE,
    Iface,
    IfaceKind,
    LaptopPlan,
    LaptopTool,
    LinkError,
    Route,
    build_privileged_argv,
    format_command,
    guess_iface_kind,
)

# ip/nmcli answer in milliseconds; `nmcli con up` waits for the device, which NetworkManager bounds at 90 s.
COMMAND_TIMEOUT_S = 100.0
QUERY_TIMEOUT_S = 10.0
# Long enough for a person to type a sudo password; sudo itself gives up after three tries.
SUDO_PROMPT_TIMEOUT_S = 300.0
SYS_NET = Path("/sys/class/net")


def read_iface_kind(name: str, sys_net: Path = SYS_NET) -> IfaceKind:
    """The kernel's own word where there is one: wireless devices have `wireless/`, virtual ones (veth,
    bridges, docker, tun) live under /sys/devices/virtual; elsewhere the name has to do."""
    entry = sys_net / name
    if not entry.exists():
        return guess_iface_kind(name)
    if name == "lo":
        return IfaceKind.LOOPBACK
    if (entry / "wireless").exists() or (entry / "phy80211").exists():
        return IfaceKind.WIRELESS
    if "/devices/virtual/" in str(entry.resolve()):
        return IfaceKind.VIRTUAL
    return IfaceKind.WIRED


def gather_ifaces() -> tuple[Iface, ...]:
    """Every interface of this network namespace with its IPv4 addresses (psutil: getifaddrs + ioctl)."""
    import psutil  # type: ignore[import-untyped]  # no stubs in the dev set; two calls used

    addresses = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    ifaces = []
    for name in sorted(set(addresses) | set(stats)):
        v4 = tuple(
            IPv4Interface(f"{entry.address}/{entry.netmask or '32'}")
            for entry in addresses.get(name, []) if entry.family == socket.AF_INET
        )
        state = stats.get(name)
        # psutil's isup means "running" (carrier); the flags say whether the interface itself is up. Windows
        # reports no flags, so there isup has to stand for both.
        flags = set(getattr(state, "flags", "").split(",")) - {""} if state else set()
        running = bool(state and state.isup)
        ifaces.append(Iface(name=name, kind=read_iface_kind(name), is_up="up" in flags if flags else running,
                            addresses=v4, has_carrier=running))
    return tuple(ifaces)


def gather_routes(prefix: Sequence[str] = ()) -> tuple[Route, ...]:
    """IPv4 routes from `ip -j route` (JSON, so nothing is parsed by hand); none where iproute2 is missing."""
    import sh

    argv = [*prefix, "ip", "-j", "-4", "route", "show", "table", "main"]
    try:
        out = str(sh.Command(argv[0])(*argv[1:], _tty_out=False, _timeout=QUERY_TIMEOUT_S))
        entries = json.loads(out or "[]")
    except (sh.CommandNotFound, sh.ErrorReturnCode, json.JSONDecodeError):
        return ()  # no iproute2 (macOS, Windows): the interface addresses still catch the common clash
    routes = []
    for entry in entries:
        dst = entry.get("dst", "")
        if dst == "default" or not entry.get("dev"):
            continue
        try:
            routes.append(Route(IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False), entry["dev"]))
        except ValueError:
            continue  # a route type piorch does not know (blackhole, unreachable): not an interface's network
    return tuple(routes)


def detect_tool(platform: str = sys.platform, prefix: Sequence[str] = ()) -> LaptopTool:
    """Linux: nmcli when NetworkManager runs, else iproute2. macOS and Windows: print-only tools."""
    if platform == "darwin":
        return LaptopTool.MACOS
    if platform.startswith(("win", "cygwin")):
        return LaptopTool.WINDOWS
    out = _query([*prefix, "nmcli", "-t", "-f", "RUNNING", "general"])
    return LaptopTool.NMCLI if out is not None and out.strip() == "running" else LaptopTool.IPROUTE2


def nm_profile_exists(prefix: Sequence[str] = ()) -> bool:
    out = _query([*prefix, "nmcli", "-t", "-f", "NAME", "connection", "show"])
    return out is not None and NM_PROFILE in out.splitlines()


def _query(argv: Sequence[str]) -> str | None:
    """Output of a read-only query, or None when the tool is missing or fails (the caller picks a fallback)."""
    import sh

    try:
        return str(sh.Command(argv[0])(*argv[1:], _tty_out=False, _timeout=QUERY_TIMEOUT_S))
    except (sh.CommandNotFound, sh.ErrorReturnCode, sh.TimeoutException):
        return None


def needs_sudo() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() != 0


def apply_laptop_plan(
    plan: LaptopPlan, prefix: Sequence[str] = (), sudo: bool = False, notify: Callable[[str], None] = print,
) -> None:
    """Run the plan's commands in order; the first failure stops with its stderr and a fix."""
    if not plan.commands or not plan.tool.applies:
        return
    if sudo:
        notify("piorch is not root: the laptop commands run through sudo (it may ask for your password)")
        _run(["sudo", "-v"], SUDO_PROMPT_TIMEOUT_S, "sudo -v")
    for argv in plan.commands:
        shown = format_command(argv, plan.tool)
        notify(f"$ {shown}")
        _run(build_privileged_argv(argv, prefix, sudo), COMMAND_TIMEOUT_S, shown)


def _run(argv: Sequence[str], timeout: float, shown: str) -> None:
    import sh as sh_module

    try:
        sh_module.Command(argv[0])(*argv[1:], _tty_out=False, _timeout=timeout)
    except sh_module.CommandNotFound:
        raise LinkError(f"`{argv[0]}` is not installed on this laptop",
                        "install it (iproute2, network-manager or sudo), or use --skip-laptop") from None
    except sh_module.TimeoutException:
        raise LinkError(f"`{shown}` did not finish within {timeout:.0f} s",
                        "check the interface and try again") from None
    except sh_module.ErrorReturnCode as exc:
        detail = _first_line(exc.stderr) or _first_line(exc.stdout) or f"exit status {exc.exit_code}"
        raise LinkError(f"`{shown}` failed ({detail})",
                        "fix that and run setup-link again (it skips what is already done)") from None


def _first_line(data: bytes | None) -> str:
    text = (data or b"").decode("utf-8", "replace").strip()
    return text.splitlines()[0].strip() if text else ""


def probe_ssh(host: str, port: int, timeout: float) -> str | None:
    """The SSH banner of host:port (`SSH-2.0-...`), or None if nothing SSH answered before the deadline."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            data = b""
            while b"\n" not in data and len(data) < 256:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].strip().decode("ascii", "replace")
    return line if line.startswith("SSH-") else None
