"""`piorch setup-link`: static addresses for the direct cable, on the Pi's cmdline.txt and on the laptop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from orchestrator.commands.common import load
from orchestrator.commands.options import CONFIG_HELP
from orchestrator.errors import UsageError

if TYPE_CHECKING:
    from orchestrator.link.setup import SetupLinkSettings

TOOLS = ("auto", "nmcli", "iproute2", "macos", "windows")


def setup_link(
    pi_ip: str = typer.Option(None, "--pi-ip", help="The Pi's address on the cable [a free subnet's .2]."),
    laptop_ip: str = typer.Option(None, "--laptop-ip", help="The laptop's address on the cable [.1]."),
    prefix: int = typer.Option(None, "--prefix", help="Prefix length of the link subnet [24]."),
    boot: Path = typer.Option(None, "--boot", help="The SD card's boot partition folder [found by itself]."),
    pi: str = typer.Option(None, "--pi", help="Edit cmdline.txt on a running Pi over SSH (Wi-Fi, USB gadget)."),
    iface: str = typer.Option(None, "--iface",
                              help="Laptop wired interface (macOS/Windows: network service name) [found by itself]."),
    skip_pi: bool = typer.Option(False, "--skip-pi", help="Leave cmdline.txt alone."),
    skip_laptop: bool = typer.Option(False, "--skip-laptop", help="Leave the laptop's network alone."),
    hostname: str = typer.Option("", "--hostname", help="Hostname field of ip= [empty: keep the Pi's own]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the diff and the exact commands; change nothing."),
    undo: bool = typer.Option(False, "--undo", help="Restore cmdline.txt byte for byte and remove the laptop setup."),
    check: bool = typer.Option(False, "--check",
                               help="Is the laptop address up, does the Pi answer SSH, is the subnet unique?"),
    laptop_tool: str = typer.Option("auto", "--laptop-tool",
                                    help="auto (nmcli if NetworkManager runs, else iproute2), nmcli, iproute2, macos "
                                         "or windows (the last two only print)."),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key",
                                             help="With --pi: record an unknown host key in known_hosts."),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Give the direct cable static addresses: `ip=` in the Pi's cmdline.txt and the laptop's interface.

    Run it with the freshly flashed SD card in the laptop, then boot the Pi on the cable: `piorch record`
    reaches it with no flags (the addresses are saved in the config). `--undo` reverts both sides.
    """
    from orchestrator.link.setup import run_setup_link

    settings = build_setup_link_settings(
        {"pi_ip": pi_ip, "laptop_ip": laptop_ip, "iface": iface, "pi": pi}, prefix, config,
        boot=boot, skip_pi=skip_pi, skip_laptop=skip_laptop, hostname=hostname, dry_run=dry_run, undo=undo,
        check=check, laptop_tool=laptop_tool, accept_new_host_key=accept_new_host_key,
    )
    run_setup_link(settings, print)


def build_setup_link_settings(
    flags: dict[str, object], prefix: int | None, config_file: Path | None, *, boot: Path | None, skip_pi: bool,
    skip_laptop: bool, hostname: str, dry_run: bool, undo: bool, check: bool, laptop_tool: str,
    accept_new_host_key: bool,
) -> SetupLinkSettings:
    from orchestrator.link.cmdline import CmdlineError, check_hostname
    from orchestrator.link.plan import LaptopTool
    from orchestrator.link.setup import Mode, SavedLink, SetupLinkSettings
    from orchestrator.settings import SshSettings

    if undo and check:
        raise UsageError("--undo and --check both given", "use one of them")
    if boot is not None and flags["pi"] is not None:
        raise UsageError("--boot and --pi both given", "edit the SD card (--boot) or the running Pi (--pi), not both")
    if skip_pi and (boot is not None or flags["pi"] is not None):
        raise UsageError("--skip-pi with --boot or --pi", "drop --skip-pi, or drop --boot/--pi")
    if skip_pi and skip_laptop:
        raise UsageError("--skip-pi and --skip-laptop leave nothing to do", "drop one of them")
    if laptop_tool not in TOOLS:
        raise UsageError(f"--laptop-tool {laptop_tool!r} is unknown", f"use one of {', '.join(TOOLS)}")
    if boot is not None and not boot.is_dir():
        raise UsageError(f"--boot {boot} is not a folder",
                         "give the SD card's boot partition, e.g. /media/$USER/bootfs")
    try:
        check_hostname(hostname)
    except CmdlineError as exc:  # an option value: a usage error (exit 2) like the others
        raise UsageError(f"--hostname: {exc.message}", exc.fix) from None
    values = load(flags, config_file)
    saved_values = load({}, config_file)
    link = SavedLink(values["laptop_ip"], values["pi_ip"], prefix if prefix is not None else values["link_prefix"],
                     values["iface"])
    saved = SavedLink(saved_values["laptop_ip"], saved_values["pi_ip"], saved_values["link_prefix"],
                      saved_values["iface"])
    ssh = None
    if flags["pi"] is not None:
        ssh = SshSettings(target=values["pi"],
                          ssh_config=Path(values["ssh_config"]).expanduser() if values["ssh_config"] else None,
                          accept_new_host_key=accept_new_host_key, connect_timeout=values["connect_timeout"])
    saved_pi = str(saved_values["pi"])
    return SetupLinkSettings(
        mode=Mode.CHECK if check else Mode.UNDO if undo else Mode.SETUP,
        config_path=user_config_path(config_file),
        link=link, saved=saved, dry_run=dry_run, hostname=hostname,
        boot_dir=boot.resolve() if boot is not None else None, ssh=ssh, pi_boot_dir=values["pi_boot_dir"],
        skip_pi=skip_pi, skip_laptop=skip_laptop,
        tool=None if laptop_tool == "auto" else LaptopTool(laptop_tool),
        pi_user=saved_pi.split("@", 1)[0] if "@" in saved_pi else "pi",
        port=values["port"],
    )


def user_config_path(config_file: Path | None) -> Path:
    """The file setup-link saves into: --config, else $PIORCH_CONFIG, else the platform's user config."""
    if config_file is not None:
        return config_file
    if "PIORCH_CONFIG" in os.environ:
        return Path(os.environ["PIORCH_CONFIG"])
    from orchestrator.config import default_config_path

    return default_config_path()
