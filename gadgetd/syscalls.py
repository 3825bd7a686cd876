"""The syscalls gadgetd makes on configfs, sysfs and mounts: one-write(2) attribute writes,
attribute reads, mount(2), umount2(2), the mount table and /proc/PID/stat. Nothing else writes
those paths."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)  # libc is already loaded; find_library would run ldconfig
MNT_DETACH = 2


def write_attr(path: Path, value: str | int) -> None:
    """Write one attribute with a single write(2), as configfs expects."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, f"{value}\n".encode())
    finally:
        os.close(fd)


def read_attr(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read().decode(errors="replace").strip()


def mount(source: str, target: Path, fstype: str, options: str = "") -> None:
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), 0,
                   options.encode() or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} {source} {target} -o {options}: "
                           f"{os.strerror(err)}")


def umount(target: Path, lazy: bool = False) -> None:
    if _libc.umount2(str(target).encode(), MNT_DETACH if lazy else 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")


def proc_stat(pid: int) -> list[bytes]:
    """/proc/PID/stat's fields after the command name: [state, ppid, ...] (field 3 onwards)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rindex(b")") + 2:].split()


def mounts(fstype: str | None = None) -> list[tuple[str, Path, str]]:
    """(source, mountpoint, fstype) from /proc/self/mountinfo."""
    result = []
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            mountpoint = left.split()[4].encode().decode("unicode_escape")
            fs, source = right.split()[:2]
            if fstype is None or fs == fstype:
                result.append((source, Path(mountpoint), fs))
    return result
