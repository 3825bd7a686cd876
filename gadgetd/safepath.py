"""Directories reached from `/` without following symlinks, for the FunctionFS mount points the
root daemon creates, mounts on, unmounts and removes: a symlink planted anywhere on such a path
(in /run, say) is refused instead of followed.

Each component is opened with openat2(2) and RESOLVE_NO_SYMLINKS; where openat2 is missing
(ENOSYS: kernels before 5.6, qemu-user for armel) with O_PATH|O_NOFOLLOW|O_DIRECTORY. The kernel
is then given `/proc/self/fd/N` paths of those O_PATH descriptors.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gadgetd import syscalls

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
RESOLVE_NO_SYMLINKS = 0x04


def openat2_nofollow(parent: int, name: str) -> int:
    return syscalls.openat2(parent, name, _DIR, RESOLVE_NO_SYMLINKS)


def open_nofollow(parent: int, name: str) -> int:
    """The same as openat2_nofollow for one component, with open(2) alone."""
    return os.open(name, _DIR | os.O_NOFOLLOW, dir_fd=parent)


def _names(path: Path) -> tuple[str, ...]:
    if not path.is_absolute() or ".." in path.parts:
        raise OSError(errno.EINVAL, "not an absolute path without '..'", str(path))
    return path.parts[1:]


def _refused(parent: int, name: str, path: Path, exc: OSError) -> OSError:
    """The error to raise for `name` in `parent` (reached as `path`) that failed to open."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        if is_link:
            return OSError(errno.ELOOP, "symlink refused: mount points are reached without "
                           "following symlinks", str(path))
    return OSError(exc.errno, exc.strerror, str(path))


def _open_or_make(parent: int, name: str, reached: Path, open_component,
                  created: list[Path] | None) -> int:
    try:
        return open_component(parent, name)
    except FileNotFoundError:
        if created is None:
            raise
    try:
        os.mkdir(name, 0o755, dir_fd=parent)
        created.append(reached)
    except FileExistsError:  # made meanwhile by someone else: opened as found
        pass
    return open_component(parent, name)


def walk(path: Path, open_component: Callable[[int, str], int],
         created: list[Path] | None = None) -> int:
    """An O_PATH descriptor of directory `path`, each component opened with `open_component`.

    With `created`, missing directories are made (mode 0755) and appended to it as they are.
    """
    fd = os.open("/", _DIR)
    reached = Path("/")
    try:
        for name in _names(path):
            reached = reached / name
            try:
                child = _open_or_make(fd, name, reached, open_component, created)
            except OSError as exc:
                if exc.errno == errno.ENOSYS:
                    raise
                raise _refused(fd, name, reached, exc) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(path: Path, created: list[Path] | None = None) -> int:
    """walk() with openat2, or component by component with open(2) where openat2 is missing
    (its ENOSYS comes at the first component, before anything was created)."""
    try:
        return walk(path, openat2_nofollow, created)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
    return walk(path, open_nofollow, created)


@contextmanager
def directory(path: Path, created: list[Path] | None = None) -> Iterator[int]:
    """open_dir's descriptor, closed on leaving."""
    fd = open_dir(path, created)
    try:
        yield fd
    finally:
        os.close(fd)


def fd_path(fd: int) -> str:
    """The path the kernel resolves to what `fd` refers to, for calls that take no descriptor."""
    return f"/proc/self/fd/{fd}"


def umount(mountpoint: Path) -> None:
    """umount2 of the mount point's name in its parent directory, which was reached without
    symlinks, not following the name either (UMOUNT_NOFOLLOW). Not through a descriptor of
    the mount point itself: that descriptor would keep the mount busy (EBUSY)."""
    with directory(mountpoint.parent) as parent:
        syscalls.umount(f"{fd_path(parent)}/{mountpoint.name}", nofollow=True, shown=mountpoint)


def rmdir(path: Path, shared: bool = False) -> None:
    """Remove directory `path`; a `shared` one (the parent of other functions' or daemons'
    mount points) that is not empty stays, without an error."""
    with directory(path.parent) as parent:
        try:
            os.rmdir(path.name, dir_fd=parent)
        except OSError as exc:
            if not (shared and exc.errno == errno.ENOTEMPTY):
                raise OSError(exc.errno, exc.strerror, str(path)) from None
