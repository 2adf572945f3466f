"""Process every frame on the laptop, live: brightness and motion of each frame, printed as it arrives.

    python examples/brightness.py pi@192.168.50.2 --seconds 60
    python examples/brightness.py demo --seconds 5

The Pi only captures and sends; all the computing happens here, in numpy, on the grey (Y) plane of each
I420 frame, which costs no colour conversion at all.
"""

from __future__ import annotations

import argparse

import numpy as np

from orchestrator import Camera


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default="demo", help="[user@]host, an ~/.ssh/config alias, or demo")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to watch")
    parser.add_argument("--motion", type=float, default=8.0, help="mean change (0-255) that counts as motion")
    args = parser.parse_args(argv)
    previous: np.ndarray | None = None
    moving = 0
    with Camera(args.target) as cam:
        for frame in cam.frames(format="yuv", width=640, height=480, fps=25, seconds=args.seconds):
            height = frame.array.shape[0] * 2 // 3
            luma = frame.array[:height].astype(np.int16)  # the Y plane: brightness, pixel by pixel
            change = float(np.abs(luma - previous).mean()) if previous is not None else 0.0
            previous = luma
            moving += change >= args.motion
            flag = " motion" if change >= args.motion else ""
            print(f"{frame.arrival:%H:%M:%S.%f} frame {frame.index:5d} brightness {luma.mean():6.1f} "
                  f"change {change:5.1f}{flag}", flush=True)
        dropped = cam.frames_dropped
    print(f"{moving} frames with motion, {dropped} frames dropped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
