"""`setup-link` core: plan everything first (pure), show it, then apply Pi side, laptop side, config.

Every check happens while planning, so bad input changes nothing. Applying is idempotent: an edit already in
place, an address already present, a profile already there are skipped, so a second run changes nothing.
The core never prints: lines go to `notify`, and the plan and check report are frozen objects.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from orchestrator.config import build_config_text
from orchestrator.link.bootfs import BootFiles, BootState
from orchestrator.link.cmdline import (
    build_diff,
    find_ip_param,
    is_piorch_ip_param,
    parse_cmdline,
    remove_ip_param,
    set_ip_param,
)
from orchestrator.link.plan import (
    Iface,
    LaptopPlan,
    LaptopTool,
    LinkAddresses,
    LinkError,
    Route,
    build_iproute2_setup,
    build_iproute2_undo,
    build_link_addresses,
    build_macos_setup,
    build_macos_undo,
    build_nmcli_setup,
    build_nmcli_undo,
    build_windows_setup,
    build_windows_undo,
    check_iface_name,
    format_command,
    pick_iface,
)
from orchestrator.settings import SshSettings
from orchestrator.stream.manifest import write_bytes_atomically

Notify = Callable[[str], None]
DEFAULT_SERVICE = "Ethernet"
CONFIG_HEADER = "# piorch configuration; `piorch setup-link` saved the link settings below.\n"


class Mode(str, enum.Enum):
    SETUP = "setup"
    UNDO = "undo"
    CHECK = "check"


class PiAction(str, enum.Enum):
    WRITE = "write"
    UNCHANGED = "unchanged"
    RESTORE = "restore"
    REMOVE_IP = "remove-ip"
    NOTHING = "nothing"


@dataclass(frozen=True)
class SavedLink:
    """What an earlier run saved (config file and environment, before flags): undo and re-runs use it."""

    laptop_ip: str = ""
    pi_ip: str = ""
    prefix: int = 24
    iface: str = ""

    @property
    def laptop(self) -> IPv4Interface | None:
        return IPv4Interface(f"{self.laptop_ip}/{self.prefix}") if self.laptop_ip else None


@dataclass(frozen=True)
class LaptopFacts:
    """The laptop as it is: which tool configures it, its interfaces and routes, the nmcli profile."""

    tool: LaptopTool
    ifaces: tuple[Iface, ...]
    routes: tuple[Route, ...] = ()
    profile_exists: bool = False


@dataclass(frozen=True)
class PiChange:
    action: PiAction
    state: BootState
    new: bytes | None = None
    diff: str = ""


@dataclass(frozen=True)
class SetupPlan:
    mode: Mode
    addresses: LinkAddresses | None
    iface: str
    pi: PiChange | None
    laptop: LaptopPlan | None
    config_path: Path
    config_old: str
    config_new: str


def build_pi_change(state: BootState, addresses: LinkAddresses, hostname: str) -> PiChange:
    """The cmdline.txt edit, or UNCHANGED when it is already in place (no write, the backup untouched)."""
    parse_cmdline(state.current, state.where)
    new = set_ip_param(state.current.decode("utf-8"), str(addresses.pi), addresses.netmask, hostname).encode("utf-8")
    if new == state.current:
        return PiChange(PiAction.UNCHANGED, state)
    return PiChange(PiAction.WRITE, state, new, build_diff(state.current, new, "cmdline.txt"))


def build_pi_undo(state: BootState) -> PiChange:
    """Back to the original: the backup byte for byte; without one, only piorch's own ip= token is removed."""
    if state.backup is not None:
        return PiChange(PiAction.RESTORE, state, state.backup, build_diff(state.current, state.backup, "cmdline.txt"))
    parse_cmdline(state.current, state.where)
    text = state.current.decode("utf-8")
    if not is_piorch_ip_param(find_ip_param(text)):
        return PiChange(PiAction.NOTHING, state)
    new = remove_ip_param(text).encode("utf-8")
    return PiChange(PiAction.REMOVE_IP, state, new, build_diff(state.current, new, "cmdline.txt"))


