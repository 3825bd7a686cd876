"""FunctionFS syscalls: mount, the ep0 open (through the retry policy), ep0 I/O, endpoint files.

Policy (retry, backoff, deadlines) comes from open_policy; this module only touches the kernel.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import threading
import time
from pathlib import Path

import functionfs

from gadgetd import safepath, syscalls, wire
from gadgetd.model import FunctionSpec
from gadgetd.open_policy import DeadlineExceeded, Ep0OpenPolicy, RetryStats, call_with_retry
from gadgetd.undo import UndoLog

log = logging.getLogger(__name__)


class SetupCancelled(Exception):
    """A newer event cancelled the pending SETUP (EIDRM): drop it and go on."""


def mountpoints(instance: str) -> list[Path]:
    return [m for source, m, _ in syscalls.mounts("functionfs") if source == instance]


def mount(fn: FunctionSpec, undo: UndoLog) -> None:
    """Mount the instance on its mount point, made if missing; neither followed through a
    symlink (gadgetd.safepath). The directories made here are removed at teardown, and so is
    the mount point itself when an earlier run (a crash) left it: it is the function's own
    directory in gadgetd's tree, and would be residue."""
    created: list[Path] = []
    try:
        with safepath.directory(fn.mountpoint, created) as fd:
            if fn.mountpoint not in created:
                created.append(fn.mountpoint)
            syscalls.mount(fn.name, safepath.fd_path(fd), "functionfs",
                           fn.mount.as_option_string(), shown=fn.mountpoint)
    finally:
        for made in created:  # undone deepest first
            undo.push(f"rmdir {made}",
                      functools.partial(safepath.rmdir, made, shared=made != fn.mountpoint))
    undo.push(f"umount {fn.mountpoint}", lambda: safepath.umount(fn.mountpoint))


def holders(mountpoint: Path) -> list[int]:
    """Pids that have a file of this FunctionFS mount open."""
    prefix = str(mountpoint).rstrip("/") + "/"
    found = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd.path).startswith(prefix) for fd in os.scandir(fd_dir)):
                found.append(int(fd_dir.parent.name))
        except OSError:  # the process exited, or a file closed, while we looked
            continue
    return found


def unmount(mountpoint: Path, grace: float = 5.0) -> None:
    """Unmount once no process holds its files (a killed daemon's worker takes a moment to
    exit); remove the mount point if that leaves it an empty directory."""
    deadline = time.monotonic() + grace
    while (pids := holders(mountpoint)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pids:
        raise OSError(errno.EBUSY, f"still held open by pid {', '.join(map(str, pids))}",
                      str(mountpoint))
    safepath.umount(mountpoint)
    try:
        safepath.rmdir(mountpoint)
    except OSError:
        pass


# The host's own default (Linux's USB_CTRL_GET_TIMEOUT): a data stage not taken by then was
# abandoned. Past it, the wait is interrupted and f_fs dequeues the request (-EINTR), which also
# releases ffs->mutex. Without it, a UDC that never completes an abandoned stage (usbip-vudc
# until the next transfer: vudc_transfer.c, "TODO - flush any stale requests") stops the loop.
DATA_STAGE_TIMEOUT = 5.0


class DataStageTimeout(DeadlineExceeded):
    """The host did not complete a control data stage in time; f_fs dequeued it."""


def _ignore_alarm(signum, frame):
    pass  # only there so that SIGALRM interrupts the call (CPython installs it without SA_RESTART)


# Installed at the first bounded call and left (a forked worker inherits it with this flag):
# nothing else in gadgetd handles SIGALRM, and a late one is then harmless. Swapped in and out
# around every data stage it cost more than the stage's syscall (signal.signal and getsignal
# convert handlers to enums through a ValueError: 23 us of 37 natively, 12% of control's profile).
_alarm_handler_installed = False


def bounded(call, remaining: float, timeout: type[DeadlineExceeded], what: str):
    """call(), a single interruptible syscall (gadgetd.syscalls' *_interruptible), waiting at
    most `remaining` s; past that, raises `timeout`.

    SIGALRM interrupts it; its handler (installed at the first call) raises nothing, so a timer
    that fires after the call returned neither makes a miss nor loses its result. The timer
    repeats every 10 ms past the deadline, in case the first signal came before the call had
    started to wait. Another signal's interruption is retried. It applies in the main thread
    only; elsewhere the call is unbounded.
    """
    if threading.current_thread() is not threading.main_thread():
        while True:
            try:
                return call()
            except InterruptedError:
                continue
    deadline = time.monotonic() + remaining
    global _alarm_handler_installed
    if not _alarm_handler_installed:
        signal.signal(signal.SIGALRM, _ignore_alarm)
        _alarm_handler_installed = True
    signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.001), 0.01)
    try:
        while True:
            try:
                return call()
            except InterruptedError:
                if time.monotonic() >= deadline:
                    raise timeout(errno.ETIMEDOUT,
                                  f"{what} still waiting after {remaining:.3f} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def open_bounded(path: Path, flags: int, remaining: float) -> int:
    """open(2); a blocking open waits at most `remaining` s (f_fs waits interruptibly for the
    mutex)."""
    if flags & os.O_NONBLOCK:
        return os.open(path, flags)
    return bounded(lambda: syscalls.open_interruptible(path, flags), remaining,
                   DeadlineExceeded, f"blocking open of {path}")


def open_file(path: Path, policy: Ep0OpenPolicy, stats: RetryStats, nonblock: bool) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_NDELAY if nonblock else 0)
    return call_with_retry(lambda remaining: open_bounded(path, flags, remaining), policy, stats)


