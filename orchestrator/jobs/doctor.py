"""`doctor`: every precondition of a recording, checked one by one, each with a one-line fix.

The laptop first (nc, receiver port, output folder, link address), then SSH (reachable, host key known,
login), then the Pi (camera tool and stack, camera detected, nc, setsid, memory, temperature, throttling,
clock, and the clock's offset as a recording's session manifest carries it). A failed SSH check skips the Pi
checks, saying so. Nothing is changed anywhere: doctor only looks.

`judge_*` functions are pure (facts in, `Check` out) and tested with tables; `run_doctor` gathers the facts.
"""

from __future__ import annotations

import enum
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.errors import ConnectError, HostKeyError, PiorchError
from orchestrator.events import minutes_of_space
from orchestrator.netcat import NetcatFlavour
from orchestrator.pi.camera import plan_camera
from orchestrator.pi.capture import camera_stack, choose_tool, describe_tools, probe_pi
from orchestrator.pi.clock import ClockOffset, measure_clock_offset
from orchestrator.pi.detect import CameraReport, build_camera_check_script, parse_camera_check
from orchestrator.pi.health import MEM_WARN_MB, SKEW_WARN_S, TEMP_HOT_C, TEMP_WARN_C, PiHealth, read_health
from orchestrator.pi.host import Host
from orchestrator.pi.hostkey import HostKeyState, check_host_key, host_key_fix
from orchestrator.pi.login import is_login_refused
from orchestrator.pi.scripts import PiProbe
from orchestrator.pi.stack import CameraStack, H264Encoder
from orchestrator.pi.target import login_name
from orchestrator.settings import Backend, CameraSettings, CameraTool, SshSettings


class Status(str, enum.Enum):
    PASS = "pass"  # noqa: S105 - a check status, not a password
    # Advice: a recording works, perhaps less well (no setup-link, a warm Pi). Fails only with --strict.
    WARN = "warn"
    FAIL = "fail"
    # Not checked, for a reason given in the detail (SSH failed, or nothing to check); not a problem itself.
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


CheckSink = Callable[[Check], None]

PI_CHECKS = ("camera-tool", "camera-stack", "camera-detected", "pi-nc", "pi-setsid", "pi-memory", "pi-temperature",
             "pi-throttling", "clock-skew", "clock-offset")
SSH_CHECKS = ("ssh-reachable", "host-key", "ssh-login")
# Less than a minute of recording left is a failure; under half an hour is worth a warning.
SPACE_FAIL_MIN = 1.0
SPACE_WARN_MIN = 30.0


@dataclass(frozen=True)
class DoctorSettings:
    # None: no Pi given, only the laptop is checked.
    ssh: SshSettings | None
    port: int
    out_dir: Path
    bitrate: int
    laptop_ip: str | None
    backend: Backend = Backend.BUILTIN
    camera_tool: CameraTool = CameraTool.AUTO


def doctor_passed(checks: Sequence[Check], strict: bool = False) -> bool:
    """Nothing failed; with `strict`, nothing warned either."""
    bad = (Status.FAIL, Status.WARN) if strict else (Status.FAIL,)
    return not any(check.status in bad for check in checks)


def summarize(checks: Sequence[Check]) -> str:
    """The last line of the report: how many checks failed and how many warned."""
    failed = sum(1 for check in checks if check.status is Status.FAIL)
    warned = sum(1 for check in checks if check.status is Status.WARN)
    advice = f"{warned} warning(s)" if warned else ""
    if failed:
        return f"{failed} check(s) failed" + (f", {advice}" if advice else "")
    return f"no check failed, {advice}" if advice else "all checks passed"


# -- the laptop ---------------------------------------------------------------------------------------------

def judge_laptop_nc(found: tuple[str, NetcatFlavour] | PiorchError, backend: Backend) -> Check:
    if isinstance(found, PiorchError):
        if backend is Backend.NC:
            return Check("laptop-nc", Status.FAIL, found.message, found.fix)
        return Check("laptop-nc", Status.SKIP, f"{found.message}; the builtin receiver does not need it")
    path, flavour = found
    return Check("laptop-nc", Status.PASS, f"{flavour.value} netcat at {path}")


