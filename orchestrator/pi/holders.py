"""Who holds the camera on the Pi, and whether it is a leftover of an earlier piorch run (pure + one effect).

A camera process keeps its device open: /dev/vchiq (legacy stack), /dev/video* and /dev/media*
(libcamera). The Pi-side script looks for open descriptors on those in /proc. Processes a piorch pipeline
started carry PIORCH_RUN=1 in their environment (set by the pipeline script), so an orphan of an earlier
run is recognised for sure and can be stopped without asking; anything else is named and only stopped on
`--kill-stale`. `$PIORCH_SIM_LOCK` is included so the camera simulator's lock file counts as the device.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.pi.host import Host

HOLDER_MARK = "piorch-holder"


def build_holders_script() -> str:
    # Only processes of this user can be inspected (and stopped); /proc/PID/environ needs the same user.
    return (
        'for fd in /proc/[0-9]*/fd/*; do t=$(readlink "$fd" 2>/dev/null) || continue; '
        'case "$t" in /dev/vchiq|/dev/video*|/dev/media*) ;; '
        '*) [ -n "${PIORCH_SIM_LOCK:-}" ] && [ "$t" = "$PIORCH_SIM_LOCK" ] || continue ;; esac; '
        'pid=${fd#/proc/}; pid=${pid%%/*}; echo "$pid"; done | sort -u | while read -r pid; do '
        "pgid=$(ps -o pgid= -p \"$pid\" 2>/dev/null | tr -d ' '); "
        'mine=no; tr "\\0" "\\n" < "/proc/$pid/environ" 2>/dev/null | grep -qx "PIORCH_RUN=1" && mine=yes; '
        'cmd=$(tr "\\0" " " < "/proc/$pid/cmdline" 2>/dev/null | cut -c1-120); '
        f'echo "{HOLDER_MARK} $pid ${{pgid:-0}} $mine $cmd"; done'
    )


@dataclass(frozen=True)
class Holder:
    pid: int
    pgid: int
    from_piorch: bool
    command: str


def parse_holders(text: str) -> list[Holder]:
    holders = []
    for line in text.splitlines():
        parts = line.split(" ", 4)
        if len(parts) >= 4 and parts[0] == HOLDER_MARK and parts[1].isdigit() and parts[2].isdigit():
            holders.append(Holder(int(parts[1]), int(parts[2]), parts[3] == "yes",
                                  parts[4].strip() if len(parts) > 4 else "?"))
    return holders


def find_holders(host: Host) -> list[Holder]:
    return parse_holders(host.run(build_holders_script(), timeout=15).stdout)


def describe(holders: list[Holder]) -> str:
    return ", ".join(f"pid {h.pid} ({h.command or '?'})" for h in holders) or "a process piorch cannot see"
