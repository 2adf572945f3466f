"""A live OpenCV window of the Pi's camera: frames arrive as BGR numpy arrays, the order cv2 draws.

    pip install 'piorch[opencv]'            # OpenCV is optional; piorch itself never needs it
    python examples/opencv_window.py pi@192.168.50.2
    python examples/opencv_window.py demo   # the built-in simulated Pi

Press q in the window (or Ctrl+C) to stop: leaving the `with` block frees the camera on the Pi.
`--headless` draws nothing (for machines without a screen, and for the test suite): it prints what it saw.
"""

from __future__ import annotations

import argparse

import cv2

from orchestrator import Camera


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default="demo", help="[user@]host, an ~/.ssh/config alias, or demo")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until q)")
    parser.add_argument("--headless", action="store_true", help="no window: print each frame's size instead")
    args = parser.parse_args(argv)
    shown = 0
    with Camera(args.target) as cam:
        for frame in cam.frames(format="bgr", width=640, height=480, fps=30, seconds=args.seconds):
            # A timestamp drawn on the picture, as a user's own processing would.
            cv2.putText(frame.array, f"#{frame.index}", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1, (0, 255, 0), 2)
            shown += 1
            if args.headless:
                print(f"frame {frame.index}: {frame.array.shape[1]}x{frame.array.shape[0]}")
                continue
            cv2.imshow("piorch", frame.array)
            if cv2.waitKey(1) & 0xFF == ord("q"):
                break
        dropped = cam.frames_dropped
    if not args.headless:
        cv2.destroyAllWindows()
    print(f"{shown} frames shown, {dropped} dropped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