@dataclass(frozen=True)
class OutDirFacts:
    out_dir: Path
    exists: bool
    # The folder itself when it exists, else its nearest existing parent (where it would be created).
    checked: Path
    writable: bool
    free_bytes: int | None


def judge_out_dir(facts: OutDirFacts, bitrate: int) -> Check:
    if not facts.writable:
        where = facts.out_dir if facts.exists else f"{facts.checked} (where {facts.out_dir} would be created)"
        return Check("output-folder", Status.FAIL, f"{where} is not writable", "pick another folder with --out")
    minutes = minutes_of_space(facts.free_bytes, bitrate)
    created = "" if facts.exists else " (will be created)"
    if minutes is None:
        return Check("output-folder", Status.WARN, f"{facts.out_dir}{created}: free space unknown")
    space = f"{facts.out_dir}{created}: {(facts.free_bytes or 0) / 1e9:.1f} GB free, about {minutes:,.0f} min " \
            f"at {bitrate / 1e6:g} Mbit/s"
    if minutes < SPACE_FAIL_MIN:
        return Check("output-folder", Status.FAIL, space, "free some space or record to another disk with --out")
    if minutes < SPACE_WARN_MIN:
        return Check("output-folder", Status.WARN, space, "free some space or record to another disk with --out")
    return Check("output-folder", Status.PASS, space)


def judge_link_address(laptop_ip: str | None, addresses: Mapping[str, tuple[str, bool]] | None) -> Check:
    """`addresses`: every local address -> (interface, is up); None when they cannot be listed."""
    if not laptop_ip:
        return Check("link-address", Status.WARN, "laptop_ip is not set: the Pi sends to this end of the SSH link",
                     "run `piorch setup-link` (or set laptop_ip in the config)")
    if addresses is None:
        return Check("link-address", Status.WARN, f"cannot list this laptop's addresses to find {laptop_ip}")
    if laptop_ip not in addresses:
        return Check("link-address", Status.FAIL, f"{laptop_ip} (laptop_ip) is not an address of this laptop",
                     "plug in the cable and run `piorch setup-link`, or fix laptop_ip in the config")
    iface, up = addresses[laptop_ip]
    if not up:
        return Check("link-address", Status.WARN, f"{laptop_ip} is on {iface}, which is down",
                     f"check the cable on {iface}; `piorch setup-link --check` tests the link")
    return Check("link-address", Status.PASS, f"{laptop_ip} on {iface}")


def _laptop_nc() -> tuple[str, NetcatFlavour] | PiorchError:
    from orchestrator.stream.receiver import detect_local_nc

    try:
        return detect_local_nc()
    except PiorchError as exc:
        return exc


def inspect_out_dir(out_dir: Path) -> OutDirFacts:
    checked = out_dir
    while not checked.exists() and checked != checked.parent:
        checked = checked.parent
    exists = checked == out_dir
    if exists and checked.is_dir():
        # os.access says yes to root on a read-only mount: writing a file is the real test.
        try:
            with tempfile.NamedTemporaryFile(dir=checked, prefix=".piorch-doctor-"):
                writable = True
        except OSError:
            writable = False
    else:
        writable = checked.is_dir() and os.access(checked, os.W_OK | os.X_OK)
    try:
        free: int | None = shutil.disk_usage(checked).free
    except OSError:
        free = None
    return OutDirFacts(out_dir, exists, checked, writable, free)


def local_addresses() -> dict[str, tuple[str, bool]] | None:
    try:
        import psutil  # type: ignore[import-untyped]  # no stubs; two calls used
    except ImportError:
        return None
    stats = psutil.net_if_stats()
    found: dict[str, tuple[str, bool]] = {}
    for iface, addresses in psutil.net_if_addrs().items():
        up = bool(stats[iface].isup) if iface in stats else False
        for address in addresses:
            # IPv6 link-local addresses carry a "%iface" scope suffix.
            found.setdefault(str(address.address).split("%")[0], (iface, up))
    return found


