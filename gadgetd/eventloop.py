"""The one event loop of the supervisor and of every worker: epoll readiness handlers, timers,
and a wake-up fd so that a signal ends the wait at once. Handlers must not block; whatever has
to wait does it through a timer or a readiness handler.
"""

from __future__ import annotations

import heapq
import itertools
import select
import signal
import socket
import time
from collections.abc import Callable


class Timer:
    def __init__(self, when: float, callback: Callable[[], None]):
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_wait: float = 1.0):
        self.clock, self.max_wait = clock, max_wait
        self._poller = select.epoll()
        self._handlers: dict[int, Callable[[], None]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self.add_reader(self._wake_r.fileno(), self._drain_wakeups)
        self._old_wakeup: int | None = None
        self.stopped = False

    # --- readiness --------------------------------------------------------------------------
    def add_reader(self, fd: int, handler: Callable[[], None], events: int = select.EPOLLIN):
        self._poller.register(fd, events)
        self._handlers[fd] = handler

    def remove_reader(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            try:
                self._poller.unregister(fd)
            except (OSError, ValueError):
                pass  # already closed: epoll dropped it

    # --- timers -----------------------------------------------------------------------------
    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(self.clock() + delay, callback)

    def every(self, interval: float, callback: Callable[[], None]) -> None:
        """Run `callback` now and then every `interval` seconds for the loop's life."""
        def tick():
            callback()
            self.call_later(interval, tick)

        self.call_later(0, tick)

    # --- signals ----------------------------------------------------------------------------
    def wake_on_signals(self) -> None:
        """Make a signal handler's return end the current wait (signal.set_wakeup_fd)."""
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    # --- running ----------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopped = True

    def run_once(self) -> None:
        self._run_due_timers()
        if self.stopped:
            return
        wait = self.max_wait
        if self._timers:
            wait = max(0.0, min(wait, self._timers[0][0] - self.clock()))
        for fd, _ in self._poller.poll(wait):
            handler = self._handlers.get(fd)
            if handler is not None:  # an earlier handler of this round may have removed it
                handler()
        self._run_due_timers()

    def _run_due_timers(self) -> None:
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        while not self.stopped and not until():
            self.run_once()

    def close(self) -> None:
        if self._old_wakeup is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            self._old_wakeup = None
        self._poller.close()
        self._wake_r.close()
        self._wake_w.close()
        self._handlers.clear()
        self._timers.clear()

    def close_in_child(self) -> None:
        """After fork: drop the parent's loop without touching its signal state (the child
        resets signals itself) and without unregistering anything from the shared epoll."""
        signal.set_wakeup_fd(-1)
        for closable in (self._poller, self._wake_r, self._wake_w):
            closable.close()
