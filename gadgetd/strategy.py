"""One strategy for "serve a template and bring the gadget to a state" (labgrid's pattern: only a
strategy changes the target's state). Used by repro's rig, `gadgetd-hil local`, the VM tests and
the bench, all through the real `gadgetd run`.

States, each reached from the one before it:
    absent       no daemon of ours, no gadget of this name in configfs
    served       `gadgetd run` is up: its runstate names its pid and a bound UDC, ep files exist
    enumerated   served, and the UDC reports the host configured the device
    deactivated  the daemon was killed (SIGKILL): every FunctionFS file closed at once; with
                 no_disconnect=1 the instance is DEACTIVATED while the gadget stays bound
    unbound      the UDC unbound (the daemon left running or not)
Board-side only: the host's view (pyusb) is the caller's business.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gadgetd import configfs, runstate, template, udc
from gadgetd.errors import SetupError

STATES = ("absent", "served", "enumerated", "deactivated", "unbound")
USB_DEVICES = Path("/sys/bus/usb/devices")


def local_host_sees(spec, timeout: float) -> bool:
    """Whether this machine's own host controller (dummy_hcd, a board that is its own host)
    enumerated the gadget within `timeout`: read from sysfs, no USB library needed."""
    wanted = (f"{spec.id_vendor:04x}", f"{spec.id_product:04x}")
    deadline = time.monotonic() + timeout
    while True:
        for d in USB_DEVICES.glob("*"):
            try:
                if ((d / "idVendor").read_text().strip(),
                        (d / "idProduct").read_text().strip()) == wanted:
                    return True
            except OSError:
                continue
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


class GadgetStrategy:
    def __init__(self, template_path: str | Path, daemon_args: tuple[str, ...] = (),
                 log_file=None, command: tuple[str, ...] = (sys.executable, "-m", "gadgetd")):
        self.template_path = str(template_path)
        self.spec = template.load(self.template_path)
        self.daemon_args, self.command = tuple(daemon_args), tuple(command)
        self.gadget_dir = configfs.gadget_dir(self.spec.name)
        self.log = log_file if log_file is not None else tempfile.TemporaryFile("w+")
        self.daemon: subprocess.Popen | None = None
        self.state = "absent"

    @property
    def ep_files(self) -> list[Path]:
        return [fn.mountpoint / f"ep{i}" for fn in self.spec.ffs_functions.values()
                for i in range(1, len(fn.endpoints) + 1)]

    def transition(self, state: str, timeout: float = 60.0) -> None:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r} (one of {', '.join(STATES)})")
        getattr(self, f"_to_{state}")(timeout)
        self.state = state

    def start(self, *extra_args: str) -> subprocess.Popen:
        """Exec `gadgetd run` without waiting (the bench times bring-up with its own watcher)."""
        # A file of our own keeps one run's log; a terminal, a pipe or /dev/null (seekable,
        # but ftruncate fails with EINVAL) is written as it is.
        if stat.S_ISREG(os.fstat(self.log.fileno()).st_mode):
            self.log.seek(0)
            self.log.truncate()
        self.daemon = subprocess.Popen([*self.command, "run", self.template_path,
                                        *self.daemon_args, *extra_args], stderr=self.log,
                                       text=True)
        return self.daemon

    def _to_served(self, timeout: float) -> None:
        if self.daemon is None or self.daemon.poll() is not None:
            self.start()
        self._wait(timeout, "bind the UDC", self.is_served)

    def _to_enumerated(self, timeout: float) -> None:
        if not self.is_served():
            self._to_served(timeout)
        self._wait(timeout, "be configured by the host",
                   lambda: self.is_served() and self.udc_state() == "configured")

    def _to_deactivated(self, timeout: float) -> None:
        if self.daemon is None:
            raise SetupError("deactivated: no daemon of ours to kill")
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait(timeout)
        self.daemon = None
        deadline = time.monotonic() + min(timeout, 10)
        while any(p.exists() for p in self.ep_files) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _to_unbound(self, timeout: float) -> None:
        udc.unbind(self.gadget_dir)

    def _to_absent(self, timeout: float) -> None:
        self.stop(timeout=timeout)
        if self.gadget_dir.exists():  # a killed daemon's leftovers
            failures = configfs.remove_gadget(self.spec.name)
            if failures:
                raise SetupError(f"absent: could not remove {self.spec.name}: {failures[0]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        """Stop our daemon (SIGTERM: it tears its gadget down); its exit status, None if none ran."""
        if self.daemon is None:
            return None
        if self.daemon.poll() is None:
            self.daemon.send_signal(sig)
        try:
            status = self.daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            status = self.daemon.wait()
        self.daemon = None
        return status

    # --- observations -----------------------------------------------------------------------
    def is_served(self) -> bool:
        state = runstate.read(self.spec.name) or {}
        return (self.daemon is not None and state.get("pid") == self.daemon.pid
                and bool(state.get("bound")) and all(p.exists() for p in self.ep_files))

    def bound_udc(self) -> str:
        return udc.bound(self.gadget_dir)

    def udc_state(self) -> str:
        name = self.bound_udc()
        try:
            return udc.state(name) if name else "unbound"
        except OSError:
            return "unknown"

    def daemon_log(self) -> str:
        """The daemon's log so far. pread, not seek + read: the daemon shares this file's offset,
        and a line it wrote between the two landed at offset 0 and hid the log's start."""
        if not self.log.seekable():
            return ""
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def leftovers(self) -> list[str]:
        return configfs.leftovers(self.spec)

    def _log_tail(self) -> str:
        """': ' and the daemon log's last three lines, for an error message ('' if none)."""
        tail = " | ".join(line for line in self.daemon_log().splitlines()[-3:] if line)
        return f": {tail}" if tail else ""

    def _wait(self, timeout: float, what: str, done) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.daemon is None or self.daemon.poll() is not None:
                status = None if self.daemon is None else self.daemon.returncode
                raise SetupError(f"gadgetd run exited {status} before it could {what}"
                                 + self._log_tail())
            if time.monotonic() > deadline:
                raise SetupError(f"gadgetd run did not {what} within {timeout:g} s"
                                 + self._log_tail())
            time.sleep(0.05)
