"""Each function's worker as a state of the supervisor's loop: starting -> ready -> dead (with a
retry time) -> starting ... Driven by the loop's timers and the workers' own events: nothing
sleeps, so the watchdog and every other worker keep being served during a slow recovery.

A worker that fails before every worker was first ready ends the run (a template the board cannot
serve should fail loudly, not loop); after that, a dead worker is restarted with bounded
exponential backoff, always after the UDC was unbound (reopening a deactivated instance that is
still bound deadlocks kernels whose open() takes ffs->mutex).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gadgetd.model import FunctionSpec

log = logging.getLogger(__name__)
READY_TIMEOUT = 60.0  # seconds a worker may take to open ep0 and its ep files
FIRST_BACKOFF, MAX_BACKOFF = 0.1, 10.0
STARTING, READY, DEAD = "starting", "ready", "dead"


@dataclass
class Slot:
    fn: FunctionSpec
    worker: object = None  # a WorkerProcess (or a test's stand-in)
    state: str = DEAD
    backoff: float = FIRST_BACKOFF
    retry_at: float | None = None
    failure: dict | None = None  # the failure being recovered from
    last_error: str | None = None

    def status(self) -> dict:
        """This function in the status file: the worker's own report under the supervisor's
        fields (a worker cannot pass itself off as another pid, user or state)."""
        w = self.worker
        return {**((w and w.status) or {}),
                "pid": w.pid if w else None, "user": self.fn.user,
                "ready": bool(w and w.ready), "state": "stuck" if w and w.stuck else self.state,
                "stack": w.stuck if w else None, "last_error": self.last_error}


@dataclass
class Recovery:
    """`spawn(fn, on_ready, on_gone)` starts a worker; `unbind()` and `bind()` act on the UDC;
    `fatal(message)` ends the run. The loop provides call_at/call_later and clock."""

    loop: object
    spawn: Callable
    unbind: Callable[[], None]
    bind: Callable[[], None]
    fatal: Callable[[str], None]
    slots: dict[str, Slot] = field(default_factory=dict)
    recoveries: list[dict] = field(default_factory=list)
    ready_once: bool = False
    stopping: bool = False

    def start(self, functions: dict[str, FunctionSpec]) -> None:
        """Spawn every worker; bind once all are ready (at once when there are none: a gadget
        of kernel functions only)."""
        self.slots = {name: Slot(fn) for name, fn in functions.items()}
        for slot in self.slots.values():
            self._spawn(slot)
        if not self.slots:
            self.ready_once = True
            self.bind()

    @property
    def all_ready(self) -> bool:
        return all(s.state == READY for s in self.slots.values())

    def _spawn(self, slot: Slot) -> None:
        slot.state, slot.retry_at = STARTING, None
        try:
            slot.worker = self.spawn(slot.fn, lambda w, s=slot: self._ready(s, w),
                                     lambda w, reason, status, s=slot: self._gone(s, w, reason, status))
        except OSError as exc:  # fork or socketpair failed: try again later like any failure
            self._gone(slot, None, f"cannot start a worker: {exc}", None)

    def _ready(self, slot: Slot, worker) -> None:
        if worker is not slot.worker:
            return
        slot.state, slot.backoff = READY, FIRST_BACKOFF
        log.info("function %s served by pid %d as %s", slot.fn.name, worker.pid,
                 slot.fn.user)
        if slot.failure is not None:
            took = self.loop.clock() - slot.failure["since"]
            self.recoveries.append({"function": slot.fn.name, "reason": slot.failure["reason"],
                                    "seconds": round(took, 3), "at": time.time()})
            log.info("function %s recovered in %.0f ms", slot.fn.name, took * 1e3)
            slot.failure = None
        if self.all_ready:
            self.ready_once = True
            self.bind()

    def _gone(self, slot: Slot, worker, reason: str, status) -> None:
        if worker is not None and worker is not slot.worker or self.stopping:
            return
        slot.last_error = reason
        if not self.ready_once:
            self.fatal(f"function {slot.fn.name}: worker did not get ready: {reason}")
            return
        log.warning("function %s: %s (exit status %s): recovering", slot.fn.name, reason, status)
        now = self.loop.clock()
        first = slot.failure is None  # the first restart is at once; repeated ones back off
        if first:
            slot.failure = {"reason": reason, "since": now}
        self.unbind()  # before the instance is reopened (see the module docstring)
        slot.state, slot.worker = DEAD, None
        slot.retry_at = now if first else now + slot.backoff
        if not first:
            log.error("function %s: restart failed; retrying in %.1f s", slot.fn.name,
                      slot.backoff)
            slot.backoff = min(slot.backoff * 2, MAX_BACKOFF)
        self.loop.call_at(slot.retry_at, lambda: self._retry(slot))

    def _retry(self, slot: Slot) -> None:
        if slot.state == DEAD and not self.stopping:
            self._spawn(slot)

    def workers(self) -> list:
        return [s.worker for s in self.slots.values() if s.worker is not None]
