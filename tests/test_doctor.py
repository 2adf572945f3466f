"""`doctor`: the pure judges (tables), the camera listing parser, then the real thing against stand-in Pis
behind a real sshd: a healthy one and broken ones (no nc, no camera, throttled), and every SSH failure."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from orchestrator.errors import ReceiverError
from orchestrator.jobs.doctor import (
    PI_CHECKS,
    Check,
    DoctorSettings,
    OutDirFacts,
    Status,
    doctor_passed,
    inspect_out_dir,
    judge_camera_detected,
    judge_camera_tool,
    judge_clock,
    judge_laptop_nc,
    judge_link_address,
    judge_memory,
    judge_out_dir,
    judge_pi_nc,
    judge_setsid,
    judge_temperature,
    judge_throttling,
    run_doctor,
    summarize,
)
from orchestrator.netcat import NetcatFlavour
from orchestrator.pi.detect import CameraReport, build_camera_check_script, parse_camera_check
from orchestrator.pi.health import PiHealth
from orchestrator.pi.host import LocalHost
from orchestrator.pi.login import create_ed25519_key
from orchestrator.pi.scripts import PiProbe
from orchestrator.settings import Backend, CameraTool, SshSettings
from orchestrator.sim.stand_in import install_stand_ins
from tests.e2e_helpers import piorch_env, run_piorch
from tests.sshd_server import SshServerFactory, SshServerInfo
from tests.stand_in_pi import NETCAT_NAMES, install_rpicam_hello, install_vcgencmd, restrict_remote_path
from tests.system_tools import require_tool

ALL_CHECKS = ("laptop-nc", "receiver-port", "output-folder", "link-address", "ssh-reachable", "host-key",
              "ssh-login", *PI_CHECKS)


# -- pure judges ---------------------------------------------------------------------------------------------

def test_laptop_nc() -> None:
    missing = ReceiverError("nc is not installed on this laptop", "install it")
    assert judge_laptop_nc(("/usr/bin/nc", NetcatFlavour.OPENBSD), Backend.NC) == \
        Check("laptop-nc", Status.PASS, "openbsd netcat at /usr/bin/nc")
    assert judge_laptop_nc(missing, Backend.NC) == Check("laptop-nc", Status.FAIL, missing.message, "install it")
    # The builtin receiver does not use nc: its absence is no problem.
    assert judge_laptop_nc(missing, Backend.BUILTIN).status is Status.SKIP


GB = 10**9


@pytest.mark.parametrize(
    ("facts", "status", "detail"),
    [
        (OutDirFacts(Path("/rec"), True, Path("/rec"), True, 100 * GB), Status.PASS,
         "/rec: 100.0 GB free, about 833 min at 16 Mbit/s"),
        (OutDirFacts(Path("/rec/new"), False, Path("/rec"), True, 100 * GB), Status.PASS,
         "/rec/new (will be created): 100.0 GB free, about 833 min at 16 Mbit/s"),
        # 16 Mbit/s is 120 MB a minute.
        (OutDirFacts(Path("/rec"), True, Path("/rec"), True, 1_200_000_000), Status.WARN, "about 10 min"),
        (OutDirFacts(Path("/rec"), True, Path("/rec"), True, 60_000_000), Status.FAIL, "about 0 min"),
        (OutDirFacts(Path("/rec"), True, Path("/rec"), False, 100 * GB), Status.FAIL, "/rec is not writable"),
        (OutDirFacts(Path("/ro/x"), False, Path("/ro"), False, 100 * GB), Status.FAIL,
         "/ro (where /ro/x would be created) is not writable"),
        (OutDirFacts(Path("/rec"), True, Path("/rec"), True, None), Status.WARN, "free space unknown"),
    ],
)
def test_out_dir(facts: OutDirFacts, status: Status, detail: str) -> None:
    check = judge_out_dir(facts, 16_000_000)
    assert check.status is status and detail in check.detail


def test_inspect_out_dir_writes_nothing_and_finds_where_it_would_be_created(tmp_path: Path) -> None:
    facts = inspect_out_dir(tmp_path / "a" / "b")
    assert facts == OutDirFacts(tmp_path / "a" / "b", False, tmp_path, True, facts.free_bytes)
    assert facts.free_bytes and facts.free_bytes > 0
    assert list(tmp_path.iterdir()) == []  # the probe file is gone, no folder was created
    assert inspect_out_dir(tmp_path).exists


ADDRESSES = {"192.168.50.1": ("enx00e04c", True), "10.0.0.5": ("wlan0", True), "192.168.60.1": ("eth1", False)}


@pytest.mark.parametrize(
    ("laptop_ip", "addresses", "status", "detail"),
    [
        ("192.168.50.1", ADDRESSES, Status.PASS, "192.168.50.1 on enx00e04c"),
        ("192.168.60.1", ADDRESSES, Status.WARN, "192.168.60.1 is on eth1, which is down"),
        ("192.168.50.9", ADDRESSES, Status.FAIL, "192.168.50.9 (laptop_ip) is not an address of this laptop"),
        (None, ADDRESSES, Status.WARN, "laptop_ip is not set"),
        ("192.168.50.1", None, Status.WARN, "cannot list"),
    ],
)
def test_link_address(laptop_ip: str | None, addresses: dict[str, tuple[str, bool]] | None, status: Status,
                      detail: str) -> None:
    check = judge_link_address(laptop_ip, addresses)
    assert check.status is status and detail in check.detail


LISTING = """[0:02:13.296384397] [1794]  INFO Camera camera_manager.cpp:284 libcamera v0.1.0+118-563cd78e
Available cameras
-----------------
0 : imx708_wide [4608x2592 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx708@1a)
    Modes: 'SRGGB10_CSI2P' : 1536x864 [120.13 fps - (768, 432)/3072x1728 crop]
                             2304x1296 [56.03 fps - (0, 0)/4608x2592 crop]
