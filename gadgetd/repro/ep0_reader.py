"""A FunctionFS function of repro's own that reads ep0 the way a naive program does: blocking
reads, one after another. It runs in a child process, so a read stuck in the kernel never takes
repro with it.

    python -m gadgetd.repro.ep0_reader EP0 DESCRIPTORS STRINGS

It opens ep0 (blocking), writes the two blobs (the instance becomes ACTIVE, its ep files appear)
and says {"active": pid}. Then, one command a line on stdin, one JSON answer a line on stdout:
    drain   the events already queued, without waiting          -> {"events": [...]}
    hold    one blocking read(ep0) with nothing queued: it waits for an event, inside f_fs
            (where the kernel holds ffs->mutex over that wait, any opener waits too); says
            {"holding": ns} first, then {"returned": ns, "events": [...]} or, once SIGUSR1
            ends the wait, {"released": ns}
    loop    blocking reads until SIGUSR1, the next one issued as soon as one returns (a program's
            event loop; after FUNCTIONFS_UNBIND the next read races the unbind's own use of
            ffs->mutex); a line per read once it returned: {"issued": ns, "returned": ns,
            "events": [...]}, then {"issued": ns, "loop_end": ns} for the interrupted one
Timestamps are CLOCK_MONOTONIC nanoseconds, comparable with the parent's. EOF closes ep0.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import sys
import threading
import time
from pathlib import Path

from gadgetd import syscalls, wire

READ_SIZE = wire.EVENT_SIZE * wire.MAX_EVENTS


class Released(Exception):
    """SIGUSR1: the parent ends a wait."""


class Reader:
    def __init__(self, ep0: Path):
        self.fd = os.open(ep0, os.O_RDWR | os.O_CLOEXEC)
        self.in_read = False  # SIGUSR1 interrupts a read; anywhere else it waits for the next
        self.pending = False
        self.lines: queue.Queue = queue.Queue()
        signal.signal(signal.SIGUSR1, self._on_release)
        threading.Thread(target=self._emitter, daemon=True).start()

    def _on_release(self, signum, frame) -> None:
        if self.in_read:
            raise Released
        self.pending = True

    def _emitter(self) -> None:
        """Lines go out from a thread of their own: the reading thread queues a line and is in
        its next read at once (that gap is what read_after_unbind measures). SIGUSR1 is
        blocked here: it must interrupt the reading thread's read."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        while True:
            _emit(self.lines.get())
            self.lines.task_done()

    def read(self) -> tuple[int, list[str]]:
        """One blocking read(ep0): (return time, event names). Raises Released."""
        if self.pending:
            self.pending = False
            raise Released
        self.in_read = True
        try:
            while True:
                try:
                    buf = syscalls.read_interruptible(self.fd, READ_SIZE)
                    break
                except InterruptedError:
                    continue  # SIGUSR1's handler raises Released before the read is reissued
        finally:
            self.in_read = False
        return time.monotonic_ns(), [e.name for e in wire.parse_events(buf)]

    def drain(self) -> list[str]:
        events = []
        while select.select([self.fd], [], [], 0)[0]:
            events += self.read()[1]
        return events

    def hold(self) -> dict:
        self.lines.put({"holding": time.monotonic_ns()})
        self.lines.join()
        try:
            returned, events = self.read()
        except Released:
            return {"released": time.monotonic_ns()}
        return {"returned": returned, "events": events}

    def loop(self) -> dict:
        while True:
            issued = time.monotonic_ns()
            try:
                returned, events = self.read()
            except Released:  # the last read, interrupted: when it was issued still counts
                return {"issued": issued, "loop_end": time.monotonic_ns()}
            self.lines.put({"issued": issued, "returned": returned, "events": events})


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    ep0, descriptors, strings = map(Path, argv)
    reader = Reader(ep0)
    os.write(reader.fd, descriptors.read_bytes())
    os.write(reader.fd, strings.read_bytes())
    _emit({"active": os.getpid()})
    for line in sys.stdin:
        command = line.strip()
        answer = {"drain": lambda: {"events": reader.drain()}, "hold": reader.hold,
                  "loop": reader.loop}[command]()
        reader.lines.put(answer)
        reader.lines.join()
    os.close(reader.fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
