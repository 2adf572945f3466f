"""Simulated Pis of each kind behind a real sshd: Pi 4 with the legacy stack, Pi 4 with rpicam-apps, Pi 5 with
rpicam-apps, Pi 5 with rpicam-apps-lite.

The camera simulator plays the board and build it is told (PIORCH_SIM_BOARD / PIORCH_SIM_BUILD, orchestrator/
sim/profile.py). piorch itself learns the board where a Pi has it, from the device tree: every SSH session of
these fake Pis runs in a mount namespace of its own with a tmpfs on /sys/firmware holding
devicetree/base/model, the file /proc/device-tree links to on a Pi (a test machine has no device tree, so
nothing real is hidden). Needs root and unshare(1), as the sshd fixture itself does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.sim.stand_in import install_stand_ins
from tests.e2e_helpers import FakePi
from tests.sshd_server import SshServer, SshServerInfo
from tests.stand_in_pi import install_rpicam_hello, install_vcgencmd

PI4_MODEL = "Raspberry Pi 4 Model B Rev 1.4"
PI5_MODEL = "Raspberry Pi 5 Model B Rev 1.0"


@dataclass(frozen=True)
class PiModel:
    name: str
    board: str
    # The simulator's profile: PIORCH_SIM_BOARD, PIORCH_SIM_BUILD, PIORCH_SIM_VERSION.
    sim_env: dict[str, str]
    video_tool: str
    still_tool: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def legacy(self) -> bool:
        return self.video_tool == "raspivid"


PI4_LEGACY = PiModel("pi4-legacy", PI4_MODEL, {"PIORCH_SIM_BOARD": "pi4"}, "raspivid", "raspistill")
PI4_RPICAM = PiModel("pi4-rpicam", PI4_MODEL, {"PIORCH_SIM_BOARD": "pi4"}, "rpicam-vid", "rpicam-still")
PI5_RPICAM = PiModel("pi5-rpicam", PI5_MODEL, {"PIORCH_SIM_BOARD": "pi5", "PIORCH_SIM_BUILD": "full"},
                     "rpicam-vid", "rpicam-still")
PI5_LITE = PiModel("pi5-lite", PI5_MODEL, {"PIORCH_SIM_BOARD": "pi5", "PIORCH_SIM_BUILD": "lite"},
                   "rpicam-vid", "rpicam-still")
MODELS = (PI4_LEGACY, PI4_RPICAM, PI5_RPICAM, PI5_LITE)


def require_mount_namespaces() -> None:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -m (root) to give the fake Pi a device tree")


def give_board(info: SshServerInfo, model: str) -> None:
    """From the next session on, the fake Pi's /sys/firmware/devicetree/base/model says `model`."""
    root = info.bin_dir.parent
    wrapper, inner = root / "session-wrapper.sh", root / "session-inner.sh"
    model_file = root / "device-tree-model"
    model_file.write_bytes(model.encode() + b"\0")  # the firmware ends the string with a NUL byte
    if not inner.exists():
        os.replace(wrapper, inner)
    mount, mkdir, cp = (shutil.which(name) for name in ("mount", "mkdir", "cp"))
    setup = (f"{mount} -t tmpfs piorch-device-tree /sys/firmware && {mkdir} -p /sys/firmware/devicetree/base && "
             f'{cp} "$1" /sys/firmware/devicetree/base/model && exec "$2"')
    partial = root / ".session-wrapper.partial"
    partial.write_text("#!/bin/sh\n# tests/pi_models.py: this session sees a Raspberry Pi device tree.\n"
                       f"exec unshare -m /bin/sh -c {shlex.quote(setup)} sh {shlex.quote(str(model_file))} "
                       f"{shlex.quote(str(inner))}\n")
    partial.chmod(0o755)
    os.replace(partial, wrapper)


def start_pi(tmp_path: Path, model: PiModel, extra_env: dict[str, str] | None = None) -> FakePi:
    """A fake Pi of this model: the simulator's tools for its stack, the board in its device tree, and
    rpicam-hello / vcgencmd stand-ins so that `doctor` sees a camera."""
    require_mount_namespaces()
    log_dir = tmp_path / "pi-log"
    log_dir.mkdir()
    lock = tmp_path / "camera.lock"
    env = {"PIORCH_SIM_LOG": str(log_dir), "PIORCH_SIM_LOCK": str(lock), **model.sim_env, **model.extra_env,
           **(extra_env or {})}
    server = SshServer(env)
    info = server.start()
    try:
        install_stand_ins(info.bin_dir, (model.video_tool, model.still_tool), extra_env=model.sim_env)
        if model.legacy:
            install_vcgencmd(info.bin_dir, camera="supported=1 detected=1")
        else:
            install_vcgencmd(info.bin_dir)
            install_rpicam_hello(info.bin_dir, ("imx219",))
        give_board(info, model.board)
    except BaseException:
        server.stop()
        raise
    return FakePi(server, info, log_dir, lock)
