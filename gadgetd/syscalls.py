"""The syscalls gadgetd makes on configfs, sysfs and mounts: one-write(2) attribute writes,
attribute reads, mount(2), umount2(2), openat2(2), an interruptible open(2), prctl(2), the mount
table and /proc/PID (stat, stack). Nothing else writes those paths."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)  # libc is already loaded; find_library would run ldconfig
_libc.read.restype = _libc.write.restype = ctypes.c_ssize_t
UMOUNT_NOFOLLOW = 8
SYS_OPENAT2 = 437  # the unified number: the same on x86_64, arm and aarch64


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def write_attr(path: Path, value: str | int | bytes) -> None:
    """Write one attribute with a single write(2), as configfs expects (bytes as they are:
    binary attributes such as hid's report_desc)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value if isinstance(value, bytes) else f"{value}\n".encode())
    except OSError as exc:  # name the attribute and the value (write(2) names neither)
        raise OSError(exc.errno, f"{exc.strerror}, value {str(value)!r}", str(path)) from None
    finally:
        os.close(fd)


def read_attr(path: Path) -> str:
    """An attribute's text without the newline (and the NUL u_ether's MAC addresses end in)."""
    with open(path, "rb") as f:
        return f.read().decode(errors="replace").strip("\0 \t\n")


def openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags, 0, resolve)
    fd = _libc.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dir_fd), path.encode(),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def mount(source: str, target: Path | str, fstype: str, options: str = "",
          shown: Path | None = None) -> None:
    """mount(2) on `target`; errors name `shown` instead when given (for /proc/self/fd/N)."""
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), 0,
                   options.encode() or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} {source} {shown or target} -o {options}: "
                           f"{os.strerror(err)}")


def umount(target: Path | str, nofollow: bool = False, shown: Path | None = None) -> None:
    if _libc.umount2(str(target).encode(), UMOUNT_NOFOLLOW if nofollow else 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {shown or target}: {os.strerror(err)}")


def open_interruptible(path: Path | str, flags: int) -> int:
    """open(2) once, through libc: a signal that interrupts it gives InterruptedError (Python's
    os.open would retry), and a signal after it returned cannot lose the fd it returned.
    Close-on-exec, as os.open makes it."""
    fd = _libc.open(os.fsencode(path), ctypes.c_int(flags | os.O_CLOEXEC), ctypes.c_int(0o666))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return fd


def read_interruptible(fd: int, length: int) -> bytes:
    """read(2) once, through libc: a signal that interrupts it gives InterruptedError."""
    buf = ctypes.create_string_buffer(length)
    n = _libc.read(ctypes.c_int(fd), buf, ctypes.c_size_t(length))
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.raw[:n]


def write_interruptible(fd: int, data: bytes) -> int:
    """write(2) once, through libc: a signal that interrupts it gives InterruptedError."""
    n = _libc.write(ctypes.c_int(fd), data, ctypes.c_size_t(len(data)))
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return n


def prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}, {arg}): {os.strerror(err)}")


def proc_stat(pid: int) -> list[bytes]:
    """/proc/PID/stat's fields after the command name: [state, ppid, ...] (field 3 onwards)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rindex(b")") + 2:].split()


def task_state(pid: int) -> dict:
    """State letter, wchan and kernel stack of a task; D with an f_fs frame means stuck there."""
    info = {"pid": pid}
    try:
        info["state"] = proc_stat(pid)[0].decode()
    except (OSError, ValueError):
        info["state"] = "gone"
        return info
    try:
        with open(f"/proc/{pid}/wchan") as f:
            info["wchan"] = f.read().strip()
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/stack") as f:
            info["stack"] = [line.split("] ", 1)[-1].strip() for line in f if line.strip()]
    except OSError as exc:
        info["stack"] = [f"(unreadable: {exc.strerror})"]
    return info


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
