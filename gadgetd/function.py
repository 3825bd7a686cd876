"""Serving one FunctionFS instance: ep0 events, SETUP dispatch, counters.

Function types (gadgetd.functions.*) subclass FunctionServer to add their vendor requests and
data path. Nothing a host sends may raise out of here: a request that fails is STALLed and counted.
"""

from __future__ import annotations

import errno
import logging
import struct
import time
from collections import Counter

from functionfs import ch9

from gadgetd import dmabuf, wire
from gadgetd.aio import AioQueue
from gadgetd.ffs import DATA_STAGE_TIMEOUT, DataStageTimeout, Ep0, SetupCancelled
from gadgetd.model import FunctionSpec

log = logging.getLogger(__name__)


class Warnings:
    """Per-request warnings, at most LIMIT a second for each kind; the rest are counted and the
    count logged once that second is over (a host flooding bad requests cannot flood the log,
    and nothing it sent goes unsaid)."""

    LIMIT = 10

    def __init__(self, name: str, clock=time.monotonic):
        self.name, self.clock = name, clock
        self._windows: dict[str, list] = {}  # kind -> [window start, shown, suppressed]

    def warn(self, kind: str, fmt: str, *args) -> None:
        self.flush()
        window = self._windows.setdefault(kind, [self.clock(), 0, 0])
        if window[1] < self.LIMIT:
            window[1] += 1
            log.warning("%s: " + fmt, self.name, *args)
        else:
            window[2] += 1

    def flush(self, final: bool = False) -> None:
        """Say how many were held back in every window that is over (every one, if final)."""
        now = self.clock()
        for kind, (start, _, suppressed) in list(self._windows.items()):
            if final or now - start >= 1.0:
                del self._windows[kind]
                if suppressed:
                    log.warning("%s: %d more %s warnings in %.1f s", self.name, suppressed,
                                kind, now - start)


class Stall(Exception):
    """Raised by a request handler to refuse the request (the host sees EPIPE)."""


class FunctionServer:
    ffs_flags = 0  # FunctionFS descriptor flags the type needs (ALL_CTRL_RECIP, ...)
    vendor_requests: dict[int, str] = {}  # bRequest -> method name, for vendor requests

    def __init__(self, spec: FunctionSpec, ep0: Ep0, endpoints: list):
        self.spec, self.ep0, self.endpoints = spec, ep0, endpoints
        self.events: Counter = Counter()
        self.counters: Counter = Counter()
        self.enabled = False
        self.warnings = Warnings(spec.name)

    # --- what the daemon's loop polls -------------------------------------------------------
    def handlers(self) -> dict[int, object]:
        """fd -> callable run when the fd is readable."""
        return {self.ep0.fileno(): self.handle_ep0}

    def handle_ep0(self) -> None:
        for event in self.ep0.read_events():
            self.events[event.name] += 1
            log.debug("%s: event %s %s", self.spec.name, event.name, event.setup or "")
            if event.setup is not None:
                self._setup(event.setup)
                continue
            try:
                getattr(self, f"on_{event.name.lower()}", self.on_unknown)()
            except OSError as exc:
                # The host changes state faster than we read events; the next event fixes it.
                self.counters["event_errors"] += 1
                self.warnings.warn("event", "handling %s failed: %s", event.name, exc)

    def _setup(self, setup: wire.Setup) -> None:
        self.counters["setups"] += 1
        handler = self.setup_handler(setup)
        try:
            try:
                if handler is None:
                    raise Stall()
                handler(setup)
            except Stall:
                self.counters["stalls"] += 1
                self.warnings.warn("stall", "STALLed %s", setup)
                self.ep0.stall(setup)
        except SetupCancelled:
            self.counters["setups_cancelled"] += 1
        except DataStageTimeout:
            # f_fs dequeued the stage but still holds the SETUP pending (ep0 polls readable and
            # a read would STALL and fail): STALL it ourselves; the host's next SETUP clears it.
            self.counters["data_stage_timeouts"] += 1
            self.warnings.warn("data stage", "%s: the host did not complete the data stage in "
                               "%g s: dequeued and STALLed", setup, DATA_STAGE_TIMEOUT)
            self.ep0.stall(setup)
        except OSError as exc:
            # The host went away mid-request, or the data stage failed: its problem, not ours.
            self.counters["setup_errors"] += 1
            self.warnings.warn("request", "%s failed: %s", setup, exc)

    def setup_handler(self, setup: wire.Setup):
        """The method answering `setup`, or None to STALL it."""
        if setup.kind == ch9.USB_TYPE_VENDOR:
            name = self.vendor_requests.get(setup.request)
            return getattr(self, name) if name else None
        if (setup.kind == ch9.USB_TYPE_STANDARD and setup.request == ch9.USB_REQ_GET_STATUS
                and setup.recipient == ch9.USB_RECIP_INTERFACE and setup.is_in):
            return self._get_interface_status
        return None

    def _get_interface_status(self, setup: wire.Setup) -> None:
        self.ep0.reply(struct.pack("<H", 0)[: setup.length])

    # --- events -----------------------------------------------------------------------------
    def on_bind(self):
        pass

    def on_unbind(self):
        self.on_disable()

    def on_enable(self):
        # ENABLE repeats without DISABLE when the host sends SET_INTERFACE.
        self.enabled = True
        self.counters["enables"] += 1

    def on_disable(self):
        self.enabled = False

    def on_suspend(self):
        pass

    def on_resume(self):
        pass

    def on_unknown(self):
        self.counters["unknown_events"] += 1

    # --- state ------------------------------------------------------------------------------
    def status(self) -> dict:
        self.warnings.flush()  # called every second: what was held back is said
        return {
            "name": self.spec.name,
            "type": self.spec.type,
            "enabled": self.enabled,
            "events": dict(self.events),
            "counters": dict(self.counters),
            "ep0_retries": self.ep0.stats.as_dict(),
        }

    def close(self) -> None:
        self.warnings.flush(final=True)
        for f in self.endpoints:
            f.close()
        self.ep0.close()


