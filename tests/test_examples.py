"""Every example in examples/ runs headless against the built-in simulated Pi, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
np = pytest.importorskip("numpy")


def run_example(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PIORCH_CONFIG": str(tmp_path / "none.toml")}
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_opencv_window_headless(tmp_path: Path) -> None:
    pytest.importorskip("cv2", reason="OpenCV is an optional extra: pip install 'piorch[opencv]'")
    result = run_example(tmp_path, "opencv_window.py", "demo", "--seconds", "2", "--headless")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("frame 0: ") and lines[-1].endswith("dropped")
    assert sum(line.startswith("frame ") for line in lines) > 10


def test_brightness_and_motion_printed_live(tmp_path: Path) -> None:
    result = run_example(tmp_path, "brightness.py", "demo", "--seconds", "2")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if " brightness " in line]
    assert len(rows) > 10
    assert all(0 <= float(row.split("brightness")[1].split()[0]) <= 255 for row in rows)
    assert result.stdout.splitlines()[-1].endswith("frames dropped")


def test_timelapse_into_numpy(tmp_path: Path) -> None:
    result = run_example(tmp_path, "timelapse_numpy.py", "demo", "--count", "3", "--interval", "0.2",
                         "--out", "stack.npy")
    assert result.returncode == 0, result.stderr
    stack = np.load(tmp_path / "stack.npy")
    assert stack.shape[0] == 3 and stack.ndim == 4 and stack.shape[3] == 3 and stack.dtype == np.uint8
