"""Option declarations that several commands share, declared once (typer reads them from `Annotated`).

A command's signature then says `out: OutOption = None`; the help text and the spelling are the same in
every command that takes the option. Defaults are None: the config's four layers fill them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

CONFIG_HELP = "Config file (default: ~/.config/piorch/config.toml). Precedence: defaults < file < PIORCH_* < flags."

# typer reads these annotations at run time: Optional[...] keeps them valid on Python 3.10 too.
PiOption = Annotated[str | None, typer.Option(
    "--pi", help="[user@]host[:port] or an ~/.ssh/config alias (config: pi).")]
LaptopIpOption = Annotated[str | None, typer.Option(
    "--laptop-ip", help="Where the Pi sends (default: config, else this end of the SSH link).")]
PortOption = Annotated[str | None, typer.Option(
    "--port", help="TCP port the laptop receives on [10401]; `auto`: the first free one from the configured "
                   "port up; 0: any free port (builtin backend).")]
OutOption = Annotated[Path | None, typer.Option("--out", help="Folder for the files [./recv].")]
BackendOption = Annotated[str | None, typer.Option(
    "--backend", help="Laptop receiver: builtin (Python; accepts only the Pi) or nc (local netcat; cannot refuse "
                      "other peers) [builtin].")]
VflipOption = Annotated[bool | None, typer.Option("--vflip/--no-vflip", help="Flip vertically (config: vflip).")]
HflipOption = Annotated[bool | None, typer.Option("--hflip/--no-hflip",
                                                     help="Flip horizontally (config: hflip).")]
AcceptNewHostKeyOption = Annotated[bool, typer.Option(
    "--accept-new-host-key", help="Record an unknown Pi host key in known_hosts (a changed key is always refused).")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)]