1 : ov5647 [2592x1944 10-bit GBRG] (/base/soc/i2c0mux/i2c@0/ov5647@36)
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"piorch-list-begin rpicam-hello\n{LISTING}piorch-list-end\npiorch-get-camera supported=0 detected=0, "
         "libcamera interfaces=1\npiorch-camera-done\n",
         CameraReport("rpicam-hello", ("imx708_wide", "ov5647"), False, False, True,
                      "supported=0 detected=0, libcamera interfaces=1", True)),
        ("piorch-list-begin libcamera-hello\nNo cameras available!\npiorch-list-end\npiorch-camera-done\n",
         CameraReport("libcamera-hello", (), complete=True)),
        ("piorch-list-begin rpicam-hello\nERROR: *** no cameras available ***\npiorch-list-end\npiorch-camera-done",
         CameraReport("rpicam-hello", (), complete=True)),
        # A legacy Pi: no hello tool, the firmware's answer only.
        ("piorch-get-camera supported=1 detected=1\npiorch-camera-done\n",
         CameraReport(None, None, True, True, None, "supported=1 detected=1", True)),
        ("piorch-get-camera VCHI initialization failed\npiorch-camera-done\n",
         CameraReport(get_camera_text="VCHI initialization failed", complete=True)),
        ("", CameraReport()),
    ],
)
def test_parse_camera_check(text: str, expected: CameraReport) -> None:
    assert parse_camera_check(text) == expected


def test_the_camera_script_runs_in_a_real_shell(tmp_path: Path) -> None:
    install_rpicam_hello(tmp_path, ["imx219"])
    install_vcgencmd(tmp_path, camera="supported=1 detected=1")
    result = LocalHost(path_prepend=tmp_path).run(build_camera_check_script(), timeout=10)
    assert parse_camera_check(result.stdout) == CameraReport("rpicam-hello", ("imx219",), True, True, None,
                                                             "supported=1 detected=1", True)


LIBCAMERA = CameraTool.RPICAM_VID
LEGACY = CameraTool.RASPIVID


