"""Who owns a gadget: /run/gadgetd/NAME.lock, flock()ed by its daemon for the daemon's whole life.

The lock is taken before anything is touched, so a second gadgetd (even with --replace) or a
`gadgetd down` sees at once that a live daemon builds or serves the gadget, and which pid. The
file also holds the owner's record (pid and process start time, so a reused pid is not taken for
the owner); a clean exit clears it, so a record found by the next claim is a crashed daemon's,
and the gadget it left is that daemon's to clean up. Lock files are never unlinked (unlinking a
lock file lets two processes hold "the" lock on different inodes).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass

from gadgetd import runstate, syscalls
from gadgetd.errors import SetupError


def process_start(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22)."""
    try:
        return int(syscalls.proc_stat(pid)[19])
    except OSError:
        return None


@dataclass(frozen=True)
class Owner:
    pid: int
    start: int

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), process_start(os.getpid()))

    @property
    def alive(self) -> bool:
        return process_start(self.pid) == self.start


class Held(SetupError):
    def __init__(self, name: str, owner: Owner | None):
        who = f"gadgetd pid {owner.pid}" if owner else "another gadgetd"
        super().__init__(f"gadget {name!r} is owned by {who} (lock {_lock_path(name)}): "
                         "stop that one first")
        self.owner = owner


def _lock_path(name: str):
    return runstate.runtime_dir() / f"{name}.lock"


RECORD_WAIT = 2.0  # seconds a lock holder may take to write its record (slow boards, emulators)


def _read_record(fd: int) -> Owner | None:
    data = os.pread(fd, 256, 0)
    try:
        record = json.loads(data)
        return Owner(int(record["pid"]), int(record["start"]))
    except (ValueError, KeyError, TypeError):
        return None


def _holders_record(fd: int) -> Owner | None:
    """The record of the live daemon whose lock we were refused: it writes it right after taking
    the lock, so give it RECORD_WAIT seconds to appear."""
    deadline = time.monotonic() + RECORD_WAIT
    while (owner := _read_record(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return owner


class Claim:
    """The lock on one gadget name, held until `release()` (or the process's death)."""

    def __init__(self, name: str):
        self.name = name
        self._fd = runstate.open_in_runtime_dir(f"{name}.lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _holders_record(self._fd)
            os.close(self._fd)
            raise Held(name, owner) from None
        self.previous = _read_record(self._fd)  # a record left behind: its daemon crashed
        me = Owner.me()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps({"pid": me.pid, "start": me.start}).encode(), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        """A clean exit: clear the record, then let go of the lock."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None


def claim(name: str) -> Claim:
    """Claim(name), an OSError (the runtime directory, the lock file) as a one-line SetupError."""
    try:
        return Claim(name)
    except OSError as exc:
        raise SetupError(f"cannot take the lock of gadget {name!r}: {exc.strerror}"
                         + (f" ({exc.filename})" if exc.filename else "")) from exc


def holder(name: str) -> Owner | None:
    """The live daemon holding `name`'s lock, or None when nobody does."""
    try:
        fd = runstate.open_in_runtime_dir(f"{name}.lock", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _holders_record(fd) or Owner(0, 0)  # held, by a pid not known yet
    finally:
        os.close(fd)
