"""A program serving a FunctionFS function (kind exec, gadgetd.functions.exec) as the supervisor
sees it: the same life as a worker (WorkerProcess: ready, gone, SIGKILL on failure, reaped through
a pidfd), without a channel. It is ready once its ep files exist (the instance is ACTIVE: the
program, or gadgetd for it, wrote descriptors and strings); its output is logged line by line
under the function's name. It runs in a session of its own, and signals go to that process
group, so helpers it forks end with it and leave no ep file open.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import time
from pathlib import Path

from gadgetd import ffs, worker
from gadgetd.functions.exec import listen_environment
from gadgetd.open_policy import Ep0OpenPolicy, RetryStats
from gadgetd.worker_process import WorkerProcess

log = logging.getLogger(__name__)
READY_POLL = 0.05  # seconds between looks for the ep files
MAX_LINE = 4096  # a longer output line is logged in pieces


def _ep_number(path: Path) -> int:
    return int(path.name[2:])


def _ep_files(mountpoint: Path) -> list[Path]:
    """ep1, ep2, ... in number order."""
    return sorted(mountpoint.glob("ep[1-9]*"), key=_ep_number)


def _instance(mountpoint: Path) -> int | None:
    """Which instance's ep files are there: the first one's inode number (FunctionFS makes
    them anew, with new inode numbers, each time descriptors and strings are written), None
    when there are none."""
    for path in _ep_files(mountpoint):
        try:
            return path.stat().st_ino
        except FileNotFoundError:
            continue
    return None


def _wait_gone(mountpoint: Path, stale: int, timeout: float) -> None:
    """Until the previous instance's ep files are gone: its ep0 is still open somewhere else,
    and writing descriptors to it now would fail (ESRCH)."""
    deadline = time.monotonic() + timeout
    while _instance(mountpoint) == stale and time.monotonic() < deadline:
        time.sleep(READY_POLL / 5)


def _open_for_program(fn) -> list[tuple[str, int]]:
    """ep0 opened under gadgetd's policy, descriptors and strings written (the blobs or the
    template's), then every ep file: (name, fd), blocking, as the program would open them."""
    policy, stats = Ep0OpenPolicy(fn.ep0_open), RetryStats()
    ep0 = ffs.Ep0(fn.mountpoint, policy, stats)
    if fn.options.get("descriptors"):
        blobs = [Path(fn.options[k]).read_bytes() for k in ("descriptors", "strings")]
        for blob in blobs:
            ep0._retrying(lambda _, b=blob: os.write(ep0.fd, b))
    else:
        ep0.write_descriptors(fn, 0)
    # Ep0's file object closes its fd when it goes: the program gets a duplicate of its own
    files = [("ep0", os.dup(ep0.fd))]
    ep0.close()
    for path in _ep_files(fn.mountpoint):
        files.append((path.name, ffs.open_file(path, policy, stats, nonblock=False)))
    for _, fd in files:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return files


def _hand_over(files: list[tuple[str, int]]) -> None:
    """The fds to 3, 4, ... (sd_listen_fds' order), inheritable; every other fd above closed."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 256) for _, fd in files]
    for index, fd in enumerate(high):
        os.dup2(fd, 3 + index, inheritable=True)
    os.closerange(3 + len(files), os.sysconf("SC_OPEN_MAX"))


class ExecProcess(WorkerProcess):
    _kill = staticmethod(os.killpg)  # the program's session: helpers it forked go with it
    heartbeats = False  # someone else's program, no channel: its silence says nothing

    def __init__(self, fn, loop, on_ready, on_gone):
        super().__init__(fn, loop, on_ready, on_gone)
        self._output: int | None = None
        self._pending = b""
        self._poll = None
        self._stale: int | None = None  # the previous instance's, while its ep files remain
        self.status = {"type": fn.type, "command": list(fn.options["command"]),
                       "open": fn.options["open"]}

    def start(self, ready_timeout: float) -> ExecProcess:
        """`ready_timeout` is the supervisor's; the template's ready_timeout wins."""
        timeout = self.fn.options.get("ready_timeout", ready_timeout)
        self._stale = _instance(self.fn.mountpoint)
        if self._stale is not None:
            log.info("%s: the previous instance's ep files are still there (its ep0 is open "
                     "elsewhere): the program starts once they are gone", self.fn.name)
        reader, writer = os.pipe()
        parent = os.getpid()
        try:
            pid = self._fork(lambda: self._child(writer, parent, timeout))
        except BaseException:
            os.close(reader)
            raise
        finally:
            os.close(writer)
        self._output = reader
        os.set_blocking(reader, False)
        self.loop.add_reader(reader, self._on_output)
        self._watch(pid, timeout, "its ep files did not appear")
        self._poll = self.loop.call_later(READY_POLL, self._check_ready)
        return self

    def _child(self, writer: int, parent: int, timeout: float) -> None:
        fn, command = self.fn, self.fn.options["command"]
        try:
            if self._stale is not None:
                _wait_gone(fn.mountpoint, self._stale, timeout)
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(writer, 1)
            os.dup2(writer, 2)
            files = _open_for_program(fn) if fn.options["open"] == "gadgetd" else []
            _hand_over(files)
            environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", **fn.options["environment"]}
            worker._no_new_privileges()
            worker.drop_privileges(fn)
            worker._die_with_parent(parent)
            if files:
                environment.update(listen_environment([n for n, _ in files], os.getpid()))
            os.chdir(fn.options["working_directory"])
            os.execve(command[0], list(command), environment)
        except BaseException as exc:
            try:
                os.write(2, f"gadgetd: cannot start {command[0]}: {exc}\n".encode())
            except OSError:
                pass
        finally:
            os._exit(127)

    def _check_ready(self) -> None:
        self._poll = None
        if not self.alive or self.ready:
            return
        if _instance(self.fn.mountpoint) not in (None, self._stale):
            self.ready = True
            self._deadline.cancel()
            self.on_ready(self)
        else:
            self._poll = self.loop.call_later(READY_POLL, self._check_ready)

    def _on_output(self) -> None:
        try:
            chunk = os.read(self._output, 65536)
        except BlockingIOError:
            return
        data = self._pending + chunk
        if chunk:
            *lines, self._pending = data.split(b"\n")
        else:
            lines, self._pending = ([data] if data else []), b""
        for line in lines:
            self._log(line.rstrip(b"\r"))
        if len(self._pending) > MAX_LINE:
            self._log(self._pending)
            self._pending = b""
        if not chunk:  # EOF: the program (and everything it started) closed its output
            self.loop.remove_reader(self._output)
            os.close(self._output)
            self._output = None

    def _log(self, line: bytes) -> None:
        for start in range(0, max(len(line), 1), MAX_LINE):
            log.info("%s: %s", self.fn.name, line[start:start + MAX_LINE].decode(errors="replace"))

    def _close(self) -> None:
        """After the exit: what the program wrote before it, then the pipe closed (a helper
        it left behind may hold it open: not waited for)."""
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        while self._output is not None and select.select([self._output], [], [], 0)[0]:
            self._on_output()
        if self._output is not None:
            if self._pending:
                self._log(self._pending)
            self.loop.remove_reader(self._output)
            os.close(self._output)
            self._output = None
        super()._close()