def _port_check(port: int, bind: str | None) -> Check:
    from orchestrator.stream.receiver import bind_listener

    if port == 0:
        return Check("receiver-port", Status.PASS, "port 0: any free port is taken at record time")
    try:
        bind_listener(bind, port).close()
    except PiorchError as exc:
        return Check("receiver-port", Status.FAIL, exc.message, exc.fix)
    return Check("receiver-port", Status.PASS, f"port {port} is free on {bind or 'every address'}")


def laptop_checks(settings: DoctorSettings) -> list[Check]:
    addresses = local_addresses() if settings.laptop_ip else None
    link = judge_link_address(settings.laptop_ip, addresses)
    # Bind where record will: laptop_ip when it is here (otherwise the link check already failed).
    bind = settings.laptop_ip if link.status is Status.PASS else None
    return [
        judge_laptop_nc(_laptop_nc(), settings.backend),
        _port_check(settings.port, bind),
        judge_out_dir(inspect_out_dir(settings.out_dir), settings.bitrate),
        link,
    ]


# -- the Pi -------------------------------------------------------------------------------------------------

def judge_camera_tool(probe: PiProbe, wanted: CameraTool) -> tuple[Check, CameraTool | None]:
    try:
        tool = choose_tool(probe, wanted)
    except PiorchError as exc:
        return Check("camera-tool", Status.FAIL, exc.message, exc.fix), None
    stack = "legacy camera stack" if tool.is_legacy else "libcamera stack"
    return Check("camera-tool", Status.PASS, f"{tool.value} at {probe.tools[tool]} ({stack})"), tool


_ENCODER_WORDS = {
    H264Encoder.HARDWARE: "H.264 in hardware (VideoCore)",
    H264Encoder.SOFTWARE: "H.264 in software (libx264 through libav)",
    H264Encoder.NONE: "no H.264 encoder",
    H264Encoder.UNKNOWN: "H.264 hardware or software unknown (board not recognised)",
}


def judge_camera_stack(tool: CameraTool | None, stack: CameraStack | None) -> Check:
    """Board, camera stack and tool version, and whether this combination can record H.264 (the same plan
    `record` makes: a Pi 5 with rpicam-apps-lite fails here with its fix, a build without --low-latency warns)."""
    name = "camera-stack"
    if tool is None or stack is None:
        return Check(name, Status.SKIP, "skipped: no camera tool")
    version = f" {stack.tool_version}" if stack.tool_version else " (no version)" if not tool.is_legacy else ""
    software = stack.encoder is H264Encoder.SOFTWARE and stack.has_option("low-latency")
    detail = (f"{stack.board or 'board unknown'}; {'legacy' if tool.is_legacy else 'libcamera'} stack, "
              f"{tool.value}{version}; {_ENCODER_WORDS[stack.encoder]}{', no B-frames (--low-latency)' * software}")
    try:
        plan = plan_camera(CameraSettings(), tool, stack)
    except PiorchError as exc:
        return Check(name, Status.FAIL, f"{detail}: {exc.message}", exc.fix)
    if plan.warnings:
        return Check(name, Status.WARN, f"{detail}: {plan.warnings[0]}")
    return Check(name, Status.PASS, detail)


CABLE_FIX = "check the ribbon cable at both ends (contacts the right way round), then reboot"