def build_laptop_setup(facts: LaptopFacts, iface: str, addresses: LinkAddresses, saved: SavedLink) -> LaptopPlan:
    if facts.tool is LaptopTool.NMCLI:
        return build_nmcli_setup(iface, addresses.laptop, facts.profile_exists,
                                 _iface_named(facts.ifaces, iface).has_carrier)
    if facts.tool is LaptopTool.MACOS:
        return build_macos_setup(iface, addresses.laptop)
    if facts.tool is LaptopTool.WINDOWS:
        return build_windows_setup(iface, addresses.laptop)
    stale = saved.laptop if saved.iface in ("", iface) else None
    return build_iproute2_setup(_iface_named(facts.ifaces, iface), addresses.laptop, stale)


def build_laptop_undo(facts: LaptopFacts, iface: str, saved: SavedLink) -> LaptopPlan:
    """Remove what setup added. iproute2: the saved address from whichever interface holds it (an unplugged
    USB adapter took its address with it, which is no reason to fail the undo of the Pi side)."""
    if facts.tool is LaptopTool.NMCLI:
        return build_nmcli_undo(iface, facts.profile_exists)
    if facts.tool is LaptopTool.MACOS:
        return build_macos_undo(iface or DEFAULT_SERVICE)
    if facts.tool is LaptopTool.WINDOWS:
        return build_windows_undo(iface or DEFAULT_SERVICE)
    laptop = saved.laptop
    if laptop is None:
        return LaptopPlan(LaptopTool.IPROUTE2, iface, (), persistent=False,
                          note="no link address saved in the config: nothing known to remove")
    holders = [i for i in facts.ifaces if laptop in i.addresses]
    if not holders:
        return LaptopPlan(LaptopTool.IPROUTE2, iface, (), persistent=False,
                          note=f"{laptop.with_prefixlen} is on no interface: nothing to remove")
    commands = tuple(argv for holder in holders for argv in build_iproute2_undo(holder, laptop).commands)
    return LaptopPlan(LaptopTool.IPROUTE2, holders[0].name, commands, persistent=False)


def _iface_named(ifaces: Sequence[Iface], name: str) -> Iface:
    for iface in ifaces:
        if iface.name == name:
            return iface
    raise LinkError(f"no interface {name!r} on this laptop", "pass --iface with one that `ip link` shows")


def resolve_link_iface(facts: LaptopFacts, wanted: str | None, saved: SavedLink, skip_laptop: bool) -> str:
    """The interface (Linux) or network service name (macOS, Windows) the cable is on."""
    if not facts.tool.applies:
        return check_iface_name(wanted or DEFAULT_SERVICE, facts.tool)
    if wanted:
        check_iface_name(wanted, facts.tool)
    if skip_laptop:
        # Nothing is configured here, so no interface has to exist; the saved one keeps the link's own
        # address from counting as a clash on a re-run.
        return wanted or saved.iface
    return pick_iface(facts.ifaces, wanted or saved.iface or None, saved.laptop_ip or None).name


def build_config_updates(addresses: LinkAddresses, iface: str, pi_user: str, port: int) -> dict[str, Any]:
    return {"pi": f"{pi_user}@{addresses.pi}", "laptop_ip": str(addresses.laptop.ip), "pi_ip": str(addresses.pi),
            "link_prefix": addresses.laptop.network.prefixlen, "iface": iface, "port": port}


def build_config_change(current: str | None, updates: Mapping[str, Any]) -> tuple[str, str]:
    """(old, new) text of the user config; a new file gets a header saying where it came from."""
    old = current or ""
    new = build_config_text(old, updates) if current is not None else CONFIG_HEADER + build_config_text("", updates)
    return old, new