@pytest.mark.parametrize(
    ("tool", "report", "status", "detail"),
    [
        (LIBCAMERA, CameraReport("rpicam-hello", ("imx219",)), Status.PASS, "imx219 (rpicam-hello --list-cameras)"),
        (LIBCAMERA, CameraReport("rpicam-hello", ()), Status.FAIL, "no camera detected"),
        (LIBCAMERA, CameraReport(libcamera_interfaces=True, get_camera_text="supported=0 detected=0, "
                                 "libcamera interfaces=1"), Status.PASS, "libcamera interfaces=1"),
        (LIBCAMERA, CameraReport(), Status.WARN, "cannot tell"),
        (LEGACY, CameraReport(supported=True, detected=True, get_camera_text="supported=1 detected=1"), Status.PASS,
         "supported=1 detected=1"),
        (LEGACY, CameraReport(supported=False, detected=False), Status.FAIL, "not enabled"),
        (LEGACY, CameraReport(supported=True, detected=False), Status.FAIL, "no camera detected"),
        (LEGACY, CameraReport(get_camera_text="VCHI initialization failed"), Status.WARN, "VCHI"),
        (None, CameraReport(), Status.SKIP, "no camera tool"),
    ],
)
def test_camera_detected(tool: CameraTool | None, report: CameraReport, status: Status, detail: str) -> None:
    check = judge_camera_detected(tool, report)
    assert check.status is status and detail in check.detail
    assert check.status is Status.PASS or check.fix or check.status is Status.SKIP


def test_camera_tool_and_netcat_and_setsid() -> None:
    probe = PiProbe(tools={CameraTool.RASPIVID: "/usr/bin/raspivid"}, nc_flavour=NetcatFlavour.TRADITIONAL,
                    has_setsid=True, complete=True)
    check, tool = judge_camera_tool(probe, CameraTool.AUTO)
    assert (check.status, tool, check.detail) == (Status.PASS, LEGACY, "raspivid at /usr/bin/raspivid (legacy "
                                                                         "camera stack)")
    check, tool = judge_camera_tool(probe, CameraTool.RPICAM_VID)
    assert (check.status, tool) == (Status.FAIL, None) and "rpicam-apps" in check.fix
    check, tool = judge_camera_tool(PiProbe(complete=True), CameraTool.AUTO)
    assert check.status is Status.FAIL and check.detail.startswith("no camera tool")
    assert judge_pi_nc(probe) == Check("pi-nc", Status.PASS, "traditional netcat")
    assert judge_pi_nc(PiProbe()).status is Status.FAIL
    assert "neither" in judge_pi_nc(PiProbe(nc_flavour=NetcatFlavour.UNKNOWN)).detail
    assert judge_setsid(probe).status is Status.PASS
    assert "util-linux" in judge_setsid(PiProbe()).fix


@pytest.mark.parametrize(
    ("judge", "health", "status", "detail"),
    [
        (judge_memory, PiHealth(mem_available_mb=700), Status.PASS, "700 MB available"),
        (judge_memory, PiHealth(mem_available_mb=60), Status.WARN, "60 MB available"),
        (judge_memory, PiHealth(), Status.WARN, "could not read"),
        (judge_temperature, PiHealth(temp_c=48.3, temp_source="vcgencmd"), Status.PASS, "48.3 °C (vcgencmd)"),
        (judge_temperature, PiHealth(temp_c=77.0, temp_source="thermal_zone0"), Status.WARN, "close to 80 °C"),
        (judge_temperature, PiHealth(temp_c=85.0, temp_source="vcgencmd"), Status.FAIL, "throttles"),
        (judge_temperature, PiHealth(), Status.WARN, "could not read"),
        (judge_throttling, PiHealth(throttled_raw=0), Status.PASS, "none (0x0)"),
        (judge_throttling, PiHealth(throttled_raw=0x50005, throttled_now=("under-voltage", "throttled"),
                                    throttled_since_boot=("under-voltage", "throttled")),
         Status.FAIL, "under-voltage, throttled now (0x50005)"),
        (judge_throttling, PiHealth(throttled_raw=0x20000, throttled_since_boot=("frequency capped",)),
         Status.WARN, "frequency capped since boot (0x20000)"),
        (judge_throttling, PiHealth(), Status.WARN, "no vcgencmd"),
        (judge_throttling, PiHealth(throttled_reply="VCHI initialization failed"), Status.WARN, "VCHI"),
        (judge_clock, PiHealth(pi_time=100.2, laptop_time=100.0), Status.PASS, "0.2 s ahead of"),
        (judge_clock, PiHealth(pi_time=100.0, laptop_time=3700.0), Status.WARN, "3600.0 s behind"),
        (judge_clock, PiHealth(), Status.WARN, "could not read"),
    ],
)
def test_health_judges(judge: object, health: PiHealth, status: Status, detail: str) -> None:
    assert callable(judge)
    check = judge(health)
    assert isinstance(check, Check) and check.status is status and detail in check.detail