def judge_camera_detected(tool: CameraTool | None, report: CameraReport) -> Check:
    name = "camera-detected"
    if tool is None:
        return Check(name, Status.SKIP, "skipped: no camera tool")
    if not tool.is_legacy:
        if report.cameras:
            return Check(name, Status.PASS, f"{', '.join(report.cameras)} ({report.list_tool} --list-cameras)")
        if report.cameras is not None:
            return Check(name, Status.FAIL, f"no camera detected ({report.list_tool} --list-cameras lists none)",
                         f"{CABLE_FIX}; keep camera_auto_detect=1 in config.txt, or add dtoverlay=<sensor> for a "
                         "module it does not detect")
        if report.libcamera_interfaces:
            return Check(name, Status.PASS, f"vcgencmd get_camera: {report.get_camera_text}")
        return Check(name, Status.WARN, "cannot tell: no rpicam-hello or libcamera-hello on the Pi to list cameras",
                     "install rpicam-apps there (sudo apt install rpicam-apps)")
    if report.supported is None:
        said = f" (vcgencmd said {report.get_camera_text!r})" if report.get_camera_text else " (no vcgencmd)"
        return Check(name, Status.WARN, f"cannot tell whether the legacy camera is detected{said}",
                     "run `vcgencmd get_camera` on the Pi as a user in the video group")
    if not report.supported:
        return Check(name, Status.FAIL, "the legacy camera interface is not enabled (vcgencmd get_camera: supported=0)",
                     "enable it: sudo raspi-config nonint do_legacy 0 (Bullseye) or do_camera 0 (Buster), then reboot")
    if not report.detected:
        return Check(name, Status.FAIL, "no camera detected (vcgencmd get_camera: detected=0)", CABLE_FIX)
    return Check(name, Status.PASS, f"vcgencmd get_camera: {report.get_camera_text}")


def judge_pi_nc(probe: PiProbe) -> Check:
    if probe.nc_flavour is None:
        return Check("pi-nc", Status.FAIL, "nc is not installed on the Pi",
                     "run `piorch bootstrap`, or on the Pi: sudo apt install netcat-openbsd")
    if probe.nc_flavour is NetcatFlavour.UNKNOWN:
        return Check("pi-nc", Status.FAIL, "the Pi's nc is neither OpenBSD nor traditional netcat",
                     "on the Pi: sudo apt install netcat-openbsd")
    return Check("pi-nc", Status.PASS, f"{probe.nc_flavour.value} netcat")


def judge_setsid(probe: PiProbe) -> Check:
    if not probe.has_setsid:
        return Check("pi-setsid", Status.FAIL, "setsid is missing on the Pi (piorch needs it to stop the camera)",
                     "on the Pi: sudo apt install util-linux")
    return Check("pi-setsid", Status.PASS, "present")


def judge_memory(health: PiHealth) -> Check:
    if health.mem_available_mb is None:
        return Check("pi-memory", Status.WARN, "could not read MemAvailable from /proc/meminfo")
    detail = f"{health.mem_available_mb} MB available"
    if health.mem_available_mb < MEM_WARN_MB:
        return Check("pi-memory", Status.WARN, detail, "stop other programs on the Pi (a desktop session uses a lot)")
    return Check("pi-memory", Status.PASS, detail)


def judge_temperature(health: PiHealth) -> Check:
    if health.temp_c is None:
        return Check("pi-temperature", Status.WARN, "could not read the SoC temperature (no vcgencmd, no thermal zone)")
    detail = f"{health.temp_c:.1f} °C ({health.temp_source})"
    if health.temp_c >= TEMP_HOT_C:
        return Check("pi-temperature", Status.FAIL, f"{detail}: the Pi throttles to cool off",
                     "give it air, a heatsink or a fan")
    if health.temp_c >= TEMP_WARN_C:
        return Check("pi-temperature", Status.WARN, f"{detail}: close to {TEMP_HOT_C:.0f} °C, where it throttles",
                     "give it air, a heatsink or a fan")
    return Check("pi-temperature", Status.PASS, detail)


def _throttle_fix(words: Sequence[str]) -> str:
    if "under-voltage" in words:
        return "use the official power supply (5.1 V, 3 A for a Pi 4, 5 A for a Pi 5) and a short cable"
    return "give the Pi air, a heatsink or a fan"


