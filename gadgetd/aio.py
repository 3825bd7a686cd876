"""Asynchronous endpoint I/O with Linux AIO (python-libaio), polled from the daemon's epoll loop.

A fixed pool of page-aligned buffers bounds memory; each completion runs a callback. Submitting
to a disabled endpoint fails fast (the ep files are opened O_NONBLOCK) instead of blocking.
Blocks a completion submits again go back to the kernel together, in one io_submit once the
completions at hand are processed: half the Python and syscall cost per request of one io_submit
each.
"""

from __future__ import annotations

import errno
import mmap
import select
import time

import libaio


class AioQueue:
    """One AIO context plus an eventfd that epoll watches for completions."""

    def __init__(self, depth: int):
        self.ctx = libaio.AIOContext(depth)
        self.eventfd = libaio.EventFD(flags=libaio.EFD_NONBLOCK | libaio.EFD_CLOEXEC)
        self.in_flight = 0
        self._again: list[tuple[libaio.AIOBlock, list, object]] = []

    def fileno(self) -> int:
        return self.eventfd.fileno()

    def block(self, mode, target_file, on_completion) -> libaio.AIOBlock:
        return libaio.AIOBlock(mode=mode, target_file=target_file, eventfd=self.eventfd,
                               onCompletion=on_completion)

    def submit(self, block: libaio.AIOBlock) -> bool:
        """Queue one block; False when the endpoint is not enabled (EAGAIN/ESHUTDOWN)."""
        try:
            self.ctx.submit([block])
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ESHUTDOWN):
                return False
            raise
        self.in_flight += 1
        return True

    def resubmit(self, block: libaio.AIOBlock, idle: list, item) -> None:
        """From a completion callback: submit `block` again with the other blocks the current
        completions give back; if the endpoint refuses it, `item` goes back to `idle`."""
        self._again.append((block, idle, item))

    def process(self) -> None:
        """Run callbacks of finished blocks (called when the eventfd is readable)."""
        try:
            self.eventfd.read()
        except BlockingIOError:
            return
        # One io_getevents takes every completion there is (nr >= in flight); one that lands
        # after it signals the eventfd again. Reaping until none was left cost a second
        # io_getevents per wake-up, one syscall of the five the data path made per request.
        if self.in_flight:
            self._reap()
        if self._again:
            self._submit_again()

    def _submit_again(self) -> None:
        again, self._again = self._again, []
        try:
            done = self.ctx.submit([block for block, _, _ in again])
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ESHUTDOWN):
                raise
            done = 0
        self.in_flight += done
        for block, idle, item in again[done:]:  # past a refusal: each on its own
            if not self.submit(block):
                idle.append(item)

    def _reap(self) -> int:
        """Collect finished blocks (running their callbacks) without waiting. Waiting is done on
        the eventfd: python-libaio's timespec is 64-bit, which a 32-bit libaio.so.1 (bookworm
        armel, the Pi Zero) reads as a C long, losing any fraction of a second."""
        try:
            done = len(self.ctx.getEvents(min_nr=0, timeout=0))
        except InterruptedError:
            return 0
        self.in_flight -= done
        return done

    def cancel_all(self, timeout: float = 5.0) -> int:
        """Cancel what is in flight and reap the completions; returns blocks still unaccounted."""
        if self.in_flight:
            # f_fs dequeues the request; its completion (-ECONNRESET) arrives through the ring.
            results = self.ctx.cancelAll()
            self.in_flight -= sum(r is not None for r in results)
            deadline = time.monotonic() + timeout
            while self.in_flight and time.monotonic() < deadline:
                select.select([self.eventfd], [], [], 0.1)
                self.process()
        return self.in_flight

    def close(self) -> None:
        try:
            self.cancel_all()
        finally:
            self.ctx.close()
            self.eventfd.close()


def buffer_pool(count: int, size: int) -> list[mmap.mmap]:
    """Anonymous mappings: page aligned, as some UDCs need for DMA."""
    return [mmap.mmap(-1, size) for _ in range(count)]
