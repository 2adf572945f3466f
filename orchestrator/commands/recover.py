"""`piorch recover DIR`: finalise the `.tmp` files a killed run left behind."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.commands.common import stdout_console
from orchestrator.errors import UsageError


def recover(
    out: Path = typer.Argument(Path("recv"), help="Folder to look in [./recv]."),
) -> None:
    """Rename each leftover `<uuid>.<ext>.tmp` to its final name, hash it, and write a manifest with status
    `recovered`; a raw recording's `.yuv` also gets its `.y4m`. Files a running piorch is still writing are
    left alone; nothing is ever deleted. `record`, `listen` and `snap` do the same for their folder when they
    start (without the `.y4m`, so as not to hold up the start)."""
    from orchestrator.stream.recovery import recover_leftovers
    from orchestrator.ui.log import PlainLog
    from orchestrator.ui.summary import render_summary

    if not out.is_dir():
        raise UsageError(f"{out} is not a folder", "give the folder piorch recorded into, e.g. `piorch recover recv`")
    files = recover_leftovers(out, PlainLog())
    if files:
        render_summary(files, stdout_console())
    else:
        print(f"nothing to recover in {out}")