def test_power_and_heat_get_different_fixes() -> None:
    power = judge_throttling(PiHealth(throttled_raw=1, throttled_now=("under-voltage",)))
    heat = judge_throttling(PiHealth(throttled_raw=8, throttled_now=("soft temperature limit",)))
    assert "power supply" in power.fix and "heatsink" in heat.fix


def test_a_warning_is_advice_unless_strict() -> None:
    passed, skipped = Check("a", Status.PASS, ""), Check("b", Status.SKIP, "")
    warned, failed = Check("c", Status.WARN, ""), Check("d", Status.FAIL, "")
    assert doctor_passed([passed, skipped]) and doctor_passed([passed, skipped], strict=True)
    assert doctor_passed([passed, warned]) and not doctor_passed([passed, warned], strict=True)
    assert not doctor_passed([passed, failed]) and not doctor_passed([failed], strict=True)
    assert summarize([passed, skipped]) == "all checks passed"
    assert summarize([passed, warned, warned]) == "no check failed, 2 warning(s)"
    assert summarize([failed, warned]) == "1 check(s) failed, 1 warning(s)"
    assert summarize([failed, passed]) == "1 check(s) failed"


# -- against stand-in Pis behind a real sshd ----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stand_in_pi(factory: SshServerFactory, *, cameras: tuple[str, ...] = ("imx219",),
                throttled: str = "throttled=0x0", nc: bool = True) -> SshServerInfo:
    if nc:
        require_tool("nc")  # the Pi's nc is this machine's
    info = factory().info
    install_stand_ins(info.bin_dir, ("rpicam-vid",))
    install_rpicam_hello(info.bin_dir, cameras)
    install_vcgencmd(info.bin_dir, throttled=throttled)
    if not nc:
        restrict_remote_path(info, NETCAT_NAMES)
    return info


def doctor_env(tmp_path: Path, info: SshServerInfo) -> dict[str, str]:
    env = piorch_env(tmp_path, info.ssh_config)
    env.update(PIORCH_PORT=str(free_port()), PIORCH_OUT=str(tmp_path / "recv"), PIORCH_LAPTOP_IP="127.0.0.1")
    return env


def statuses(stdout: str) -> dict[str, str]:
    report = json.loads(stdout)
    return {check["name"]: check["status"] for check in report["checks"]}


def expect_all_pass(found: dict[str, str]) -> None:
    assert tuple(found) == ALL_CHECKS
    # The laptop running the tests may have no nc: the builtin receiver does not need it.
    assert found.pop("laptop-nc") in ("pass", "skip")
    assert set(found.values()) == {"pass"}, found