def render_plan(plan: SetupPlan, dry_run: bool) -> list[str]:
    """What will be (or, with --dry-run, would be) done, as output lines; commands exactly as run."""
    lines: list[str] = []
    would = "would " if dry_run else ""
    if plan.addresses is not None:
        lines.append(f"link: laptop {plan.addresses.laptop.with_prefixlen} on {plan.iface or '(not configured)'}, "
                     f"Pi {plan.addresses.pi}")
    if plan.pi is not None:
        where = plan.pi.state.where
        messages = {
            PiAction.UNCHANGED: f"{where}: ip= already set, unchanged",
            PiAction.NOTHING: f"{where}: no backup and no piorch ip= token, nothing to undo",
            PiAction.WRITE: f"{where}: {would}set ip= (original kept as cmdline.txt.piorch-orig)",
            PiAction.RESTORE: f"{where}: {would}restore the original from cmdline.txt.piorch-orig",
            PiAction.REMOVE_IP: f"{where}: no backup; {would}remove piorch's ip= token",
        }
        lines.append(messages[plan.pi.action])
        lines += plan.pi.diff.splitlines()
    if plan.laptop is not None:
        tool = plan.laptop.tool
        if not plan.laptop.commands:
            lines.append(f"laptop ({tool.value}): nothing to do{': ' + plan.laptop.note if plan.laptop.note else ''}")
        else:
            verb = "run" if tool.applies else "print"
            lines.append(f"laptop ({tool.value}): {would if tool.applies else ''}{verb} these commands:")
            lines += [f"  {format_command(argv, tool)}" for argv in plan.laptop.commands]
            if plan.laptop.note:
                lines.append(f"  note: {plan.laptop.note}")
    if plan.config_new != plan.config_old:
        lines.append(f"config: {would}save link settings in {plan.config_path}")
    return lines


def apply_plan(plan: SetupPlan, boot: BootFiles | None, run_laptop: Callable[[LaptopPlan], None],
               notify: Notify) -> None:
    """Pi side, laptop side, config, in that order; each step is skipped when it has nothing to change."""
    if plan.pi is not None and boot is not None:
        change = plan.pi
        if change.action is PiAction.RESTORE:
            boot.restore()
        elif change.action in (PiAction.WRITE, PiAction.REMOVE_IP) and change.new is not None:
            boot.write(change.new, change.state.current, make_backup=change.action is PiAction.WRITE)
        if change.action not in (PiAction.UNCHANGED, PiAction.NOTHING):
            notify(f"{change.state.where}: done")
    if plan.laptop is not None and plan.laptop.tool.applies and plan.laptop.commands:
        run_laptop(plan.laptop)
    if plan.config_new != plan.config_old:
        plan.config_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(plan.config_path, plan.config_new.encode("utf-8"))
        notify(f"saved link settings in {plan.config_path}")


@dataclass(frozen=True)
class CheckItem:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def build_check_report(facts: LaptopFacts, saved: SavedLink, ssh_banner: str | None, ssh_port: int) -> list[CheckItem]:
    """The three questions of `--check`, answered from a laptop snapshot and the Pi's SSH banner."""
    laptop = saved.laptop
    if laptop is None or not saved.pi_ip:
        return [CheckItem("setup", False, "no link settings saved (laptop_ip, pi_ip)", "run `piorch setup-link` first")]
    items: list[CheckItem] = []
    holders = [iface for iface in facts.ifaces if laptop in iface.addresses]
    if not holders:
        items.append(CheckItem("laptop address", False, f"{laptop.with_prefixlen} is on no interface of this laptop",
                               "run `piorch setup-link` again (an iproute2 address is lost at reboot)"))
    elif not holders[0].is_up:
        items.append(CheckItem("laptop address", False, f"{laptop.with_prefixlen} is on {holders[0].name}, which is "
                               "down", f"plug in the cable and power the Pi; `ip link set {holders[0].name} up`"))
    else:
        # No timing games: right after `ip link set up` the kernel reports the carrier a moment later, so a
        # missing one is a hint next to the SSH answer, not a failure of its own.
        hint = "" if holders[0].has_carrier else " (no carrier yet: cable unplugged or Pi off?)"
        items.append(CheckItem("laptop address", True, f"{laptop.with_prefixlen} is up on {holders[0].name}{hint}"))
    network: IPv4Network = laptop.network
    link_names = {iface.name for iface in holders} | {saved.iface}
    clashes = [f"{iface.name} has {addr.with_prefixlen}" for iface in facts.ifaces if iface.name not in link_names
               for addr in iface.addresses if addr.network.overlaps(network)]
    clashes += [f"a route to {route.network} via {route.iface}" for route in facts.routes
                if route.iface not in link_names and route.network.prefixlen > 0 and route.network.overlaps(network)]
    if clashes:
        items.append(CheckItem("subnet unique", False, f"{network} is also used elsewhere ({'; '.join(clashes)})",
                               "run `piorch setup-link --undo`, then setup-link with another --laptop-ip/--pi-ip"))
    else:
        items.append(CheckItem("subnet unique", True, f"{network} is used by the link only"))
    target = f"{saved.pi_ip}:{ssh_port}"
    if ssh_banner is None:
        items.append(CheckItem("Pi answers SSH", False, f"nothing answers SSH at {target}",
                               "boot the Pi with the cable plugged in (give it a minute), and check that SSH is "
                               "enabled on it"))
    else:
        items.append(CheckItem("Pi answers SSH", True, f"{target} answers ({ssh_banner})"))
    return items


