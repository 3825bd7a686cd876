"""Host-side traffic that keeps a FunctionFS gadget's ep0 (and so ffs->mutex) busy.

Used by `gadgetd repro` when this machine's host controller sees the gadget, and by
`gadgetd-hil drive` on a separate host against a board. Every action tolerates the device going
away (that is what re-enumeration does) and is counted by outcome.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections import Counter

import usb.core

from gadgetd.host.device import (
    ECHO_IN,
    ECHO_OUT,
    STATUS,
    VENDOR_IN,
    VENDOR_OUT,
    DeviceSelector,
    wait_for_device,
)

TIMEOUT_MS = 1000


def outcome(exc: Exception | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, usb.core.USBTimeoutError):
        return "timeout"
    if isinstance(exc, usb.core.USBError) and exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def set_interface(dev, alt: int, interface: int = 0) -> str:
    """Raw SET_INTERFACE (pyusb's helper would hide a STALL)."""
    try:
        dev.ctrl_transfer(0x01, 0x0B, alt, interface, None, TIMEOUT_MS)
        return "ok"
    except (usb.core.USBError, ValueError) as exc:
        return outcome(exc)


def set_configuration(dev, value: int = 1) -> str:
    try:
        dev.set_configuration(value)
        return "ok"
    except (usb.core.USBError, ValueError) as exc:
        return outcome(exc)


class Storm:
    """A background thread cycling through ep0 traffic: vendor transfers with 4 KiB data stages,
    SET_INTERFACE, SET_CONFIGURATION and, every `reset_every` rounds, a port reset."""

    def __init__(self, selector: DeviceSelector, reset_every: int = 25,
                 quiet_file: str | None = None):
        self.selector, self.reset_every, self.quiet_file = selector, reset_every, quiet_file
        self.silent = False
        self.counts: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="host-storm", daemon=True)

    def start(self) -> Storm:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(30)
        return dict(self.counts)

    def _device(self):
        while self._hold_while_quiet():
            try:
                return wait_for_device(self.selector, 1.0)
            except TimeoutError:
                self.counts["waiting_for_device"] += 1
        return None

    @staticmethod
    def _actions(dev, payload: bytes):
        return (
            ("echo_out", lambda: dev.ctrl_transfer(VENDOR_OUT, ECHO_OUT, 0, 0, payload, TIMEOUT_MS)),
            ("echo_in", lambda: dev.ctrl_transfer(VENDOR_IN, ECHO_IN, 0, 0, 4096, TIMEOUT_MS)),
            ("status", lambda: dev.ctrl_transfer(VENDOR_IN, STATUS, 0, 0, 4096, TIMEOUT_MS)),
            ("set_interface", lambda: set_interface(dev, 0)),
            ("set_configuration", lambda: set_configuration(dev, 1)),
        )

    def quiet(self) -> bool:
        """Whether the board asked for silence (the quiet file exists: see host_report). Opened,
        not stat'ed: over sshfs a removed file's attributes stay cached for 20 s; open asks."""
        if not self.quiet_file:
            return False
        try:
            os.close(os.open(self.quiet_file, os.O_RDONLY))
        except FileNotFoundError:
            return False
        return True

    def _hold_while_quiet(self) -> bool:
        """In this thread, before a request: wait while asked for silence (saying so in
        `silent`, which drive's report carries); False once stopped."""
        while self.quiet() and not self._stop.is_set():
            self.silent = True  # the thread itself has seen it: nothing is in flight
            self._stop.wait(0.05)
        self.silent = False
        return not self._stop.is_set()

    def _run(self) -> None:
        payload = os.urandom(4096)
        dev = None
        for round_no in range(1, 1 << 62):
            if not self._hold_while_quiet():
                return
            dev = dev or self._device()
            if dev is None:
                return
            for name, action in self._actions(dev, payload):
                if self.quiet():  # asked between two requests: not one more
                    break
                try:
                    result = action()
                    result = result if isinstance(result, str) else "ok"
                except (usb.core.USBError, ValueError) as exc:
                    result = outcome(exc)
                self.counts[f"{name}:{result}"] += 1
                if result in ("ENODEV", "ENOENT", "EIO", "ValueError"):
                    dev = None  # gone or re-enumerating: find it again
                    self.counts["disconnects"] += 1
                    break
            if dev is not None and round_no % self.reset_every == 0 and not self.quiet():
                try:
                    dev.reset()
                    self.counts["port_reset:ok"] += 1
                except usb.core.USBError as exc:
                    self.counts[f"port_reset:{outcome(exc)}"] += 1
                dev = None


def report_line(seq: int, counts: dict, quiet: bool = False) -> str:
    """One line of `drive --report` (read by gadgetd.repro.host_report on the board)."""
    return json.dumps({"seq": seq, "t": round(time.time(), 3), "counts": dict(counts),
                       "quiet": quiet})
