"""Runs inside the VM as root: load the USB gadget + dummy host stack, run CMD, report its status.

The host watches the result directory (shared read-write over 9p): `booted` once the guest is up,
`status` as soon as CMD ends (written and synced before any shutdown is attempted, so a guest that
cannot power off because a task is stuck in the kernel still reports CMD's exit status).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from gadgetd import configfs

SPEED_OPTIONS = {
    "full": ["is_high_speed=0", "is_super_speed=0"],
    "high": ["is_high_speed=1", "is_super_speed=0"],
    "super": ["is_high_speed=1", "is_super_speed=1"],
}


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def prepare(speed: str) -> None:
    subprocess.run(["modprobe", "dummy_hcd", *SPEED_OPTIONS[speed]], check=True)
    for module in ("libcomposite", "usb_f_fs"):
        subprocess.run(["modprobe", module], check=True)
    configfs.ensure_configfs()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gadgetd-guest")
    parser.add_argument("--speed", choices=SPEED_OPTIONS, default="high")
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--results", type=Path, help="host directory for the command's files")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    _write(args.result / "booted", os.uname().release + "\n")
    try:
        prepare(args.speed)
    except subprocess.CalledProcessError as exc:
        print(f"gadgetd-guest: cannot set up the USB stack: {exc}", file=sys.stderr)
        _write(args.result / "setup-failed", str(exc))
        return 125
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "GADGETD_VM": "1"}
    if args.results:
        env["GADGETD_RESULTS"] = str(args.results)
    try:
        status = subprocess.run(command, env=env).returncode
    except OSError as exc:  # as a shell reports it: 127 not found, 126 not executable
        print(f"gadgetd-guest: {command[0]}: {exc.strerror}", file=sys.stderr)
        status = 127 if isinstance(exc, FileNotFoundError) else 126
    if status < 0:  # killed by a signal: report it the way a shell does
        status = 128 - status
    _write(args.result / "status", f"{status}\n")
    with open(args.result / "dmesg.txt", "w") as f:
        subprocess.run(["dmesg"], stdout=f)
    return status


if __name__ == "__main__":
    sys.exit(main())