@pytest.mark.e2e
def test_a_healthy_pi_passes_everything(tmp_path: Path, sshd_factory: SshServerFactory) -> None:
    info = stand_in_pi(sshd_factory)
    result = run_piorch(doctor_env(tmp_path, info), "doctor", "--pi", info.alias, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    expect_all_pass(statuses(result.stdout))
    details = {check["name"]: check["detail"] for check in report["checks"]}
    assert details["camera-detected"] == "imx219 (rpicam-hello --list-cameras)"
    assert details["camera-tool"].startswith(f"rpicam-vid at {info.bin_dir}/rpicam-vid (libcamera stack)")
    assert details["pi-temperature"] == "48.3 °C (vcgencmd)" and details["pi-throttling"] == "none (0x0)"
    assert details["pi-nc"] == "openbsd netcat" or details["pi-nc"] == "traditional netcat"
    assert details["link-address"] == "127.0.0.1 on lo"
    assert details["host-key"].startswith(f"ssh-ed25519 {info.host_key_fingerprint} in ")
    assert not (tmp_path / "recv").exists()  # doctor only looks


BROKEN = [
    # (what is wrong, the check that must fail, its detail)
    ({"nc": False}, "pi-nc", "nc is not installed on the Pi"),
    ({"cameras": ()}, "camera-detected", "no camera detected (rpicam-hello --list-cameras lists none)"),
    ({"throttled": "throttled=0x50005"}, "pi-throttling", "under-voltage, throttled now (0x50005)"),
]


@pytest.mark.e2e
@pytest.mark.parametrize(("broken", "name", "detail"), BROKEN, ids=["no-nc", "no-camera", "throttled"])
def test_a_broken_pi_fails_exactly_the_check_that_finds_it(
    tmp_path: Path, sshd_factory: SshServerFactory, broken: dict[str, object], name: str, detail: str
) -> None:
    info = stand_in_pi(sshd_factory, **broken)  # type: ignore[arg-type]
    env = doctor_env(tmp_path, info)
    result = run_piorch(env, "doctor", "--pi", info.alias, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    (failed,) = [check for check in report["checks"] if check["status"] == "fail"]
    assert (failed["name"], failed["detail"]) == (name, detail) and failed["fix"]
    found = statuses(result.stdout)
    found[name] = "pass"
    expect_all_pass(found)
    # The plain report (not a terminal): one line a check, the fix under the failed one.
    plain = run_piorch(env, "doctor", "--pi", info.alias)
    assert plain.returncode == 1
    lines = plain.stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("FAIL") and f" {name} " in line)
    assert lines[index].endswith(detail) and lines[index + 1].strip() == f"fix: {failed['fix']}"
    assert lines[-1] == "1 check(s) failed"


@pytest.mark.e2e
def test_a_pi_used_without_setup_link_is_healthy_unless_strict(tmp_path: Path, sshd_factory: SshServerFactory) -> None:
    info = stand_in_pi(sshd_factory)
    env = doctor_env(tmp_path, info)
    del env["PIORCH_LAPTOP_IP"]  # no setup-link: the Pi sends to this end of the SSH link, which works
    plain = run_piorch(env, "doctor", "--pi", info.alias)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    lines = plain.stdout.splitlines()
    assert any(line.startswith("WARN") and " link-address " in line for line in lines)
    assert not any(line.startswith("FAIL") for line in lines)
    assert lines[-1] == "no check failed, 1 warning(s)"
    assert plain.stderr == ""
    strict = run_piorch(env, "doctor", "--pi", info.alias, "--strict", "--json")
    assert strict.returncode == 1
    report = json.loads(strict.stdout)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if c["status"] in ("warn", "fail")] == ["link-address"]


def settings_for(tmp_path: Path, ssh_config: Path, target: str) -> DoctorSettings:
    return DoctorSettings(ssh=SshSettings(target=target, ssh_config=ssh_config, connect_timeout=5),
                          port=free_port(), out_dir=tmp_path / "recv", bitrate=16_000_000, laptop_ip="127.0.0.1")


def rewrite_config(info: SshServerInfo, tmp_path: Path, **replacements: str) -> Path:
    lines = []
    for line in info.ssh_config.read_text().splitlines():
        key = line.strip().split(" ")[0]
        lines.append(f"    {key} {replacements[key]}" if key in replacements else line)
    path = tmp_path / "ssh_config"
    path.write_text("\n".join(lines) + "\n")
    return path


def ssh_and_pi(checks: list[Check]) -> dict[str, tuple[Status, str]]:
    return {check.name: (check.status, check.detail) for check in checks[4:]}


