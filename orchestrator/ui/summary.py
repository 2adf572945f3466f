"""The table printed at the end of record, listen, snap and recover: one row a file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text

from orchestrator.events import FileFinished
from orchestrator.ui.format import WARNING_STYLE, format_duration, format_size


def render_summary(files: Sequence[FileFinished], console: Any) -> None:
    """File, size, duration, average Mbit/s, frames the camera dropped (by its own timestamps; empty without
    them, yellow above 0), status, under a title naming the folders (as they are named)."""
    from rich.table import Table

    folders = sorted({str(item.path.parent) for item in files})
    title = Text(f"received in {', '.join(folders)}")
    # As wide as the title (up to the terminal's width): a folder's name is not folded into pieces.
    table = Table(title=title, min_width=title.cell_len)
    for name in ("file", "size", "duration", "avg Mbit/s", "dropped", "status"):
        table.add_column(name, justify="right" if name in ("size", "duration", "avg Mbit/s", "dropped") else "left")
    for item in files:
        rate = item.bytes * 8 / item.duration_s / 1e6 if item.duration_s > 0 else 0.0
        status = "removed" if item.removed else item.status.value
        dropped = Text("" if item.frames_dropped is None else f"{item.frames_dropped:,}",
                       style=WARNING_STYLE if item.frames_dropped else "")
        table.add_row(Text(item.path.name), format_size(item.bytes), format_duration(item.duration_s),
                      f"{rate:.2f}", dropped, status)
    console.print(table)
