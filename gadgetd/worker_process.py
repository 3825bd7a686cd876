"""One function worker as the supervisor sees it: forked, ready, ended.

The child runs gadgetd.worker. Its channel and a pidfd are watched by the supervisor's event
loop, so nothing here blocks: a failure (an error message, a malformed one, EOF, a missed ready
deadline) sends SIGKILL, and the pidfd reports the exit. `on_ready` and `on_gone` tell the owner.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable

from gadgetd import channel, worker
from gadgetd.eventloop import EventLoop
from gadgetd.model import FunctionSpec

log = logging.getLogger(__name__)


class WorkerProcess:
    def __init__(self, fn: FunctionSpec, loop: EventLoop, on_ready: Callable, on_gone: Callable):
        self.fn, self.loop = fn, loop
        self.on_ready, self.on_gone = on_ready, on_gone
        self.pid = 0
        self.ready = False
        self.status: dict | None = None
        self.last_heard = 0.0
        self.failure: str | None = None  # why it is being ended, once it is
        self.exit_status: int | None = None
        self._channel: socket.socket | None = None
        self._pidfd: int | None = None
        self._deadline = None

    def start(self, ready_timeout: float) -> WorkerProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child never returns into the supervisor's code, whatever happens
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)  # first: forget the supervisor's handling
                self.loop.close_in_child()
                fd = os.dup2(theirs.fileno(), 3, inheritable=False)
                os.closerange(4, os.sysconf("SC_OPEN_MAX"))
                worker.run(self.fn, socket.socket(fileno=fd), parent)
            finally:
                os._exit(1)
        theirs.close()
        self.pid, self._channel = pid, ours
        self._pidfd = os.pidfd_open(pid)
        self.last_heard = self.loop.clock()
        self.loop.add_reader(ours.fileno(), self._on_channel)
        self.loop.add_reader(self._pidfd, self._on_exit)
        self._deadline = self.loop.call_later(ready_timeout, lambda: self.fail(
            f"did not get ready within {ready_timeout:g} s"))
        return self

    @property
    def alive(self) -> bool:
        return self._pidfd is not None

    def _on_channel(self) -> None:
        try:
            message = channel.receive(self._channel)
        except channel.ChannelError as exc:
            self.fail(f"sent a malformed message: {exc}")
            return
        except OSError as exc:
            message = None
            self.failure = self.failure or f"channel failed: {exc}"
        if message is None:  # EOF: the child is exiting; its pidfd says when it is gone
            self.loop.remove_reader(self._channel.fileno())
            self.fail(self.failure or "worker exited")
            return
        self.last_heard = self.loop.clock()
        if isinstance(message, channel.Error):
            self.fail(message.error)
            return
        self.status = message.status
        if isinstance(message, channel.Ready) and not self.ready:
            self.ready = True
            self._deadline.cancel()
            self.on_ready(self)

    def fail(self, reason: str) -> None:
        """End the worker for `reason` (the first reason given is the one reported)."""
        if self.failure is None:
            self.failure = reason
        self.signal(signal.SIGKILL)

    def signal(self, sig: int) -> None:
        if self.alive:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def _on_exit(self) -> None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if not pid:
            return
        self.exit_status = os.waitstatus_to_exitcode(status)
        self._close()
        self.on_gone(self, self.failure or "worker exited", self.exit_status)

    def _close(self) -> None:
        self.ready = False
        if self._deadline is not None:
            self._deadline.cancel()
        if self._channel is not None:
            self.loop.remove_reader(self._channel.fileno())
            self._channel.close()
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def end(self, sig: int, timeout: float) -> bool:
        """Teardown: signal the worker and wait for it (bounded, outside the loop's handlers).
        False when it did not exit in time even after SIGKILL (a task stuck in the kernel)."""
        if not self.alive:
            return True
        self.signal(sig)
        for wait, escalate in ((timeout, signal.SIGKILL), (5.0, None)):
            end = time.monotonic() + wait
            while time.monotonic() < end:
                if _readable(self._pidfd, end - time.monotonic()):
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                    if pid:
                        self.exit_status = os.waitstatus_to_exitcode(status)
                        self._close()
                        return True
            if escalate is not None:
                log.error("worker %d (%s) did not stop: killing it", self.pid, self.fn.name)
                self.signal(escalate)
        log.error("worker %d (%s) could not be reaped: stuck in the kernel?", self.pid,
                  self.fn.name)
        self._close()
        return False


def _readable(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, timeout) * 1000))
