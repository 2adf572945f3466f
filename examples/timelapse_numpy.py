"""A timelapse into numpy: one picture every few seconds, stacked into one array and saved as .npy.

    python examples/timelapse_numpy.py pi@192.168.50.2 --count 60 --interval 10 --out day.npy
    python examples/timelapse_numpy.py demo --count 3 --interval 0.5 --out demo.npy

`numpy.load("day.npy")` gives an array of shape (count, height, width, 3) in RGB order.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from orchestrator import Camera


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default="demo", help="[user@]host, an ~/.ssh/config alias, or demo")
    parser.add_argument("--count", type=int, default=10, help="how many pictures")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds from one picture to the next")
    parser.add_argument("--width", type=int, default=None, help="picture width (default: the sensor's)")
    parser.add_argument("--height", type=int, default=None, help="picture height (with --width)")
    parser.add_argument("--out", type=Path, default=Path("timelapse.npy"), help="where the stack is saved")
    args = parser.parse_args(argv)
    pictures = []
    with Camera(args.target) as cam:
        start = time.monotonic()
        for index in range(args.count):
            # A schedule, not a sleep after each picture: the interval does not drift.
            time.sleep(max(0.0, start + index * args.interval - time.monotonic()))
            picture = cam.capture(format="rgb", width=args.width, height=args.height)
            assert isinstance(picture, np.ndarray)
            pictures.append(picture)
            print(f"picture {index + 1}/{args.count}: {picture.shape[1]}x{picture.shape[0]}", flush=True)
    stack = np.stack(pictures)
    np.save(args.out, stack)
    print(f"saved {stack.shape} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
