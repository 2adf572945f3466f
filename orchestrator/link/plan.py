"""The direct cable's addresses and the laptop commands that set them up, as pure functions.

Input is a snapshot of the laptop (its interfaces, their addresses, its routes); output is a checked pair of
addresses and the exact argv lists for nmcli, iproute2, macOS `networksetup` or Windows `netsh`, with their
undo. Nothing here runs anything: `laptopnet.py` gathers the snapshot and runs the commands.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from orchestrator.errors import PiorchError, UsageError

DEFAULT_NETWORK = "192.168.50.0/24"
# Tried in order when the default is taken: more of 192.168.x (home routers favour 0, 1, 178, 2), then the
# other private ranges at spots routers rarely pick.
FALLBACK_BASES = (
    *(f"192.168.{third}.0" for third in range(51, 100)),
    *(f"10.50.{third}.0" for third in range(0, 50)),
    *(f"172.30.{third}.0" for third in range(50, 100)),
)
NM_PROFILE = "piorch-link"
# Linux interface names: at most 15 bytes, no '/', no whitespace; macOS/Windows service names are freer
# (spaces, e.g. "USB 10/100/1000 LAN") and are only ever printed, quoted.
_LINUX_IFACE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_SERVICE_NAME = re.compile(r'^[^"\x00-\x1f]{1,64}$')
_VIRTUAL_PREFIXES = ("lo", "docker", "veth", "br-", "virbr", "vnet", "tun", "tap", "wg", "tailscale", "zt",
                     "vboxnet", "vmnet", "utun", "awdl", "llw", "bridge", "dummy", "ifb", "ip6tnl", "sit", "gre")


class LinkError(PiorchError):
    """The link cannot be set up as asked; nothing was changed."""

    exit_code = 6


class IfaceKind(str, enum.Enum):
    WIRED = "wired"
    WIRELESS = "wireless"
    VIRTUAL = "virtual"
    LOOPBACK = "loopback"


class LaptopTool(str, enum.Enum):
    NMCLI = "nmcli"
    IPROUTE2 = "iproute2"
    MACOS = "macos"
    WINDOWS = "windows"

    @property
    def applies(self) -> bool:
        """Linux tools are run by piorch; on macOS and Windows the commands are only printed."""
        return self in (LaptopTool.NMCLI, LaptopTool.IPROUTE2)


@dataclass(frozen=True)
class Iface:
    """One laptop interface as the snapshot saw it."""

    name: str
    kind: IfaceKind
    # Administratively up (`ip link set up`); the carrier (a cable with a live Pi at the other end) is apart.
    is_up: bool
    addresses: tuple[IPv4Interface, ...] = ()
    has_carrier: bool = True


@dataclass(frozen=True)
class Route:
    network: IPv4Network
    iface: str


@dataclass(frozen=True)
class LinkAddresses:
    laptop: IPv4Interface
    pi: IPv4Address

    @property
    def network(self) -> IPv4Network:
        return self.laptop.network

    @property
    def netmask(self) -> str:
        return str(self.laptop.netmask)


def guess_iface_kind(name: str) -> IfaceKind:
    """From the name alone, for systems without /sys/class/net (the edge prefers the kernel's own facts)."""
    if name == "lo" or name.startswith("lo0"):
        return IfaceKind.LOOPBACK
    if name.startswith(("wl", "wlan", "wifi", "ath", "ra")):
        return IfaceKind.WIRELESS
    if name.startswith(_VIRTUAL_PREFIXES):
        return IfaceKind.VIRTUAL
    return IfaceKind.WIRED


def check_iface_name(name: str, tool: LaptopTool) -> str:
    pattern = _LINUX_IFACE if tool.applies else _SERVICE_NAME
    if not pattern.match(name) or name.startswith("-"):
        raise UsageError(f"interface name {name!r} is not valid here",
                         "give the name as `ip link` (Linux) or the network service list (macOS/Windows) shows it")
    return name


def pick_iface(ifaces: Sequence[Iface], wanted: str | None, saved_laptop_ip: str | None = None) -> Iface:
    """The wired interface for the cable: `wanted` when given (it must exist), else the only wired one, else
    the one already holding the saved link address, else the only wired one without an IPv4 address."""
    by_name = {iface.name: iface for iface in ifaces}
    seen = ", ".join(f"{i.name} ({i.kind.value})" for i in ifaces) or "none"
    if wanted:
        if wanted not in by_name:
            raise UsageError(f"no interface {wanted!r} on this laptop (seen: {seen})", "pass --iface with one of those")
        if by_name[wanted].kind is IfaceKind.LOOPBACK:
            raise UsageError(f"{wanted} is the loopback interface, not a cable",
                             "pass the wired interface with --iface")
        return by_name[wanted]
    wired = [iface for iface in ifaces if iface.kind is IfaceKind.WIRED]
    if len(wired) == 1:
        return wired[0]
    if not wired:
        raise LinkError(f"no wired Ethernet interface found (seen: {seen})",
                        "plug in the Ethernet adapter, or pass --iface NAME")
    if saved_laptop_ip:
        holding = [i for i in wired if any(str(a.ip) == saved_laptop_ip for a in i.addresses)]
        if len(holding) == 1:
            return holding[0]
    free = [iface for iface in wired if not iface.addresses]
    if len(free) == 1:
        return free[0]
    names = ", ".join(iface.name for iface in wired)
    raise LinkError(f"several wired interfaces ({names}); piorch cannot tell which one has the Pi's cable",
                    "pass --iface NAME")


def _used_networks(ifaces: Sequence[Iface], routes: Sequence[Route], link_iface: str) -> list[tuple[IPv4Network, str]]:
    """Networks reachable some other way than the link: addresses and routes of every other interface."""
    used = [(addr.network, f"{i.name} has {addr.with_prefixlen}")
            for i in ifaces if i.name != link_iface and i.kind is not IfaceKind.LOOPBACK for addr in i.addresses]
    used += [(r.network, f"a route to {r.network} goes through {r.iface}")
             for r in routes if r.iface != link_iface and r.network.prefixlen > 0 and not r.network.is_loopback]
    return used


def choose_link_network(ifaces: Sequence[Iface], routes: Sequence[Route], link_iface: str, prefix: int) -> IPv4Network:
    """192.168.50.0/PREFIX unless some other interface or route uses it, then the next free private one."""
    used = [network for network, _ in _used_networks(ifaces, routes, link_iface)]
    for base in (DEFAULT_NETWORK.split("/")[0], *FALLBACK_BASES):
        candidate = IPv4Network(f"{base}/{prefix}", strict=False)
        if not any(candidate.overlaps(network) for network in used):
            return candidate
    raise LinkError("every private subnet piorch tries is already in use on this laptop",
                    "pick one yourself with --laptop-ip and --pi-ip")


def _parse_ipv4(value: str, option: str) -> IPv4Address:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise UsageError(f"{option} {value!r} is not an IP address",
                         "give an IPv4 address such as 192.168.50.2") from None
    if not isinstance(address, IPv4Address):
        raise UsageError(f"{option} {value} is IPv6; the kernel ip= parameter needs IPv4",
                         "give an IPv4 address such as 192.168.50.2")
    kinds = (("loopback", address.is_loopback), ("multicast", address.is_multicast),
             ("link-local (169.254/16 is left to automatic addressing)", address.is_link_local),
             ("reserved", address.is_reserved or int(address) >> 24 == 0))
    for kind, matches in kinds:
        if matches:
            raise UsageError(f"{option} {address} is a {kind} address", "use a private address such as 192.168.50.2")
    return address


def build_link_addresses(
    pi_ip: str | None, laptop_ip: str | None, prefix: int, ifaces: Sequence[Iface], routes: Sequence[Route],
    link_iface: str,
) -> LinkAddresses:
    """Check given addresses (or choose them) for the cable on `link_iface`; each refusal says why.

    Neither given: a free subnet, laptop .1, Pi .2. One given: the other is the first free host of its
    subnet. Both: IPv4, same subnet, neither the network nor the broadcast address, not equal, and the
    subnet used by no other interface or route of the laptop (that would make the route ambiguous).
    """
    if not 8 <= prefix <= 30:
        raise UsageError(f"--prefix {prefix} is not between 8 and 30 (a /31 or /32 has no room for two hosts)",
                         "use --prefix 24")
    pi = _parse_ipv4(pi_ip, "--pi-ip") if pi_ip else None
    laptop = _parse_ipv4(laptop_ip, "--laptop-ip") if laptop_ip else None
    if pi is None and laptop is None:
        network = choose_link_network(ifaces, routes, link_iface, prefix)
    else:
        network = IPv4Network(f"{pi or laptop}/{prefix}", strict=False)
    hosts = (network.network_address + 1, network.network_address + 2)
    if laptop is None:
        laptop = hosts[1] if pi == hosts[0] else hosts[0]
    if pi is None:
        pi = hosts[1] if laptop == hosts[0] else hosts[0]
    for address, option in ((laptop, "--laptop-ip"), (pi, "--pi-ip")):
        if address not in network:
            raise UsageError(f"--laptop-ip {laptop} and --pi-ip {pi} are not in one /{prefix} subnet",
                             f"give two addresses of {network}")
        if address == network.network_address:
            raise UsageError(f"{option} {address} is the network address of {network}", "use a host address, e.g. .2")
        if address == network.broadcast_address:
            raise UsageError(f"{option} {address} is the broadcast address of {network}", "use a host address, e.g. .2")
    if laptop == pi:
        raise UsageError(f"the laptop and the Pi would both be {pi}", "give them different addresses")
    for iface in ifaces:
        held = {a.ip for a in iface.addresses}
        if pi in held:
            raise UsageError(f"--pi-ip {pi} is an address of this laptop ({iface.name})", "give the Pi another address")
        if laptop in held and iface.name != link_iface:
            raise UsageError(f"--laptop-ip {laptop} is already on {iface.name}", "give the link another address")
    for used, why in _used_networks(ifaces, routes, link_iface):
        if network.overlaps(used):
            raise UsageError(f"the link subnet {network} clashes with this laptop's other networks ({why}); "
                             "the route to the Pi would be ambiguous",
                             "pick another subnet with --laptop-ip/--pi-ip, or leave them out to let piorch choose")
    return LinkAddresses(laptop=IPv4Interface(f"{laptop}/{prefix}"), pi=pi)


@dataclass(frozen=True)
class LaptopPlan:
    """The laptop commands for one tool, each an argv list; `persistent` says whether they survive a reboot."""

    tool: LaptopTool
    iface: str
    commands: tuple[tuple[str, ...], ...]
    persistent: bool
    note: str = ""


def build_nmcli_setup(iface: str, laptop: IPv4Interface, profile_exists: bool, carrier: bool = True) -> LaptopPlan:
    """A dedicated NetworkManager profile, so the user's other connections stay untouched.

    The prefix is always given (nmcli reads a bare address as /32); never-default keeps the cable from
    becoming the default route; IPv6 off keeps NetworkManager from waiting for router advertisements.
    Without a carrier (the Pi is not running yet: its SD card is in the laptop) `con up` would fail; the
    profile autoconnects as soon as the Pi is on the cable."""
    settings = ("ipv4.method", "manual", "ipv4.addresses", laptop.with_prefixlen, "ipv4.never-default", "yes",
                "ipv6.method", "disabled")
    first: tuple[str, ...]
    if profile_exists:
        # `con add` with an existing name would create a second profile of the same name: modify instead.
        first = ("nmcli", "connection", "modify", NM_PROFILE, "connection.interface-name", iface, *settings)
    else:
        first = ("nmcli", "connection", "add", "type", "ethernet", "ifname", iface, "con-name", NM_PROFILE, *settings)
    if not carrier:
        return LaptopPlan(LaptopTool.NMCLI, iface, (first,), persistent=True,
                          note=f"no cable link on {iface} yet: NetworkManager brings {NM_PROFILE} up when the Pi is on")
    return LaptopPlan(LaptopTool.NMCLI, iface, (first, ("nmcli", "connection", "up", NM_PROFILE)), persistent=True)


def build_nmcli_undo(iface: str, profile_exists: bool) -> LaptopPlan:
    commands = (("nmcli", "connection", "delete", NM_PROFILE),) if profile_exists else ()
    return LaptopPlan(LaptopTool.NMCLI, iface, commands, persistent=True,
                      note="" if profile_exists else f"no NetworkManager profile {NM_PROFILE} to remove")


def build_iproute2_setup(iface: Iface, laptop: IPv4Interface, stale: IPv4Interface | None = None) -> LaptopPlan:
    """`ip addr add` (unless already there) and `ip link set up`; `stale` is an earlier link address to drop."""
    commands: list[tuple[str, ...]] = []
    if stale is not None and stale != laptop and stale in iface.addresses:
        commands.append(("ip", "addr", "del", stale.with_prefixlen, "dev", iface.name))
    if laptop not in iface.addresses:
        commands.append(("ip", "addr", "add", laptop.with_prefixlen, "dev", iface.name))
    if not iface.is_up or commands:
        commands.append(("ip", "link", "set", iface.name, "up"))
    return LaptopPlan(LaptopTool.IPROUTE2, iface.name, tuple(commands), persistent=False,
                      note="without NetworkManager the address does not survive a reboot: run setup-link again")


def build_iproute2_undo(iface: Iface, laptop: IPv4Interface) -> LaptopPlan:
    # The link state is left as it is: the interface may have been up before piorch came.
    commands = (("ip", "addr", "del", laptop.with_prefixlen, "dev", iface.name),) if laptop in iface.addresses else ()
    return LaptopPlan(LaptopTool.IPROUTE2, iface.name, commands, persistent=False,
                      note="" if commands else f"{laptop.with_prefixlen} is not on {iface.name}: nothing to remove")


def build_macos_setup(service: str, laptop: IPv4Interface) -> LaptopPlan:
    return LaptopPlan(LaptopTool.MACOS, service,
                      (("networksetup", "-setmanual", service, str(laptop.ip), str(laptop.netmask)),), persistent=True,
                      note="macOS: run this yourself; `networksetup -listallnetworkservices` shows the service name")


def build_macos_undo(service: str) -> LaptopPlan:
    return LaptopPlan(LaptopTool.MACOS, service, (("networksetup", "-setdhcp", service),), persistent=True,
                      note="macOS: run this yourself")


def build_windows_setup(name: str, laptop: IPv4Interface) -> LaptopPlan:
    return LaptopPlan(LaptopTool.WINDOWS, name,
                      (("netsh", "interface", "ipv4", "set", "address", f'name="{name}"', "static", str(laptop.ip),
                        str(laptop.netmask)),), persistent=True,
                      note="Windows: run this in an administrator prompt; `netsh interface show interface` lists names")


def build_windows_undo(name: str) -> LaptopPlan:
    return LaptopPlan(LaptopTool.WINDOWS, name,
                      (("netsh", "interface", "ipv4", "set", "address", f'name="{name}"', "source=dhcp"),),
                      persistent=True, note="Windows: run this in an administrator prompt")


def format_command(argv: Sequence[str], tool: LaptopTool) -> str:
    """The command as a user would type it: POSIX shell quoting, except netsh whose name= is pre-quoted."""
    if tool is LaptopTool.WINDOWS:
        return " ".join(argv)
    return shlex.join(argv)


def build_privileged_argv(argv: Sequence[str], prefix: Sequence[str], sudo: bool) -> list[str]:
    """The argv actually run: sudo first (a namespace prefix such as `ip netns exec NS` needs root too), then
    the prefix, then the command. `-n` because the password was asked once, up front, by `sudo -v`."""
    return [*(("sudo", "-n") if sudo else ()), *prefix, *argv]
