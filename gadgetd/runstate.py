"""Runtime state of a running gadgetd: /run/gadgetd/NAME.json, written by the supervisor for
`gadgetd status` and whoever waits for a bind. Files here are opened through the directory's fd
and never through a symlink; the directory must be root's (or ours) and writable by nobody else.
Who owns a gadget is gadgetd.ownership's business (a lock file in the same directory).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from gadgetd.errors import SetupError


def runtime_dir() -> Path:
    return Path(os.environ.get("RUNTIME_DIRECTORY", "/run/gadgetd").split(":")[0])


def path(name: str) -> Path:
    return runtime_dir() / f"{name}.json"


def _dir_fd(create: bool) -> int:
    directory = runtime_dir()
    if create:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o022:
        os.close(fd)
        raise SetupError(f"{directory}: must belong to root and be writable by nobody else "
                         f"(uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})")
    return fd


def open_in_runtime_dir(filename: str, flags: int, mode: int = 0o644) -> int:
    """open(2) of one file in the runtime directory, not following a symlink."""
    dir_fd = _dir_fd(create=bool(flags & os.O_CREAT))
    try:
        return os.open(filename, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def write(name: str, state: dict) -> None:
    dir_fd = _dir_fd(create=True)
    try:
        tmp = f"{name}.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dir_fd)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, f"{name}.json", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _load(filename: str) -> dict | None:
    try:
        fd = open_in_runtime_dir(filename, os.O_RDONLY)
    except (OSError, SetupError):
        return None
    with os.fdopen(fd) as f:
        try:
            return json.loads(f.read())
        except ValueError:
            return None


def read(name: str) -> dict | None:
    return _load(f"{name}.json")


def read_all() -> list[dict]:
    return [s for p in sorted(runtime_dir().glob("*.json")) if (s := _load(p.name)) is not None]


def remove(name: str) -> None:
    try:
        dir_fd = _dir_fd(create=False)
    except (OSError, SetupError):
        return
    try:
        os.unlink(f"{name}.json", dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)