def judge_throttling(health: PiHealth) -> Check:
    name = "pi-throttling"
    if health.throttled_raw is None:
        if health.throttled_reply is None:
            return Check(name, Status.WARN, "no vcgencmd on the Pi: throttling unknown",
                         "install it there (libraspberrypi-bin, raspi-utils on newer systems)")
        return Check(name, Status.WARN, f"vcgencmd get_throttled said {health.throttled_reply!r}",
                     "add the user to the video group on the Pi: sudo usermod -aG video $USER")
    code = f"0x{health.throttled_raw:x}"
    if health.throttled_now:
        return Check(name, Status.FAIL, f"{', '.join(health.throttled_now)} now ({code})",
                     _throttle_fix(health.throttled_now))
    if health.throttled_since_boot:
        return Check(name, Status.WARN, f"{', '.join(health.throttled_since_boot)} since boot ({code})",
                     _throttle_fix(health.throttled_since_boot))
    return Check(name, Status.PASS, f"none ({code})")


def judge_clock(health: PiHealth) -> Check:
    skew = health.clock_skew_s
    if skew is None:
        return Check("clock-skew", Status.WARN, "could not read the Pi's clock")
    detail = f"the Pi is {abs(skew):.1f} s {'ahead of' if skew >= 0 else 'behind'} this laptop"
    if abs(skew) > SKEW_WARN_S:
        # A Pi on a direct cable has no NTP server and (before the Pi 5) no battery clock.
        return Check("clock-skew", Status.WARN, detail,
                     "set it from the laptop: ssh PI sudo date -s @$(date +%s), or give the Pi NTP")
    return Check("clock-skew", Status.PASS, detail)


def judge_clock_offset(offset: ClockOffset | None) -> Check:
    """The offset a recording writes into its session manifest (clock_offset_s), to the millisecond."""
    name = "clock-offset"
    if offset is None:
        return Check(name, Status.WARN, "could not measure the Pi's clock offset: its `date` prints no sub-seconds",
                     "install coreutils on the Pi (its date prints %N); until then clips of several Pis line up "
                     "by arrival only")
    sign = "+" if offset.offset_s >= 0 else "-"
    return Check(name, Status.PASS, f"Pi clock minus laptop clock {sign}{abs(offset.offset_s):.3f} s, "
                                    f"within ±{offset.uncertainty_s:.3f} s (tightest of {offset.samples} round trips)")


def pi_checks(host: Host, camera_tool: CameraTool, emit: CheckSink) -> None:
    """Four round trips, then the clock's: the tool probe, the camera listing, the health reading, and the
    Pi's `date` a few times."""
    remaining = list(PI_CHECKS)

    def out(check: Check) -> None:
        remaining.remove(check.name)
        emit(check)

    try:
        probe = probe_pi(host, describe_tools(camera_tool))
        check, tool = judge_camera_tool(probe, camera_tool)
        out(check)
        out(judge_camera_stack(tool, camera_stack(probe, tool) if tool else None))
        camera = parse_camera_check(host.run(build_camera_check_script(), timeout=30).stdout)
        out(judge_camera_detected(tool, camera))
        out(judge_pi_nc(probe))
        out(judge_setsid(probe))
        health = read_health(host, timeout=10)
        for judge in (judge_memory, judge_temperature, judge_throttling, judge_clock):
            out(judge(health))
        out(judge_clock_offset(measure_clock_offset(host)))
    except PiorchError as exc:
        # The link or the Pi failed mid-way: the check at hand fails, the rest cannot be known.
        out(Check(remaining[0], Status.FAIL, exc.message, exc.fix))
        for name in list(remaining):
            out(Check(name, Status.SKIP, "skipped: the previous check failed"))


# -- SSH ------------------------------------------------------------------------------------------------------

