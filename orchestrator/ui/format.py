"""Pure pieces of every display: durations, sparklines, Pi health in words, the styles of levels and states.

Sizes are rich's own (`rich.filesize.decimal`: 1.2 MB, as disk makers and `ls --si` count). Text from the user
or the Pi (paths, host names, camera messages) always goes into rich as `Text`, never as markup: a folder
named `[red]cam[/red]` is shown as such, and a stray `[/]` cannot raise on the dashboard's drawing thread.
`rich.text` is imported by the functions that make Text: the plain log, which uses none of them, starts
without it (~25 ms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.filesize import decimal as format_size

from orchestrator.events import Notice, PiHealthReport, Progress, State

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["SPARK", "WARNING_STYLE", "build_sparkline", "format_duration", "format_health", "format_integrity",
           "format_size", "integrity_text", "notice_text", "state_text"]

SPARK = " ▁▂▃▄▅▆▇█"
WARNING_STYLE = "yellow"
NOTICE_STYLES = {"error": "bold red", "warning": WARNING_STYLE}
STATE_COLOURS = {State.FAILED: "red", State.INTERRUPTED: "yellow", State.DONE: "green"}


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def build_sparkline(values: list[float], width: int = 30) -> str:
    """Values scaled to their maximum, the newest on the right."""
    values = values[-width:]
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, round(v / top * (len(SPARK) - 1)))] for v in values)


def format_health(health: PiHealthReport) -> str:
    """One line: temperature, throttling in words, load, free memory, whether the pipeline runs."""
    parts = []
    if health.temp_c is not None:
        parts.append(f"{health.temp_c:.1f} °C")
    parts.append(", ".join(health.throttled) if health.throttled else "not throttled")
    if health.load1 is not None:
        parts.append(f"load {health.load1:.2f}")
    if health.mem_available_mb is not None:
        parts.append(f"{health.mem_available_mb} MB free")
    if health.pipeline_alive is not None:
        parts.append("pipeline running" if health.pipeline_alive else "pipeline NOT running")
    return ", ".join(parts)


def notice_text(notice: Notice, prefix: str = "") -> Text:
    """A notice as printed above a live display: errors red, warnings yellow, the words literal."""
    from rich.text import Text

    return Text(prefix + notice.message, style=NOTICE_STYLES.get(notice.level, ""))


def state_text(state: State, detail: str = "") -> Text:
    """The state in its colour, then the detail (a host name, a tool, a reason) as it is."""
    from rich.text import Text

    return Text.assemble((state.value, STATE_COLOURS.get(state, "white")), (f" {detail}" if detail else ""))


def format_integrity(progress: Progress) -> str | None:
    """The camera's own count, in words: "1,234 frames, none dropped" or "1,234 frames, 3 dropped (longest
    gap 120 ms)"; None when the camera sends no timestamps."""
    if progress.frames_dropped is None:
        return None
    frames = f"{progress.camera_frames or 0:,} frames"
    if not progress.frames_dropped:
        return f"{frames}, none dropped"
    gap = f" (longest gap {progress.longest_gap_ms:.0f} ms)" if progress.longest_gap_ms else ""
    return f"{frames}, {progress.frames_dropped:,} dropped{gap}"


def integrity_text(progress: Progress) -> Text | None:
    """format_integrity in the warning colour as soon as any frame was dropped."""
    from rich.text import Text

    words = format_integrity(progress)
    if words is None:
        return None
    return Text(words, style=WARNING_STYLE if progress.frames_dropped else "")