def render_check(items: Sequence[CheckItem]) -> list[str]:
    return [f"{'ok  ' if item.ok else 'FAIL'} {item.name}: {item.detail}{'' if item.ok else ' -> ' + item.fix}"
            for item in items]


def raise_for_check(items: Sequence[CheckItem]) -> None:
    failed = [item for item in items if not item.ok]
    if failed:
        names = ", ".join(item.name for item in failed)
        raise LinkError(f"link check failed ({names})", failed[0].fix)


@dataclass(frozen=True)
class SetupLinkSettings:
    """Everything `setup-link` was asked, after the four config layers were merged and checked."""

    mode: Mode
    config_path: Path
    # The link as asked now (flags over config) and as saved before (config and environment only).
    link: SavedLink
    saved: SavedLink
    dry_run: bool = False
    hostname: str = ""
    boot_dir: Path | None = None
    ssh: SshSettings | None = None
    pi_boot_dir: str = ""
    skip_pi: bool = False
    skip_laptop: bool = False
    tool: LaptopTool | None = None
    pi_user: str = "pi"
    port: int = 10401
    ssh_port: int = 22


# The Pi may still be booting when setup ends: a short look only; `--check` waits longer.
END_PROBE_TIMEOUT_S = 2.0
CHECK_PROBE_TIMEOUT_S = 5.0


def gather_laptop_facts(tool: LaptopTool | None, ask_network_manager: bool) -> LaptopFacts:
    from orchestrator.link.laptop import detect_tool, gather_ifaces, gather_routes, nm_profile_exists

    if tool is None:
        tool = detect_tool() if ask_network_manager else _platform_tool()
    profile = tool is LaptopTool.NMCLI and ask_network_manager and nm_profile_exists()
    return LaptopFacts(tool, gather_ifaces(), gather_routes(), profile)


def _platform_tool() -> LaptopTool:
    import sys

    if sys.platform == "darwin":
        return LaptopTool.MACOS
    return LaptopTool.WINDOWS if sys.platform.startswith("win") else LaptopTool.IPROUTE2


def run_check(settings: SetupLinkSettings, notify: Notify) -> None:
    from orchestrator.link.laptop import probe_ssh

    facts = gather_laptop_facts(settings.tool or LaptopTool.IPROUTE2, ask_network_manager=False)
    banner = probe_ssh(settings.link.pi_ip, settings.ssh_port, CHECK_PROBE_TIMEOUT_S) if settings.link.pi_ip else None
    items = build_check_report(facts, settings.link, banner, settings.ssh_port)
    for line in render_check(items):
        notify(line)
    raise_for_check(items)


