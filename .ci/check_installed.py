#!/usr/bin/env python3
"""piorch as a user installs it: build the wheel, install it with no extras into a fresh venv outside the
source tree, run `piorch demo` from yet another folder, and check what the user would look at.

Checks: the wheel, built from a copy of the files git would commit, holds every file of orchestrator/
(package data included: a script or clip missing from it breaks only the installed piorch); piorch is
imported from the fresh venv; the demo exits 0; at least one MP4, each read by ffprobe as H.264 with a
duration; every `<uuid>.json` finished (status `complete`, naming an MP4 that exists, no remux error); no
`.tmp` left; one `session-*.json`, complete and listing every file. The first failed check is printed and
the script exits 1.

Standard library only: it runs with the machine's python3 before or after `make test`.
Usage: python3 .ci/check_installed.py [--seconds 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1]
# Building and installing fetch from the package index; a demo of a few seconds ends in well under a minute.
INSTALL_TIMEOUT_S = 600
DEMO_TIMEOUT_S = 120
PROBE_TIMEOUT_S = 30


class CheckFailed(Exception):
    """One check did not hold; the message says which and what was seen."""


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(argv), flush=True)
    try:
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"{argv[0]} did not finish within {timeout:g} s") from exc


def run_ok(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = run(argv, cwd=cwd, env=env, timeout=timeout)
    if result.returncode != 0:
        raise CheckFailed(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return result.stdout


def clean_env() -> dict[str, str]:
    """No PYTHONPATH or active venv: the installed package must be the one imported, not the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIORCH_CONFIG"] = "/nonexistent/piorch-ci-config.toml"  # never a developer's own config file
    return env


def source_files(env: dict[str, str]) -> list[str]:
    """What git would commit from SOURCE: tracked files and new ones it does not ignore (so no .venv, build/)."""
    if not (SOURCE / ".git").exists():
        raise CheckFailed(f"{SOURCE} is not a git checkout: the files to build from are git's")
    listing = run_ok(["git", "-C", str(SOURCE), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                     cwd=SOURCE, env=env, timeout=PROBE_TIMEOUT_S)
    return [name for name in listing.split("\0") if name and (SOURCE / name).is_file()]


def install_wheel(work: Path, env: dict[str, str]) -> Path:
    """A fresh venv in `work`, the wheel built from a copy of the source, installed with no extras.

    Built from a copy: setuptools builds in the source folder's build/, and a module moved or deleted since
    an earlier build would still sit there and be packed into the wheel. Returns the venv's bin folder.
    """
    files = source_files(env)
    copy = work / "source"
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SOURCE / name, copy / name)
    venv = work / "venv"
    run_ok([sys.executable, "-m", "venv", str(venv)], cwd=work, env=env, timeout=INSTALL_TIMEOUT_S)
    bin_dir = venv / "bin"
    wheels = work / "wheel"
    run_ok([str(bin_dir / "python"), "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(copy)],
           cwd=work, env=env, timeout=INSTALL_TIMEOUT_S)
    built = sorted(wheels.glob("piorch-*.whl"))
    if len(built) != 1:
        raise CheckFailed(f"expected one piorch wheel, found {[p.name for p in built]}")
    check_wheel_contents(built[0], [name for name in files if name.startswith("orchestrator/")])
    run_ok([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(built[0])], cwd=work, env=env,
           timeout=INSTALL_TIMEOUT_S)
    where = run_ok([str(bin_dir / "python"), "-c", "import orchestrator; print(orchestrator.__file__)"],
                   cwd=work, env=env, timeout=PROBE_TIMEOUT_S).strip()
    if not Path(where).is_relative_to(venv):
        raise CheckFailed(f"orchestrator was imported from {where}, not from the fresh venv {venv}")
    print(f"ok: {built[0].name} installed with no extras; orchestrator imported from {where}")
    return bin_dir


def check_wheel_contents(wheel: Path, package_files: list[str]) -> None:
    """Every file of the package in the source tree is in the wheel (package data too)."""
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    missing = sorted(name for name in package_files if name not in shipped)
    if missing:
        raise CheckFailed(f"{wheel.name} lacks files of the package (add them to package-data): {missing}")
    print(f"ok: {wheel.name} holds all {len(package_files)} files of orchestrator/ in the source tree")


def check_playable(media: Path, env: dict[str, str]) -> None:
    if shutil.which("ffprobe") is None:
        raise CheckFailed("ffprobe not found: install ffmpeg")
    out = run_ok(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                  "stream=codec_name,width,height:format=format_name,duration", "-of", "json", str(media)],
                 cwd=media.parent, env=env, timeout=PROBE_TIMEOUT_S)
    probe = json.loads(out)
    streams = probe.get("streams") or [{}]
    stream, fmt = streams[0], probe.get("format", {})
    duration = float(fmt.get("duration") or 0)
    if stream.get("codec_name") != "h264" or "mp4" not in fmt.get("format_name", "") or duration <= 0:
        raise CheckFailed(f"{media.name} is not a playable H.264 MP4 by ffprobe: {out.strip()}")
    print(f"ok: {media.name}: {fmt['format_name']}, h264 {stream.get('width')}x{stream.get('height')}, "
          f"{duration:.2f} s")


