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

from gadgetd import channel, syscalls, worker
from gadgetd.eventloop import EventLoop
from gadgetd.model import FunctionSpec

log = logging.getLogger(__name__)
_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # what the supervisor handles
REAP_TIMEOUT = 5.0  # seconds after SIGKILL before a worker still there is reported stuck


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
        self.stuck: str | None = None  # its kernel stack, once SIGKILL did not end it
        self._channel: socket.socket | None = None
        self._pidfd: int | None = None
        self._deadline = None

    _kill = staticmethod(os.kill)  # how signal() reaches it
    heartbeats = True  # its status messages keep coming while its loop runs: silence is a fault

    def _fork(self, child: Callable[[], None]) -> int:
        """fork(); the child runs `child` and never returns into the supervisor's code."""
        # Signals stay blocked across fork until the child has dropped the supervisor's
        # handlers and wake-up fd: one arriving in between would run the supervisor's handler
        # in the child, or write a byte into whatever file reuses the wake-up fd's number.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            raise
        if pid == 0:
            try:
                for sig in _HANDLED:
                    signal.signal(sig, signal.SIG_DFL)
                self.loop.close_in_child()
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                child()
            finally:
                os._exit(1)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return pid

    def _watch(self, pid: int, ready_timeout: float, why: str) -> None:
        """The child's exit through a pidfd, and its ready deadline."""
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)
        self.last_heard = self.loop.clock()
        self.loop.add_reader(self._pidfd, self._on_exit)
        self._deadline = self.loop.call_later(ready_timeout, lambda: self.fail(
            f"{why} within {ready_timeout:g} s"))

    def start(self, ready_timeout: float) -> WorkerProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()

        def child():
            fd = os.dup2(theirs.fileno(), 3, inheritable=False)
            os.closerange(4, os.sysconf("SC_OPEN_MAX"))
            worker.run(self.fn, socket.socket(fileno=fd), parent)

        pid = self._fork(child)
        theirs.close()
        self._channel = ours
        self.loop.add_reader(ours.fileno(), self._on_channel)
        self._watch(pid, ready_timeout, "did not get ready")
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
            self.loop.call_later(REAP_TIMEOUT, self._check_reaped)
        self.signal(signal.SIGKILL)

    def _check_reaped(self) -> None:
        """Still there after SIGKILL: stuck in the kernel. Say where, and keep waiting for its
        pidfd (the loop, the watchdog and the other workers go on meanwhile)."""
        if self.alive and self.stuck is None:
            self.stuck = kernel_stack(self.pid)
            log.error("worker %d (%s) is stuck in the kernel %.0f s after SIGKILL (%s): %s",
                      self.pid, self.fn.name, REAP_TIMEOUT, self.failure, self.stuck)

    def signal(self, sig: int) -> None:
        if self.alive:
            try:
                self._kill(self.pid, sig)
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
        waits = ((1.0, None),) if self.stuck else ((timeout, signal.SIGKILL), (REAP_TIMEOUT, None))
        for wait, escalate in waits:
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
        self.stuck = self.stuck or kernel_stack(self.pid)
        log.error("worker %d (%s) could not be reaped: stuck in the kernel: %s", self.pid,
                  self.fn.name, self.stuck)
        self._close()
        return False


def kernel_stack(pid: int) -> str:
    """State and kernel stack of a task on one line, innermost frame first."""
    task = syscalls.task_state(pid)
    frames = [frame.split("+")[0] for frame in task.get("stack", [])]
    return f"state {task['state']}: " + " < ".join(frames)


def _readable(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, timeout) * 1000))
