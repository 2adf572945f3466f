"""Is a camera connected? Both camera stacks asked in one round trip, and their answers read (pure).

libcamera (Bullseye and later): `rpicam-hello --list-cameras` (named libcamera-hello before rpicam-apps
1.4) prints one line a sensor, `0 : imx219 [3280x2464 10-bit RGGB] (/base/...)`, or "No cameras
available!". Legacy firmware: `vcgencmd get_camera` prints `supported=1 detected=1`, and newer firmware adds
`, libcamera interfaces=1` when libcamera owns the camera.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LIST_BEGIN = "piorch-list-begin"
LIST_END = "piorch-list-end"
GET_CAMERA = "piorch-get-camera"
CAMERA_DONE = "piorch-camera-done"


def build_camera_check_script() -> str:
    """Ask both stacks whether they see a camera: `rpicam-hello --list-cameras` (libcamera-hello before
    rpicam-apps 1.4) and `vcgencmd get_camera` (legacy firmware; newer ones also say `libcamera interfaces`).
    Output is capped: a listing with every sensor mode is long and only the camera lines matter."""
    return (
        "for t in rpicam-hello libcamera-hello; do "
        f'if command -v "$t" >/dev/null 2>&1; then echo "{LIST_BEGIN} $t"; '
        f'"$t" --list-cameras 2>&1 | head -n 60; echo {LIST_END}; break; fi; done; '
        "if command -v vcgencmd >/dev/null 2>&1; then "
        f'echo "{GET_CAMERA} $(vcgencmd get_camera 2>&1 | head -n 1)"; fi; '
        f"echo {CAMERA_DONE}"
    )


@dataclass(frozen=True)
class CameraReport:
    # Which hello tool listed cameras, and the sensors it listed (None: no hello tool ran).
    list_tool: str | None = None
    cameras: tuple[str, ...] | None = None
    # vcgencmd get_camera: "supported=1 detected=1" (+ ", libcamera interfaces=0" on newer firmware).
    supported: bool | None = None
    detected: bool | None = None
    libcamera_interfaces: bool | None = None
    get_camera_text: str | None = None
    complete: bool = False


# "0 : imx219 [3280x2464 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx219@10)"
_CAMERA_LINE = re.compile(r"^\s*\d+\s*:\s*(\S+)")
_GET_CAMERA_FIELD = re.compile(r"(supported|detected|libcamera interfaces)=(\d+)")


def parse_camera_check(text: str) -> CameraReport:
    list_tool: str | None = None
    cameras: list[str] = []
    fields: dict[str, bool] = {}
    get_camera_text: str | None = None
    in_list = complete = False
    for line in text.splitlines():
        stripped = line.strip()
        if in_list:
            if stripped == LIST_END:
                in_list = False
            elif match := _CAMERA_LINE.match(line):
                cameras.append(match.group(1))
            continue
        if stripped.startswith(LIST_BEGIN + " "):
            list_tool, in_list = stripped.split(" ", 1)[1], True
        elif stripped.startswith(GET_CAMERA):
            get_camera_text = stripped[len(GET_CAMERA):].strip()
            fields = {name: value != "0" for name, value in _GET_CAMERA_FIELD.findall(get_camera_text)}
        elif stripped == CAMERA_DONE:
            complete = True
    return CameraReport(
        list_tool=list_tool, cameras=tuple(cameras) if list_tool else None,
        supported=fields.get("supported"), detected=fields.get("detected"),
        libcamera_interfaces=fields.get("libcamera interfaces"), get_camera_text=get_camera_text, complete=complete,
    )