def check_manifests(out: Path) -> list[str]:
    """Every per-file manifest finished and naming a file that exists; returns the files they name."""
    manifests = sorted(p for p in out.glob("*.json") if not p.name.startswith("session-"))
    if not manifests:
        raise CheckFailed(f"no <uuid>.json manifest in {out}")
    named = []
    for path in manifests:
        data = json.loads(path.read_text())
        status, file = data.get("status"), data.get("file", "")
        if status != "complete":
            raise CheckFailed(f"{path.name} is not finished: status {status!r}, file {file!r}, "
                              f"reason {data.get('reason')!r}, remux_error {data.get('remux_error')!r}")
        if data.get("remux_error"):
            raise CheckFailed(f"{path.name}: remux_error {data['remux_error']!r}")
        if not file.endswith(".mp4") or not (out / file).is_file():
            raise CheckFailed(f"{path.name} names {file!r}, which is not an MP4 in {out}")
        named.append(file)
    print(f"ok: {len(manifests)} file manifest(s) complete: {', '.join(named)}")
    return named


def check_session(out: Path, named: list[str]) -> None:
    sessions = sorted(out.glob("session-*.json"))
    if len(sessions) != 1:
        raise CheckFailed(f"expected one session-*.json in {out}, found {[p.name for p in sessions]}")
    data = json.loads(sessions[0].read_text())
    listed = [entry.get("file") for entry in data.get("files", [])]
    if data.get("status") != "complete" or sorted(listed) != sorted(named):
        raise CheckFailed(f"{sessions[0].name}: status {data.get('status')!r}, lists {listed}, expected {named}")
    print(f"ok: {sessions[0].name} complete, lists {len(listed)} file(s)")


def check_demo(bin_dir: Path, work: Path, seconds: float, env: dict[str, str]) -> None:
    # Another folder than the source tree and the venv: the demo may use nothing but the installed package.
    run_dir = work / "elsewhere"
    run_dir.mkdir()
    out = run_dir / "X"
    result = run([str(bin_dir / "piorch"), "demo", "--seconds", f"{seconds:g}", "--out", "X"], cwd=run_dir,
                 env=env, timeout=DEMO_TIMEOUT_S)
    print(result.stdout + result.stderr, end="")
    if result.returncode != 0:
        raise CheckFailed(f"piorch demo exited {result.returncode}")
    leftovers = sorted(p.name for p in out.rglob("*.tmp"))
    if leftovers:
        raise CheckFailed(f".tmp files left in {out}: {leftovers}")
    named = check_manifests(out)
    for name in named:
        check_playable(out / name, env)
    check_session(out, named)
    print(f"ok: no .tmp left in {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the demo recording")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    args = parser.parse_args()
    env = clean_env()
    work = Path(tempfile.mkdtemp(prefix="piorch-installed-"))
    if work.resolve().is_relative_to(SOURCE):
        print(f"FAIL: scratch folder {work} is inside the source tree", file=sys.stderr)
        return 1
    try:
        bin_dir = install_wheel(work, env)
        check_demo(bin_dir, work, args.seconds, env)
    except CheckFailed as exc:
        print(f"FAIL: installed-package check: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("installed-package check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