class AioFunction(FunctionServer):
    """A function whose endpoint I/O runs through one AIO queue (see gadgetd.aio)."""

    CANCELLED = (-errno.ESHUTDOWN, -errno.ECONNRESET)

    def __init__(self, spec: FunctionSpec, ep0: Ep0, endpoints: list, depth: int):
        super().__init__(spec, ep0, endpoints)
        self.queue = AioQueue(depth)
        self.running = False
        self.dmabuf: str | None = None  # what the kernel said (gadgetd.dmabuf.probe)
        directions = [e.is_in for e in spec.endpoints]  # endpoint files follow descriptor order
        self.ep_in = endpoints[directions.index(True)] if True in directions else None
        self.ep_out = endpoints[directions.index(False)] if False in directions else None

    def handlers(self) -> dict[int, object]:
        return {**super().handlers(), self.queue.fileno(): self.queue.process}

    def on_enable(self):
        """Once an endpoint is enabled, ask the kernel whether DMABUF could carry the data
        (gadgetd.dmabuf); the answer is logged and kept in the status. AIO carries it."""
        super().on_enable()
        ep = self.ep_in or self.ep_out
        if ep is not None and (self.dmabuf is None or self.dmabuf.startswith("unknown")):
            answer = dmabuf.probe(ep.fileno())
            if answer != self.dmabuf:
                log.info("%s: DMABUF %s; data path: AIO", self.spec.name, answer)
            self.dmabuf = answer

    def status(self) -> dict:
        return {**super().status(), "dmabuf": self.dmabuf}

    def on_disable(self):
        super().on_disable()
        self.running = False  # in-flight requests complete with ESHUTDOWN and stay idle

    def failed(self, direction: str, res: int) -> bool:
        """Count a failed request; True when the endpoint is just not enabled (EAGAIN: newer
        kernels report I/O on a disabled endpoint as a completion, not as a submit error)."""
        if res == -errno.EAGAIN:
            return True
        cancelled = res in self.CANCELLED
        self.counters[f"{direction}_cancelled" if cancelled else f"{direction}_errors"] += 1
        if not cancelled:
            self.warnings.warn(f"bulk {direction}", "bulk %s failed: %s", direction.upper(),
                               errno.errorcode.get(-res, res))
        return False

    def close(self) -> None:
        self.running = False
        try:
            left = self.queue.cancel_all()
            if left:
                log.error("%s: %d AIO blocks did not finish after cancel", self.spec.name, left)
            self.queue.close()
        finally:
            super().close()