@pytest.mark.e2e
def test_unknown_and_changed_host_keys_are_told_apart(tmp_path: Path, sshd_factory: SshServerFactory) -> None:
    info = stand_in_pi(sshd_factory)
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    seen: list[Check] = []
    checks = run_doctor(settings_for(tmp_path, rewrite_config(info, tmp_path, UserKnownHostsFile=str(empty)),
                                     info.alias), seen.append)
    assert seen == checks  # the sink saw every check, in order
    found = ssh_and_pi(checks)
    assert found["ssh-reachable"][0] is Status.PASS
    assert found["host-key"] == (Status.FAIL, f"unknown host key ssh-ed25519 {info.host_key_fingerprint}")
    assert "piorch trust" in checks[5].fix and "ssh_host_ed25519_key.pub" in checks[5].fix
    assert found["ssh-login"] == (Status.SKIP, "skipped: host-key failed")
    assert all(found[name] == (Status.SKIP, "skipped: SSH failed") for name in PI_CHECKS)
    assert empty.read_text() == ""  # doctor records nothing

    # Another ed25519 key recorded for the same name: the Pi was re-flashed, or it is not the Pi.
    other = (info.user_key.parent / "user_ed25519.pub").read_text().split()
    changed = tmp_path / "known_hosts_changed"
    changed.write_text(f"[{info.host}]:{info.port} {other[0]} {other[1]}\n")
    checks = run_doctor(settings_for(tmp_path, rewrite_config(info, tmp_path, UserKnownHostsFile=str(changed)),
                                     info.alias), lambda check: None)
    found = ssh_and_pi(checks)
    assert found["host-key"] == (Status.FAIL, f"changed host key ssh-ed25519 {info.host_key_fingerprint}")
    assert "ssh-keygen -R" in checks[5].fix
    assert found["camera-tool"] == (Status.SKIP, "skipped: SSH failed")


@pytest.mark.e2e
def test_a_refused_login_and_an_unreachable_pi(tmp_path: Path, sshd_factory: SshServerFactory) -> None:
    info = stand_in_pi(sshd_factory)
    stranger = tmp_path / "stranger_ed25519"
    create_ed25519_key(stranger, "not-authorized")
    checks = run_doctor(settings_for(tmp_path, rewrite_config(info, tmp_path, IdentityFile=str(stranger)),
                                     info.alias), lambda check: None)
    found = ssh_and_pi(checks)
    assert found["ssh-reachable"][0] is found["host-key"][0] is Status.PASS
    assert found["ssh-login"] == (Status.FAIL, f"the Pi at {info.host}:{info.port} refused the login as {info.user}")
    assert checks[6].fix == f"install your key there: `piorch bootstrap --pi {info.alias}`"
    assert found["pi-nc"] == (Status.SKIP, "skipped: SSH failed")

    closed = free_port()
    checks = run_doctor(settings_for(tmp_path, info.ssh_config, f"127.0.0.1:{closed}"), lambda check: None)
    found = ssh_and_pi(checks)
    assert found["ssh-reachable"] == (Status.FAIL, f"cannot reach 127.0.0.1:{closed} (Connection refused)")
    assert found["host-key"] == (Status.SKIP, "skipped: ssh-reachable failed")
    assert not doctor_passed(checks)


def test_without_a_pi_only_the_laptop_is_checked(tmp_path: Path) -> None:
    settings = DoctorSettings(ssh=None, port=0, out_dir=tmp_path, bitrate=16_000_000, laptop_ip="127.0.0.1")
    checks = run_doctor(settings, lambda check: None)
    assert [c.name for c in checks] == ["laptop-nc", "receiver-port", "output-folder", "link-address", "pi"]
    assert checks[-1].status is Status.SKIP and doctor_passed(checks)


def test_a_busy_port_fails_the_port_check(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        settings = DoctorSettings(ssh=None, port=port, out_dir=tmp_path, bitrate=16_000_000, laptop_ip="127.0.0.1")
        checks = {c.name: c for c in run_doctor(settings, lambda check: None)}
    assert checks["receiver-port"].status is Status.FAIL
    assert checks["receiver-port"].detail == f"port {port} is busy on this laptop (another piorch or nc listens there)"


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = piorch_env(tmp_path, tmp_path / "no_ssh_config")
    result = run_piorch(env, "doctor", "--pi", "-oProxyCommand=evil")
    assert result.returncode == 2
    assert result.stderr.startswith("piorch: error: option --pi must be") and result.stderr.count("\n") == 1