class Ep0:
    """ep0 of one FunctionFS instance, opened by gadgetd under its open policy."""

    def __init__(self, mountpoint: Path, policy: Ep0OpenPolicy, stats: RetryStats):
        self.policy, self.stats = policy, stats
        self.path = mountpoint / "ep0"
        self.fd = open_file(self.path, policy, stats, nonblock=policy.nonblock)
        # python-functionfs's Endpoint0File gives halt() and the INTERFACE_REVMAP ioctl.
        self.file = functionfs.Endpoint0File(self.fd)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        self.file.close()

    def _retrying(self, operation):
        """ep0 read/write; under O_NDELAY f_fs trylocks ffs->mutex, so EAGAIN is retried.
        `operation(remaining)` is given the policy's remaining time."""
        try:
            return call_with_retry(operation, self.policy, self.stats,
                                   retry_errnos={errno.EAGAIN, errno.EINTR})
        except OSError as exc:
            if exc.errno == errno.EIDRM:
                raise SetupCancelled() from None
            raise

    def _data_stage(self, call, what: str):
        return self._retrying(lambda remaining: bounded(
            call, min(remaining, DATA_STAGE_TIMEOUT), DataStageTimeout, what))

    def write_descriptors(self, fn: FunctionSpec, flags: int) -> None:
        self._retrying(lambda _: os.write(self.fd, wire.descriptors_blob(fn, flags)))
        self._retrying(lambda _: os.write(self.fd, wire.strings_blob(fn)))

    def read_events(self) -> list[wire.Event]:
        """The queued events; [] when none are queued (or the mutex was busy under O_NDELAY)."""
        try:
            buf = os.read(self.fd, wire.EVENT_SIZE * wire.MAX_EVENTS)
        except BlockingIOError:
            return []
        except OSError as exc:
            if exc.errno == errno.EIDRM:  # a pending setup was cancelled; nothing to read
                return []
            raise
        return wire.parse_events(buf)

    def reply(self, data: bytes) -> None:
        """Data stage of an IN request."""
        self._data_stage(lambda: syscalls.write_interruptible(self.fd, data), "ep0 reply")

    def receive(self, length: int) -> bytes:
        """Data stage of an OUT request (length 0 acknowledges a no-data request)."""
        return self._data_stage(lambda: syscalls.read_interruptible(self.fd, length),
                                "ep0 receive")

    def stall(self, setup: wire.Setup) -> None:
        """Reading/writing in the wrong direction makes f_fs STALL (it returns EL2HLT)."""
        try:
            self._retrying(lambda _: self.file.halt(setup.request_type))
        except SetupCancelled:
            pass

    def interface_number(self, interface: int) -> int | None:
        return self.file.getRealInterfaceNumber(interface)


def open_endpoints(fn: FunctionSpec, policy: Ep0OpenPolicy, stats: RetryStats):
    """epN files in descriptor order, non-blocking so AIO on a disabled endpoint fails fast."""
    files = []
    try:
        for index in range(1, len(fn.endpoints) + 1):
            fd = open_file(fn.mountpoint / f"ep{index}", policy, stats, nonblock=True)
            files.append(functionfs.EndpointFile(fd))
    except BaseException:
        for f in files:
            f.close()
        raise
    return files
