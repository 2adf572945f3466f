"""Link addresses, interface choice and the exact laptop commands, as data; the pure parts of setup-link."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from orchestrator.errors import UsageError
from orchestrator.link.bootfs import BootState
from orchestrator.link.plan import (
    Iface,
    IfaceKind,
    LaptopTool,
    LinkError,
    Route,
    build_iproute2_setup,
    build_iproute2_undo,
    build_link_addresses,
    build_macos_setup,
    build_macos_undo,
    build_nmcli_setup,
    build_nmcli_undo,
    build_privileged_argv,
    build_windows_setup,
    build_windows_undo,
    check_iface_name,
    choose_link_network,
    format_command,
    guess_iface_kind,
    pick_iface,
)
from orchestrator.link.setup import (
    CONFIG_HEADER,
    LaptopFacts,
    Mode,
    PiAction,
    SavedLink,
    SetupPlan,
    build_check_report,
    build_config_change,
    build_config_updates,
    build_laptop_setup,
    build_laptop_undo,
    build_pi_change,
    build_pi_undo,
    render_check,
    render_plan,
)


def iface(name: str, *addresses: str, kind: IfaceKind = IfaceKind.WIRED, up: bool = True,
          carrier: bool = True) -> Iface:
    return Iface(name, kind, up, tuple(IPv4Interface(a) for a in addresses), carrier)


LO = iface("lo", "127.0.0.1/8", kind=IfaceKind.LOOPBACK)
WIFI_HOME = iface("wlp2s0", "192.168.1.23/24", kind=IfaceKind.WIRELESS)
CABLE = iface("enx00e04c680001", up=False)
LAPTOP = (LO, WIFI_HOME, CABLE)


def addresses(pi: str | None = None, laptop: str | None = None, prefix: int = 24,
              ifaces: tuple[Iface, ...] = LAPTOP, routes: tuple[Route, ...] = ()) -> tuple[str, str]:
    chosen = build_link_addresses(pi, laptop, prefix, ifaces, routes, CABLE.name)
    return chosen.laptop.with_prefixlen, str(chosen.pi)


@pytest.mark.parametrize(
    ("pi", "laptop", "prefix", "expected"),
    [
        (None, None, 24, ("192.168.50.1/24", "192.168.50.2")),
        ("192.168.77.9", None, 24, ("192.168.77.1/24", "192.168.77.9")),
        ("192.168.77.1", None, 24, ("192.168.77.2/24", "192.168.77.1")),
        (None, "10.9.8.7", 24, ("10.9.8.7/24", "10.9.8.1")),
        ("10.0.0.6", "10.0.0.5", 30, ("10.0.0.5/30", "10.0.0.6")),
        (None, None, 30, ("192.168.50.1/30", "192.168.50.2")),
    ],
)
def test_addresses_chosen_or_completed(pi: str | None, laptop: str | None, prefix: int,
                                       expected: tuple[str, str]) -> None:
    assert addresses(pi, laptop, prefix) == expected


@pytest.mark.parametrize(
    ("pi", "laptop", "prefix", "words"),
    [
        ("192.168.50.2", "192.168.60.1", 24, "not in one /24 subnet"),
        ("192.168.50.2", "192.168.50.2", 24, "both be 192.168.50.2"),
        ("192.168.50.0", "192.168.50.1", 24, "network address"),
        ("192.168.50.255", "192.168.50.1", 24, "broadcast address"),
        ("10.0.0.7", "10.0.0.5", 30, "broadcast address"),
        ("fe80::2", None, 24, "IPv6"),
        ("pi.local", None, 24, "not an IP address"),
        ("192.168.50.2; reboot", None, 24, "not an IP address"),
        ("127.0.0.2", None, 24, "loopback"),
        ("224.0.0.5", None, 24, "multicast"),
        ("169.254.3.2", None, 24, "link-local"),
        ("0.1.2.3", None, 24, "reserved"),
        ("192.168.1.50", None, 24, "wlp2s0 has 192.168.1.23/24"),
        ("192.168.1.23", None, 24, "address of this laptop (wlp2s0)"),
        (None, "192.168.1.23", 24, "already on wlp2s0"),
        ("192.168.0.2", None, 16, "clashes"),
        ("192.168.50.2", None, 31, "between 8 and 30"),
        ("192.168.50.2", None, 7, "between 8 and 30"),
    ],
)
def test_bad_addresses_are_refused_with_the_reason(pi: str | None, laptop: str | None, prefix: int,
                                                   words: str) -> None:
    with pytest.raises(UsageError) as caught:
        addresses(pi, laptop, prefix)
    assert words in caught.value.message and caught.value.fix


def test_route_through_another_interface_counts_as_taken() -> None:
    vpn = (Route(IPv4Network("192.168.50.0/23"), "tun0"),)
    assert addresses(routes=vpn) == ("192.168.52.1/24", "192.168.52.2")
    with pytest.raises(UsageError, match=r"route to 192\.168\.50\.0/23 goes through tun0"):
        addresses("192.168.51.2", routes=vpn)
    # A route on the cable's own interface (an earlier run) is no clash, nor is the default route.
    own = (Route(IPv4Network("192.168.50.0/24"), CABLE.name), Route(IPv4Network("0.0.0.0/0"), "wlp2s0"))
    assert addresses(routes=own) == ("192.168.50.1/24", "192.168.50.2")


def test_default_subnet_taken_picks_another_private_one() -> None:
    busy = (LO, iface("wlan0", "192.168.50.10/24", kind=IfaceKind.WIRELESS), CABLE)
    assert addresses(ifaces=busy) == ("192.168.51.1/24", "192.168.51.2")
    everything = (iface("tun0", "192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12", kind=IfaceKind.VIRTUAL), CABLE)
    with pytest.raises(LinkError, match="already in use"):
        choose_link_network(everything, (), CABLE.name, 24)


def test_second_run_keeps_the_address_already_on_the_cable() -> None:
    cable = iface(CABLE.name, "192.168.50.1/24")
    assert addresses("192.168.50.2", "192.168.50.1", ifaces=(LO, WIFI_HOME, cable)) == ("192.168.50.1/24",
                                                                                        "192.168.50.2")


@pytest.mark.parametrize(
    ("ifaces", "wanted", "saved", "expected"),
    [
        (LAPTOP, None, None, CABLE.name),
        (LAPTOP, "wlp2s0", None, "wlp2s0"),
        ((LO, iface("eno1", "10.1.2.3/24"), iface("enx1")), None, None, "enx1"),
        ((LO, iface("eno1", "10.1.2.3/24"), iface("enx1", "192.168.50.1/24")), None, "192.168.50.1", "enx1"),
    ],
)
def test_pick_iface(ifaces: tuple[Iface, ...], wanted: str | None, saved: str | None, expected: str) -> None:
    assert pick_iface(ifaces, wanted, saved).name == expected


@pytest.mark.parametrize(
    ("ifaces", "wanted", "words"),
    [
        ((LO, WIFI_HOME), None, "no wired Ethernet interface found (seen: lo (loopback), wlp2s0 (wireless))"),
        ((LO, iface("eno1"), iface("enx1")), None, "several wired interfaces (eno1, enx1)"),
        (LAPTOP, "eth9", "no interface 'eth9'"),
        (LAPTOP, "lo", "lo is the loopback interface"),
    ],
)
def test_pick_iface_refusals(ifaces: tuple[Iface, ...], wanted: str | None, words: str) -> None:
    with pytest.raises((LinkError, UsageError)) as caught:
        pick_iface(ifaces, wanted)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("lo", IfaceKind.LOOPBACK), ("wlp2s0", IfaceKind.WIRELESS), ("wlan0", IfaceKind.WIRELESS),
     ("docker0", IfaceKind.VIRTUAL), ("veth12ab", IfaceKind.VIRTUAL), ("br-5f2a", IfaceKind.VIRTUAL),
     ("tailscale0", IfaceKind.VIRTUAL), ("eth0", IfaceKind.WIRED), ("enp0s31f6", IfaceKind.WIRED),
     ("enx00e04c680001", IfaceKind.WIRED)],
)
def test_guess_iface_kind(name: str, kind: IfaceKind) -> None:
    assert guess_iface_kind(name) is kind


@pytest.mark.parametrize("bad", ["eth0; reboot", "-oops", "a" * 16, "eth 0", ""])
def test_linux_iface_names_are_checked(bad: str) -> None:
    with pytest.raises(UsageError):
        check_iface_name(bad, LaptopTool.IPROUTE2)
    assert check_iface_name("USB 10/100/1000 LAN", LaptopTool.MACOS) == "USB 10/100/1000 LAN"


LINK = IPv4Interface("192.168.50.1/24")


def test_nmcli_commands_exactly() -> None:
    plan = build_nmcli_setup("enx1", LINK, profile_exists=False)
    assert [format_command(argv, plan.tool) for argv in plan.commands] == [
        "nmcli connection add type ethernet ifname enx1 con-name piorch-link ipv4.method manual "
        "ipv4.addresses 192.168.50.1/24 ipv4.never-default yes ipv6.method disabled",
        "nmcli connection up piorch-link",
    ]
    assert plan.persistent
    again = build_nmcli_setup("enx1", LINK, profile_exists=True)
    assert again.commands[0] == (
        "nmcli", "connection", "modify", "piorch-link", "connection.interface-name", "enx1", "ipv4.method", "manual",
        "ipv4.addresses", "192.168.50.1/24", "ipv4.never-default", "yes", "ipv6.method", "disabled")
    unplugged = build_nmcli_setup("enx1", LINK, profile_exists=False, carrier=False)
    assert unplugged.commands == plan.commands[:1] and "brings piorch-link up when the Pi is on" in unplugged.note
    assert build_nmcli_undo("enx1", True).commands == (("nmcli", "connection", "delete", "piorch-link"),)
    assert build_nmcli_undo("enx1", False).commands == ()


def test_iproute2_commands_skip_what_is_done() -> None:
    down = iface("enx1", up=False)
    plan = build_iproute2_setup(down, LINK)
    assert plan.commands == (("ip", "addr", "add", "192.168.50.1/24", "dev", "enx1"),
                             ("ip", "link", "set", "enx1", "up"))
    assert not plan.persistent and "does not survive a reboot" in plan.note
    done = iface("enx1", "192.168.50.1/24")
    assert build_iproute2_setup(done, LINK).commands == ()
    moved = iface("enx1", "192.168.60.1/24")
    assert build_iproute2_setup(moved, LINK, stale=IPv4Interface("192.168.60.1/24")).commands == (
        ("ip", "addr", "del", "192.168.60.1/24", "dev", "enx1"),
        ("ip", "addr", "add", "192.168.50.1/24", "dev", "enx1"),
        ("ip", "link", "set", "enx1", "up"),
    )
    assert build_iproute2_undo(done, LINK).commands == (("ip", "addr", "del", "192.168.50.1/24", "dev", "enx1"),)
    assert build_iproute2_undo(down, LINK).commands == ()


def test_macos_and_windows_commands_are_printed_exactly() -> None:
    mac = build_macos_setup("USB 10/100/1000 LAN", LINK)
    assert not mac.tool.applies
    assert format_command(mac.commands[0], mac.tool) == \
        "networksetup -setmanual 'USB 10/100/1000 LAN' 192.168.50.1 255.255.255.0"
    assert format_command(build_macos_undo("Ethernet").commands[0], LaptopTool.MACOS) == \
        "networksetup -setdhcp Ethernet"
    win = build_windows_setup("Ethernet 2", LINK)
    assert format_command(win.commands[0], win.tool) == \
        'netsh interface ipv4 set address name="Ethernet 2" static 192.168.50.1 255.255.255.0'
    assert format_command(build_windows_undo("Ethernet").commands[0], LaptopTool.WINDOWS) == \
        'netsh interface ipv4 set address name="Ethernet" source=dhcp'


def test_privileged_argv_puts_sudo_before_the_namespace_prefix() -> None:
    argv = ("ip", "addr", "add", "192.168.50.1/24", "dev", "veth0")
    assert build_privileged_argv(argv, (), sudo=False) == list(argv)
    assert build_privileged_argv(argv, ("ip", "netns", "exec", "ns1"), sudo=True) == [
        "sudo", "-n", "ip", "netns", "exec", "ns1", *argv]


BOOTED = b"console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 rootwait\n"
EDITED = BOOTED[:-1] + b" ip=192.168.50.2::0.0.0.0:255.255.255.0::eth0:off\n"


def test_pi_change_write_unchanged_restore_remove() -> None:
    chosen = build_link_addresses(None, None, 24, LAPTOP, (), CABLE.name)
    first = build_pi_change(BootState("card", BOOTED, None), chosen, "")
    assert first.action is PiAction.WRITE and first.new == EDITED and "+console" in first.diff
    assert build_pi_change(BootState("card", EDITED, BOOTED), chosen, "").action is PiAction.UNCHANGED
    restore = build_pi_undo(BootState("card", EDITED, BOOTED))
    assert restore.action is PiAction.RESTORE and restore.new == BOOTED
    removed = build_pi_undo(BootState("card", EDITED, None))
    assert removed.action is PiAction.REMOVE_IP and removed.new == BOOTED
    theirs = BOOTED.replace(b"rootwait", b"rootwait ip=dhcp")
    assert build_pi_undo(BootState("card", theirs, None)).action is PiAction.NOTHING


def test_config_change_keeps_the_users_lines() -> None:
    chosen = build_link_addresses(None, None, 24, LAPTOP, (), CABLE.name)
    updates = build_config_updates(chosen, "enx1", "pi", 10401)
    _, new = build_config_change('# mine\nfps = 25\npi = "old"\n', updates)
    assert new == ('# mine\nfps = 25\npi = "pi@192.168.50.2"\nlaptop_ip = "192.168.50.1"\npi_ip = "192.168.50.2"\n'
                   'link_prefix = 24\niface = "enx1"\nport = 10401\n')
    assert build_config_change(new, updates) == (new, new)
    _, fresh = build_config_change(None, updates)
    assert fresh.startswith(CONFIG_HEADER)


def test_laptop_undo_finds_the_address_wherever_it_is() -> None:
    saved = SavedLink("192.168.50.1", "192.168.50.2", 24, "enx1")
    moved = LaptopFacts(LaptopTool.IPROUTE2, (LO, iface("enx2", "192.168.50.1/24")))
    assert build_laptop_undo(moved, "enx1", saved).commands == (
        ("ip", "addr", "del", "192.168.50.1/24", "dev", "enx2"),)
    unplugged = build_laptop_undo(LaptopFacts(LaptopTool.IPROUTE2, (LO, WIFI_HOME)), "enx1", saved)
    assert unplugged.commands == () and "nothing to remove" in unplugged.note
    assert build_laptop_undo(moved, "", SavedLink()).commands == ()
    nm = build_laptop_undo(LaptopFacts(LaptopTool.NMCLI, (LO,), profile_exists=True), "enx1", saved)
    assert nm.commands == (("nmcli", "connection", "delete", "piorch-link"),)
    assert build_laptop_undo(LaptopFacts(LaptopTool.MACOS, ()), "", saved).commands == (
        ("networksetup", "-setdhcp", "Ethernet"),)


def test_render_plan_lists_the_exact_commands() -> None:
    chosen = build_link_addresses(None, None, 24, LAPTOP, (), CABLE.name)
    facts = LaptopFacts(LaptopTool.IPROUTE2, LAPTOP)
    laptop = build_laptop_setup(facts, CABLE.name, chosen, SavedLink())
    plan = SetupPlan(Mode.SETUP, chosen, CABLE.name, None, laptop, Path("/c.toml"), "", "x")
    assert render_plan(plan, dry_run=True) == [
        "link: laptop 192.168.50.1/24 on enx00e04c680001, Pi 192.168.50.2",
        "laptop (iproute2): would run these commands:",
        "  ip addr add 192.168.50.1/24 dev enx00e04c680001",
        "  ip link set enx00e04c680001 up",
        "  note: without NetworkManager the address does not survive a reboot: run setup-link again",
        "config: would save link settings in /c.toml",
    ]


def test_check_report() -> None:
    saved = SavedLink("192.168.50.1", "192.168.50.2", 24, "enx1")
    good = LaptopFacts(LaptopTool.IPROUTE2, (LO, WIFI_HOME, iface("enx1", "192.168.50.1/24")))
    items = build_check_report(good, saved, "SSH-2.0-OpenSSH_9.2p1", 22)
    assert [item.ok for item in items] == [True, True, True]
    down = LaptopFacts(LaptopTool.IPROUTE2, (LO, iface("wlan0", "192.168.50.7/24", kind=IfaceKind.WIRELESS),
                                             iface("enx1", "192.168.50.1/24", up=False)))
    lines = render_check(build_check_report(down, saved, None, 22))
    assert lines[0].startswith("FAIL laptop address: 192.168.50.1/24 is on enx1, which is down")
    assert lines[1].startswith("FAIL subnet unique: 192.168.50.0/24 is also used elsewhere (wlan0 has 192.168.50.7/24)")
    assert lines[2].startswith("FAIL Pi answers SSH: nothing answers SSH at 192.168.50.2:22 -> boot the Pi")
    no_carrier = LaptopFacts(LaptopTool.IPROUTE2, (iface("enx1", "192.168.50.1/24", carrier=False),))
    first = build_check_report(no_carrier, saved, None, 22)[0]
    assert first.ok and first.detail.endswith("(no carrier yet: cable unplugged or Pi off?)")
    gone = build_check_report(LaptopFacts(LaptopTool.IPROUTE2, (LO,)), saved, None, 22)
    assert "is on no interface" in gone[0].detail
    assert not build_check_report(good, SavedLink(), None, 22)[0].ok