def run_setup_link(settings: SetupLinkSettings, notify: Notify) -> None:
    """Plan, show, and (unless --dry-run) apply a setup or an undo; `--check` runs `run_check` instead."""
    if settings.mode is Mode.CHECK:
        run_check(settings, notify)
        return
    facts = gather_laptop_facts(settings.tool, ask_network_manager=not settings.skip_laptop)
    addresses: LinkAddresses | None = None
    if settings.mode is Mode.UNDO:
        iface = settings.link.iface
    else:
        # Everything that can refuse the input is checked before the SD card or the Pi is even opened.
        iface = resolve_link_iface(facts, settings.link.iface or None, settings.saved, settings.skip_laptop)
        link = settings.link
        addresses = build_link_addresses(link.pi_ip or None, link.laptop_ip or None, link.prefix, facts.ifaces,
                                         facts.routes, iface)
    host: Any = None
    try:
        boot: BootFiles | None = None
        if not settings.skip_pi:
            boot, host = _open_boot(settings)
        state = boot.read() if boot is not None else None
        plan = _build_plan(settings, facts, iface, addresses, state, host)
        for line in render_plan(plan, settings.dry_run):
            notify(line)
        if settings.dry_run:
            notify("dry run: nothing was changed")
            return
        apply_plan(plan, boot, lambda laptop: _apply_laptop(laptop, notify), notify)
    finally:
        if host is not None:
            host.close()
    if plan.mode is Mode.SETUP and plan.addresses is not None:
        _finish_setup(settings, plan, notify)


def _open_boot(settings: SetupLinkSettings) -> tuple[BootFiles, Any]:
    from orchestrator.link.bootfs import (
        PI_BOOT_DIRS,
        LocalBootFiles,
        RemoteBootFiles,
        build_boot_search_roots,
        default_boot_users,
        find_boot_dirs,
        pick_boot_dir,
    )

    if settings.ssh is not None:
        from orchestrator.pi.ssh import SshHost

        host = SshHost.connect(settings.ssh)
        dirs = (settings.pi_boot_dir,) if settings.pi_boot_dir else PI_BOOT_DIRS
        return RemoteBootFiles(host, dirs), host
    folder = settings.boot_dir or pick_boot_dir(find_boot_dirs(build_boot_search_roots(default_boot_users())))
    return LocalBootFiles(folder), None


def _build_plan(settings: SetupLinkSettings, facts: LaptopFacts, iface: str, addresses: LinkAddresses | None,
                state: BootState | None, host: Any) -> SetupPlan:
    current = settings.config_path.read_text(encoding="utf-8") if settings.config_path.is_file() else None
    if addresses is None:
        pi = build_pi_undo(state) if state is not None else None
        laptop = None if settings.skip_laptop else build_laptop_undo(facts, iface, settings.link)
        old = current or ""
        return SetupPlan(Mode.UNDO, None, iface, pi, laptop, settings.config_path, old, old)
    pi = build_pi_change(state, addresses, settings.hostname) if state is not None else None
    laptop = None if settings.skip_laptop else build_laptop_setup(facts, iface, addresses, settings.saved)
    target_user = getattr(getattr(host, "target", None), "user", None)
    updates = build_config_updates(addresses, iface, target_user or settings.pi_user, settings.port)
    old, new = build_config_change(current, updates)
    return SetupPlan(Mode.SETUP, addresses, iface, pi, laptop, settings.config_path, old, new)


def _apply_laptop(plan: LaptopPlan, notify: Notify) -> None:
    from orchestrator.link.laptop import apply_laptop_plan, needs_sudo

    apply_laptop_plan(plan, sudo=needs_sudo(), notify=notify)


def _finish_setup(settings: SetupLinkSettings, plan: SetupPlan, notify: Notify) -> None:
    """When the Pi already answers on the link, run the full check; otherwise say what comes next."""
    from orchestrator.link.laptop import probe_ssh

    assert plan.addresses is not None
    pi_ip = str(plan.addresses.pi)
    if plan.laptop is None or not plan.laptop.tool.applies:
        notify(f"next: boot the Pi on the cable, then `piorch setup-link --check` and `piorch trust {pi_ip}`")
        return
    banner = probe_ssh(pi_ip, settings.ssh_port, END_PROBE_TIMEOUT_S)
    if banner is None:
        notify(f"next: boot the Pi on the cable, then `piorch setup-link --check` and `piorch trust {pi_ip}`")
        return
    done = SavedLink(str(plan.addresses.laptop.ip), pi_ip, plan.addresses.laptop.network.prefixlen, plan.iface)
    facts = gather_laptop_facts(plan.laptop.tool, ask_network_manager=False)
    items = build_check_report(facts, done, banner, settings.ssh_port)
    for line in render_check(items):
        notify(line)
    raise_for_check(items)