def ssh_checks(settings: SshSettings, emit: CheckSink) -> Host | None:
    """Reachable, host key known, login works; the logged-in Host, or None after a failure (then every
    later SSH check has been emitted as skipped)."""
    from orchestrator.pi.ssh import open_host
    from orchestrator.pi.target import resolve_target

    done: list[str] = []

    def out(check: Check) -> None:
        done.append(check.name)
        emit(check)

    def fail_rest(check: Check) -> None:
        out(check)
        for name in SSH_CHECKS:
            if name not in done:
                out(Check(name, Status.SKIP, f"skipped: {check.name} failed"))

    try:
        target = resolve_target(settings.target, settings.ssh_config)
    except PiorchError as exc:
        fail_rest(Check("ssh-reachable", Status.FAIL, exc.message, exc.fix))
        return None
    if not (target.proxy_jump or target.proxy_command):
        # Direct: the host key can be read (and judged) before logging in.
        try:
            key_check, _ = check_host_key(target, settings.connect_timeout)
        except HostKeyError as exc:  # a key marked @revoked
            out(Check("ssh-reachable", Status.PASS, f"SSH server at {target.hostname}:{target.port}"))
            fail_rest(Check("host-key", Status.FAIL, exc.message, exc.fix))
            return None
        except PiorchError as exc:
            fail_rest(Check("ssh-reachable", Status.FAIL, exc.message, exc.fix))
            return None
        out(Check("ssh-reachable", Status.PASS, f"SSH server at {target.hostname}:{target.port}"))
        key_text = f"{key_check.key_type} {key_check.fingerprint}"
        if key_check.state is not HostKeyState.KNOWN:
            fail_rest(Check("host-key", Status.FAIL, f"{key_check.state.value} host key {key_text}",
                            host_key_fix(target, key_check)))
            return None
        out(Check("host-key", Status.PASS, f"{key_text} in {key_check.known_hosts}"))
    try:
        host = open_host(target, replace(settings, accept_new_host_key=False))
    except HostKeyError as exc:
        if "ssh-reachable" not in done:
            out(Check("ssh-reachable", Status.PASS, f"through {target.proxy_jump or 'ProxyCommand'}"))
        fail_rest(Check("host-key", Status.FAIL, exc.message, exc.fix))
        return None
    except ConnectError as exc:
        refused = is_login_refused(exc)
        if "ssh-reachable" not in done:
            if not refused:
                fail_rest(Check("ssh-reachable", Status.FAIL, exc.message, exc.fix))
                return None
            out(Check("ssh-reachable", Status.PASS, f"through {target.proxy_jump or 'ProxyCommand'}"))
            out(Check("host-key", Status.PASS, "known (checked by the login)"))
        if refused:
            no_key = "No authentication methods" in exc.message
            fail_rest(Check("ssh-login", Status.FAIL,
                            f"the Pi at {target.hostname}:{target.port} refused the login as {login_name(target)}"
                            + (" (this laptop has no SSH key to offer)" if no_key else ""),
                            f"install your key there: `piorch bootstrap --pi {target.alias}`"))
        else:
            fail_rest(Check("ssh-login", Status.FAIL, exc.message, exc.fix))
        return None
    if "ssh-reachable" not in done:
        out(Check("ssh-reachable", Status.PASS, f"through {target.proxy_jump or 'ProxyCommand'}"))
        out(Check("host-key", Status.PASS, "known (checked by the login)"))
    out(Check("ssh-login", Status.PASS, f"logged in as {login_name(target)}"))
    return host


def run_doctor(settings: DoctorSettings, on_check: CheckSink) -> list[Check]:
    """Run every check in order, handing each to `on_check` as soon as it is known; never raises for a
    failed check (that is what the result says), only for bad settings."""
    checks: list[Check] = []

    def emit(check: Check) -> None:
        checks.append(check)
        on_check(check)

    for check in laptop_checks(settings):
        emit(check)
    if settings.ssh is None:
        emit(Check("pi", Status.SKIP, "no Pi given: only this laptop was checked",
                   "pass --pi HOST or set pi in the config"))
        return checks
    host = ssh_checks(settings.ssh, emit)
    if host is None:
        for name in PI_CHECKS:
            emit(Check(name, Status.SKIP, "skipped: SSH failed"))
        return checks
    try:
        pi_checks(host, settings.camera_tool, emit)
    finally:
        host.close()
    return checks
