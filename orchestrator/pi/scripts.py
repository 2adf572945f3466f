"""Shell scripts run on the Pi, built as pure strings (every value passes through shlex.quote).

Why so careful: over SSH without a pty, closing the channel does not signal the remote command, and older
raspivid keeps running after its pipe breaks; a camera left running holds the camera until it is killed.
So the pipeline runs in a session of its own whose id piorch learns first thing, and piorch kills that
whole process group itself.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from orchestrator.netcat import NetcatFlavour, parse_nc_flavour
from orchestrator.pi.stack import ToolFacts, clean_board, parse_tool_facts
from orchestrator.pi.timestamps import PIPES_FAILED, PTS_PIPE, VIDEO_PIPE
from orchestrator.settings import RAW_SIBLING, CameraTool, StillTool

PGID_MARK = "piorch-pgid"
CAMERA_EXIT_MARK = "piorch-camera-exit"
NC_EXIT_MARK = "piorch-nc-exit"
# One line of the camera's timestamps file: `piorch-pts 33.370` (the file's header comes through too).
PTS_MARK = "piorch-pts"
# What the camera's side writes into the timestamps pipe once the camera has ended: the reader stops there.
PTS_END = "piorch-pts-end"
# The most timestamp lines a batch holds (build_pipeline_script's pts_batch_ms), whatever their times say.
PTS_BATCH_LINES = 64
# The pipeline's private folder for its named pipes: PREFIX + process group id + "." + random.
PTS_FOLDER_PREFIX = "piorch-"


# Lines that frame the chosen libcamera tool's own answers and the board name in the probe's output.
ABOUT_MARK = "piorch-about"
VERSION_BEGIN, VERSION_END = "piorch-version-begin", "piorch-version-end"
HELP_BEGIN, HELP_END = "piorch-help-begin", "piorch-help-end"
BOARD_MARK = "piorch-board"
# The Pi has mkfifo and mktemp (coreutils; busybox has both too).
PIPES_MARK = "piorch-pipes"
# A boost --help listing of rpicam-vid is about 200 lines; more than this is not a camera tool's help.
HELP_MAX_LINES = 400

# Where the board's name is: /proc/device-tree is a link to /sys/firmware/devicetree/base on a Pi.
DEVICE_TREE_MODELS = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")

# The stamp of what a probe's answer depends on (build_stamp_command), in the probe's output, and what a
# guarded pipeline prints instead of starting when the Pi's stamp is no longer the one it was given.
STAMP_MARK = "piorch-stamp"
STALE_MARK = "piorch-stale"
# Variables that differ from one SSH login to the next and change nothing the probe finds: by prefix, by name.
_SESSION_PREFIXES = ("SSH_", "XDG_SESSION_")
_SESSION_NAMES = ("_", "SHLVL", "PWD", "OLDPWD", "MOTD_SHOWN")
# Every command the probe looks for, beside the camera tools.
_HELPERS = ("nc", "setsid", "mkfifo", "mktemp")


def _probed_tools() -> str:
    return " ".join(tool.value for tool in (CameraTool.RPICAM_VID, CameraTool.LIBCAMERA_VID, CameraTool.RASPIVID,
                                            StillTool.RPICAM_STILL, StillTool.LIBCAMERA_STILL, StillTool.RASPISTILL)
                    ) + " " + " ".join(RAW_SIBLING.values())


def build_stamp_command() -> str:
    """A shell command that prints one checksum of everything a probe's answer depends on, cheaply: the
    search path, every file under it named as one of the probed commands and what it is (inode, size,
    time: a reinstalled or upgraded tool is another file), the board's model, the package database's entry
    (any apt run changes it, libraries included) and the login's exported variables without those that
    change with every login. Same Pi, same software: same stamp.

    It runs before every guarded start, so it starts two programs (ls, cksum) and the shell does the rest
    with its builtins: a walk of $PATH instead of a `$(command -v)` subshell per command, `read` instead of
    cat for the model, `export -p` and `case` instead of env, grep and sort (both list the variables sorted,
    bash as `declare -x NAME="..."`, dash and busybox as `export NAME='...'`). Each process costs a Pi Zero
    milliseconds before its camera starts.

    `ls -lLi --full-time` (GNU coreutils, Raspberry Pi OS's): times to the nanosecond, so a tool rewritten
    in place within the same minute, at the same size, is still another file; plain `ls -lLi` (POSIX: busybox)
    where that option is unknown. All output of the parts goes through one cksum, so a missing part (no
    dpkg, no device tree) is part of the stamp too.
    """
    models = " ".join(DEVICE_TREE_MODELS)
    session = "|".join(
        [f'"{form} {prefix}"*' for prefix in _SESSION_PREFIXES for form in ("export", "declare -x")]
        + [f'"{form} {name}"|"{form} {name}="*' for name in _SESSION_NAMES for form in ("export", "declare -x")]
    )
    return (
        # An empty entry of $PATH is the current folder, a trailing one too (which splitting at `:` drops);
        # a relative entry is given to ls as ./entry, never as something that could read as an option.
        '{ printf \'%s\\n\' "$PATH"; set -f; set --; case $PATH in *:) p=$PATH.;; *) p=$PATH;; esac; IFS=:; '
        'for d in $p; do case $d in /*) ;; *) d=./$d;; esac; '
        f'for t in {_probed_tools()} {" ".join(_HELPERS)}; do [ -f "$d/$t" ] && set -- "$@" "$d/$t"; done; done; '
        'unset IFS; set -- "$@" /var/lib/dpkg/status; ls -lLi --full-time "$@" || ls -lLi "$@"; '
        f'for f in {models}; do [ -r "$f" ] && {{ m=; IFS= read -r m <"$f"; printf \'%s\\n\' "$m"; }}; done; '
        f"export -p | while IFS= read -r v; do case $v in {session}) ;; *) printf '%s\\n' \"$v\";; esac; done; "
        "} 2>/dev/null | cksum"
    )


def build_guarded_script(script: str, stamp: str) -> str:
    """`script`, run only while the Pi's stamp is still `stamp` (the one a kept probe was taken with);
    otherwise a single STALE_MARK line and exit status 0, with nothing started on the Pi."""
    return f'[ "$({build_stamp_command()})" = {shlex.quote(stamp)} ] || {{ echo {STALE_MARK}; exit 0; }}; {script}'


def build_probe_script(describe: Sequence[str] = ()) -> str:
    """One round trip that tells which camera tools, which netcat and whether setsid the Pi has, which board
    it is, and what the first of `describe` that is installed says about itself (`--version`, `--help`).

    `describe` names libcamera tools only (raspivid has no `--version`, and its options are fixed); the
    caller passes the tool it will run, or the preference order when the choice is automatic.
    """
    tools = _probed_tools()
    known = _VIDEO_TOOLS | _STILL_TOOLS
    asked = [name for name in describe if name in known and name not in _LEGACY_TOOLS]
    about = ""
    if asked:
        # stdin from /dev/null: a tool must never read the channel. --help and --version return before the
        # camera is opened (core/options.cpp), so this works while another program holds the camera.
        about = (
            f"for t in {' '.join(shlex.quote(name) for name in asked)}; do "
            'if command -v "$t" >/dev/null 2>&1; then '
            f'echo "{ABOUT_MARK} $t"; '
            f'echo {VERSION_BEGIN}; "$t" --version </dev/null 2>&1 | head -n 5; echo; echo {VERSION_END}; '
            f'echo {HELP_BEGIN}; "$t" --help </dev/null 2>&1 | head -n {HELP_MAX_LINES}; echo; echo {HELP_END}; '
            "break; fi; done; "
        )
    models = " ".join(DEVICE_TREE_MODELS)
    return (
        f'for t in {tools}; do p=$(command -v "$t" 2>/dev/null) && echo "piorch-tool $t $p"; done; '
        # Both netcat flavours print their help to stderr and exit non-zero; only the first lines matter.
        "if command -v nc >/dev/null 2>&1; then echo piorch-nc-begin; nc -h 2>&1 | head -n 3; "
        "echo piorch-nc-end; fi; "
        "command -v setsid >/dev/null 2>&1 && echo piorch-setsid; "
        # The named pipes the camera's timestamps travel through (build_pipeline_script).
        f"command -v mkfifo >/dev/null 2>&1 && command -v mktemp >/dev/null 2>&1 && echo {PIPES_MARK}; "
        + about
        # The model ends in a NUL byte; newlines are dropped too, so the name stays on its mark's line.
        # printf, not echo: dash's echo would expand backslashes in it.
        + f'for f in {models}; do if [ -r "$f" ]; then '
        f"printf '{BOARD_MARK} %s\\n' \"$(tr -d '\\000\\r\\n' <\"$f\")\"; break; fi; done; "
        # What this answer depends on, so that a later run may start from it (pi/probe_memory.py).
        f'echo "{STAMP_MARK} $({build_stamp_command()})"; '
        "echo piorch-probe-done"
    )


@dataclass(frozen=True)
class PiProbe:
    tools: dict[CameraTool, str] = field(default_factory=dict)
    nc_flavour: NetcatFlavour | None = None
    has_setsid: bool = False
    complete: bool = False
    # `snap`: rpicam-still / libcamera-still / raspistill, where found.
    still_tools: dict[StillTool, str] = field(default_factory=dict)
    # The device-tree model ("Raspberry Pi 5 Model B Rev 1.0"); None when the Pi has none readable.
    board: str | None = None
    # What the described libcamera tool said about itself; None when none was described or found.
    tool_facts: ToolFacts | None = None
    # The legacy raw tools found (raspividyuv, raspiyuv): name -> path.
    raw_tools: dict[str, str] = field(default_factory=dict)
    # mkfifo and mktemp are there: the camera's timestamps can be asked for.
    has_pipes: bool = False
    # The stamp of what this answer depends on (build_stamp_command); None when the Pi printed none.
    stamp: str | None = None


_VIDEO_TOOLS = {tool.value for tool in CameraTool if tool is not CameraTool.AUTO}
_STILL_TOOLS = {tool.value for tool in StillTool if tool is not StillTool.AUTO}
_LEGACY_TOOLS = {CameraTool.RASPIVID.value, StillTool.RASPISTILL.value}


def parse_probe_output(text: str) -> PiProbe:
    tools: dict[CameraTool, str] = {}
    still_tools: dict[StillTool, str] = {}
    raw_tools: dict[str, str] = {}
    nc_lines: list[str] = []
    blocks: dict[str, list[str]] = {VERSION_BEGIN: [], HELP_BEGIN: []}
    ends = {VERSION_BEGIN: VERSION_END, HELP_BEGIN: HELP_END}
    about: str | None = None
    board: str | None = None
    stamp: str | None = None
    block: str | None = None
    in_nc = seen_nc = has_setsid = has_pipes = complete = False
    for line in text.splitlines():
        if block is not None:
            if line.strip() == ends[block]:
                block = None
            else:
                blocks[block].append(line)
            continue
        if in_nc:
            if line.strip() == "piorch-nc-end":
                in_nc = False
            else:
                nc_lines.append(line)
            continue
        parts = line.split(" ", 2)
        if parts[0] == "piorch-tool" and len(parts) == 3:
            if parts[1] in _VIDEO_TOOLS:
                tools[CameraTool(parts[1])] = parts[2].strip()
            elif parts[1] in _STILL_TOOLS:
                still_tools[StillTool(parts[1])] = parts[2].strip()
            elif parts[1] in RAW_SIBLING.values():
                raw_tools[parts[1]] = parts[2].strip()
        elif parts[0] == ABOUT_MARK and len(parts) == 2 and parts[1].strip() in _VIDEO_TOOLS | _STILL_TOOLS:
            about = parts[1].strip()
        elif line.strip() in blocks:
            block = line.strip()
        elif parts[0] == BOARD_MARK:
            board = clean_board(line[len(BOARD_MARK):])
        elif parts[0] == STAMP_MARK and len(parts) > 1 and line[len(STAMP_MARK) + 1:].strip():
            stamp = line[len(STAMP_MARK) + 1:].strip()
        elif line.strip() == "piorch-nc-begin":
            in_nc = seen_nc = True
        elif line.strip() == "piorch-setsid":
            has_setsid = True
        elif line.strip() == PIPES_MARK:
            has_pipes = True
        elif line.strip() == "piorch-probe-done":
            complete = True
    flavour = parse_nc_flavour("\n".join(nc_lines)) if seen_nc else None
    facts = None if about is None else parse_tool_facts(about, "\n".join(blocks[VERSION_BEGIN]),
                                                        "\n".join(blocks[HELP_BEGIN]))
    return PiProbe(tools=tools, nc_flavour=flavour, has_setsid=has_setsid, complete=complete, still_tools=still_tools,
                   board=board, tool_facts=facts, raw_tools=raw_tools, has_pipes=has_pipes, stamp=stamp)


def build_pipeline_script(camera_argv: Sequence[str], nc_argv: Sequence[str], timestamps: bool = False,
                          video_pipe: bool = False, pts_batch_ms: int = 0) -> str:
    """`camera | nc` in its own session, reporting its process group id and both exit statuses.

    Lines on stdout: `piorch-pgid N` first, then `piorch-camera-exit S` and `piorch-nc-exit S`. The
    camera's stderr flows to the channel's stderr so piorch can explain a failure.

    The watchdog: the script's stdin is the SSH channel, which piorch holds open and never writes to. When
    the laptop side goes away (piorch killed, even with SIGKILL, or the connection dropped) sshd closes
    it, `read` sees end-of-file and the watchdog kills the whole process group, so the camera is freed
    by the Pi itself. Camera and nc get /dev/null as stdin: nothing else may consume the channel.
    Every construct here is POSIX sh (dash on Raspberry Pi OS), not bash.

    `timestamps`: the camera argv names the named pipe PTS_PIPE (pi/timestamps.py) for its frame times; each
    line it writes there comes out as `piorch-pts LINE` among the status lines, all of them before the
    `piorch-nc-exit` line. `video_pipe`: the camera writes its stream into the named pipe VIDEO_PIPE, which
    `cat` copies into nc (a Pi 5's libav takes --save-pts only for an output so named). The pipes live in a
    private folder, `${TMPDIR:-/tmp}/piorch-PGID.XXXXXX`, where the camera runs; it is removed at the end,
    by the watchdog, or by the kill script (build_kill_script), whichever ending comes.

    `pts_batch_ms`: the timestamp lines go out together, once the camera's clock has moved on this many
    ms (or PTS_BATCH_LINES lines wait, or a line is not a plain time), instead of one write, and so one SSH
    message, a frame; 0 sends each line as it comes. The batch is timed by the timestamps themselves (POSIX
    sh has no clock finer than a second), so a slow frame rate is never held back longer than one frame.
    """
    if video_pipe and not timestamps:
        raise ValueError("the video pipe exists for the timestamps' sake only")
    folder = ""
    cleanup = ""
    if timestamps:
        pipes = " ".join(shlex.quote(name) for name in ((PTS_PIPE, VIDEO_PIPE) if video_pipe else (PTS_PIPE,)))
        # Made before the watchdog starts, so that a failure here has no watchdog to stop. It reads as a
        # camera failure with its own words, not as a lost connection.
        folder = (
            f'd=$(mktemp -d "${{TMPDIR:-/tmp}}/{PTS_FOLDER_PREFIX}$$.XXXXXX") && cd "$d" && mkfifo {pipes} || '
            f'{{ echo "{PIPES_FAILED} ${{TMPDIR:-/tmp}}" >&2; '
            '[ -n "$d" ] && rm -rf "$d"; '
            f'echo "{CAMERA_EXIT_MARK} 1"; echo "{NC_EXIT_MARK} 1"; exit 1; }}; '
        )
        cleanup = 'rm -rf "$d"; '
    inner = (
        # Marks every process of the pipeline as piorch's: a later run may stop an orphan of this one.
        "PIORCH_RUN=1; export PIORCH_RUN; "
        f'echo "{PGID_MARK} $$"; '
        # The channel moves to fd 4 for the watchdog alone (POSIX lets sh give a background job /dev/null
        # as stdin, so it is passed explicitly). $$ in a subshell is still the session leader's pid, which
        # is the group id; `kill -TERM -PGID` without `--`, which dash's kill rejects.
        "exec 4<&0 </dev/null; "
        + folder
        # The watchdog is itself a member of the group it signals: without `trap '' TERM` its own
        # `kill -TERM` would end it there, and the KILL for a camera that ignores TERM would never come.
        # The trap is set only after end-of-file, so until then the `kill "$watchdog"` of a normal end still
        # stops it. While the watchdog lives the group id cannot be reused, so the late KILL reaches no one
        # else; it ends the watchdog too, which is why the pipes' folder goes before it.
        + f"( while read -r _ <&4; do :; done; trap '' TERM; kill -TERM -$$; sleep 3; {cleanup}kill -KILL -$$ ) "
        ">/dev/null 2>&1 & "
        "watchdog=$!; exec 4<&-; "
        # fd 3 keeps the channel's stdout for status lines while stdout itself is the pipe to nc.
        "exec 3>&1; "
    )
    camera = shlex.join(camera_argv)
    nc = shlex.join(nc_argv)
    if not timestamps:
        inner += (
            f'{{ {camera} 3>&-; echo "{CAMERA_EXIT_MARK} $?" >&3; }} '
            # nc's stdout would carry anything the laptop sends back: nothing is expected, so drop it.
            f"| {nc} >/dev/null 3>&-; "
            f'status=$?; kill "$watchdog" 2>/dev/null; echo "{NC_EXIT_MARK} $status"'
        )
    else:
        # The script itself opens the timestamps pipe read-write (fd 7) before anything writes to it and holds
        # it to the end: no open of it ever waits, and what is written into it is never lost, even when the
        # camera's side writes before the background reader has started (a pipe nobody holds drops its
        # bytes). The reader reads that fd, so it never sees end-of-file either: the camera's side ends it with
        # a line of its own once the camera has exited. That line starts with a newline in case the camera
        # died in the middle of one. printf, not echo: a line is passed on literally.
        if pts_batch_ms <= 0:
            reader = (
                f"exec 7<>{PTS_PIPE}; "
                f"while IFS= read -r t && [ \"$t\" != {PTS_END} ]; do printf '{PTS_MARK} %s\\n' \"$t\" >&3; done "
                f"<&7 >/dev/null 2>&1 & reader=$!; "
            )
        else:
            # The waiting lines are the reader's own positional parameters; printf repeats its format for
            # each. `m` is a line's whole ms, or empty when the line is not a plain time (the header, a
            # line cut short, a leading zero that $(( )) would read as octal, more digits than it holds, a
            # fraction that is not a few digits): such a line goes out at once with those before it, so a
            # batch stays a few KiB, one write. `l` is the time of the last batch. Stopped (the kill script's
            # TERM, the watchdog's), the reader sends what it holds first; `w` marks a send under way, which
            # the trap must not repeat.
            send = f"w=1; printf '{PTS_MARK} %s\\n' \"$@\" >&3; set --; w=; "
            reader = (
                f"exec 7<>{PTS_PIPE}; "
                f"{{ trap 'if [ -z \"$w\" ] && [ $# -gt 0 ]; then printf \"{PTS_MARK} %s\\n\" \"$@\" >&3; fi; "
                "exit 0' TERM; "
                f"l=-1000000; w=; set --; while IFS= read -r t && [ \"$t\" != {PTS_END} ]; do "
                'set -- "$@" "$t"; m=${t%%.*}; r=${t#"$m"}; '
                "case $m in ''|0?*|*[!0-9]*|????????????????*) m=;; esac; "
                "case $r in .*[!0-9]*|.??????????*) m=;; esac; "
                f'if [ -z "$m" ] || [ $((m - l)) -ge {int(pts_batch_ms)} ] || [ $# -ge {PTS_BATCH_LINES} ]; '
                f"then {send}l=${{m:-$l}}; fi; done; "
                f"if [ $# -gt 0 ]; then {send}fi; }} "
                f"<&7 >/dev/null 2>&1 & reader=$!; "
            )
        # Written with `1<>`: opening the pipe read-write never waits, even with the reader gone.
        end_times = f"printf '\\n{PTS_END}\\n' 1<>{PTS_PIPE}; "
        # The camera's side: the camera, then the end of its timestamps, then its exit status. On the video-pipe
        # path the camera itself does not hold fd 5 (its side does, until after it).
        closes = "3>&- 5>&- 7>&-" if video_pipe else "3>&- 7>&-"
        camera_part = f'{camera} {closes}; s=$?; {end_times}echo "{CAMERA_EXIT_MARK} $s" >&3;'
        if not video_pipe:
            inner += (
                reader
                + f"{{ {camera_part} }} | {nc} >/dev/null 3>&- 7>&-; status=$?; "
            )
        else:
            inner += (
                reader
                # fd 6 is cat's read end and fd 5 a write-only end that the camera's side holds until it has
                # ended: cat sees end-of-file only then, even when the camera never opened the pipe. Opened
                # read-write first, so that none of these opens waits for the other side.
                + f"exec 6<>{VIDEO_PIPE} 5>{VIDEO_PIPE} 6<{VIDEO_PIPE}; "
                + f"{{ {camera_part} }} 6<&- >/dev/null & camera=$!; exec 5>&-; "
                + f"cat <&6 6<&- 3>&- 7>&- | {nc} >/dev/null 3>&- 6<&- 7>&-; status=$?; exec 6<&-; "
                # nc ended first (the laptop went away): a camera still opening the pipe would wait for ever
                # for a reader. Opening it read-write for a moment lets that open through; its next write,
                # with no reader left, fails and ends the camera, as a broken pipe does on the other path.
                + f'while kill -0 "$camera" 2>/dev/null; do : <>{VIDEO_PIPE}; sleep 0.1; done; '
            )
        inner += (f'wait "$reader"; exec 7>&-; cd /; {cleanup}kill "$watchdog" 2>/dev/null; '
                  f'echo "{NC_EXIT_MARK} $status"')
    # setsid -w: a new session (so one `kill -- -PGID` reaches camera and nc, and nothing else) and wait
    # for it, so the channel stays open exactly as long as the pipeline runs. `exec` drops the login shell.
    return f"exec setsid -w sh -c {shlex.quote(inner)}"


def build_kill_script(pgid: int, grace_s: float = 3.0) -> str:
    """TERM the whole group, wait up to `grace_s`, then KILL; print whether the group is gone.

    `kill -0 -PGID` fails once no process of the group is left, which is how the camera is known free.
    """
    if pgid <= 1:
        raise ValueError(f"refusing to signal process group {pgid}")
    steps = max(1, int(grace_s / 0.1))
    group = f"-{pgid}"
    # Alive = a member that is not a zombie: a killed process waiting for its parent to reap it holds
    # nothing (not the camera). Without ps, `kill -0` (which counts zombies) is the fallback.
    alive = (
        f"alive() {{ if command -v ps >/dev/null 2>&1; then ps -eo pgid=,stat= | "
        f"awk -v g={pgid} '$1 == g && $2 !~ /^Z/ {{ f = 1 }} END {{ exit !f }}'; "
        f"else kill -0 {group} 2>/dev/null; fi; }}; "
    )
    # The named pipes' folder of a pipeline that ran with timestamps (build_pipeline_script): a killed shell
    # cannot remove it itself. Only a real folder of this user's, never a link someone else put there.
    folders = (
        f'for f in "${{TMPDIR:-/tmp}}"/{PTS_FOLDER_PREFIX}{pgid}.*; do '
        'if [ -d "$f" ] && [ ! -L "$f" ] && [ -O "$f" ]; then rm -rf "$f"; fi; done; '
    )
    # `kill -SIG -PGID` (no `--`): the form both bash's and dash's kill builtins accept.
    return (
        alive
        + f"kill -TERM {group} 2>/dev/null; i=0; "
        "while alive; do "
        f'i=$((i+1)); if [ "$i" -gt {steps} ]; then kill -KILL {group} 2>/dev/null; sleep 0.2; break; fi; '
        "sleep 0.1; done; "
        "if alive; then echo piorch-still-running; else " + folders + "echo piorch-gone; fi"
    )


_MARK_LINE = re.compile(r"^(piorch-[a-z-]+) (-?\d+)$")


def parse_status_line(line: str) -> tuple[str, int] | None:
    """`piorch-camera-exit 0` -> ("piorch-camera-exit", 0); anything else -> None."""
    match = _MARK_LINE.match(line.strip())
    return (match.group(1), int(match.group(2))) if match else None


def parse_pts_line(line: str) -> str | None:
    """`piorch-pts 33.370` -> "33.370": one line of the camera's timestamps file as the camera wrote it
    (its header and blank lines included); None for any other line."""
    if line.startswith(PTS_MARK + " "):
        return line[len(PTS_MARK) + 1:].strip()
    return None
