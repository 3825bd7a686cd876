"""The device-side rig repro works on: the real `gadgetd run` serving the loopback template,
killed when a scenario needs a DEACTIVATED instance, and the host side that drives it."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gadgetd import configfs, ffs, template, udc
from gadgetd.errors import SetupError
from gadgetd.host import drive
from gadgetd.host.device import DeviceSelector, wait_for_device, wait_for_removal
from gadgetd.repro.kernel_log import task_state

STARTUP_TIMEOUT = 120.0  # seconds a child interpreter may take to start on a loaded machine
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "configfs_templates" / "loopback.toml"


class LocalHost:
    """This machine's host controller sees the gadget (dummy_hcd): drive it with pyusb."""

    observable = True

    def __init__(self, selector: DeviceSelector):
        self.selector = selector

    def wait_device(self, timeout: float = 30.0):
        return wait_for_device(self.selector, timeout)

    def present(self) -> bool:
        return self.selector.find() is not None

    def wait_gone(self, timeout: float) -> bool:
        try:
            wait_for_removal(self.selector, timeout)
            return True
        except TimeoutError:
            return False

    def storm(self) -> drive.Storm:
        return drive.Storm(self.selector).start()

    def set_interface(self, alt: int) -> str:
        dev = self.selector.find()
        return drive.set_interface(dev, alt) if dev else "absent"

    def set_configuration(self, value: int) -> str:
        dev = self.selector.find()
        return drive.set_configuration(dev, value) if dev else "absent"


class RemoteHost:
    """A separate host runs `gadgetd-hil drive`: its traffic arrives by itself and its outcomes
    are only visible there. The device side waits for their effects instead."""

    observable = False

    def wait_device(self, timeout: float = 30.0):
        return None

    def present(self) -> bool:
        return True

    def wait_gone(self, timeout: float) -> bool:
        return False

    def storm(self):
        return None

    def set_interface(self, alt: int) -> str:
        return "sent by gadgetd-hil drive (see its log)"

    set_configuration = set_interface


class Rig:
    def __init__(self, template_path: Path = DEFAULT_TEMPLATE, log=sys.stderr):
        self.template_path = Path(template_path)
        self.spec = template.load(self.template_path)
        self.fn = next(iter(self.spec.functions.values()))
        self.gadget_dir = configfs.gadget_dir(self.spec.name)
        self.selector = DeviceSelector(self.spec.id_vendor, self.spec.id_product)
        self.daemon: subprocess.Popen | None = None
        self.daemon_log = tempfile.TemporaryFile("w+")  # gadgetd's stderr, quoted on failure
        self.daemon_failures: list[str] = []
        self.log = log
        self.udc = None
        self.host = LocalHost(self.selector)

    @property
    def ep0(self) -> Path:
        return self.fn.mountpoint / "ep0"

    @property
    def ep_files(self) -> list[Path]:
        return [self.fn.mountpoint / f"ep{i}" for i in range(1, len(self.fn.endpoints) + 1)]

    def choose_host(self) -> None:
        """Local pyusb host if this machine's host controller enumerates the gadget."""
        self.serve(no_disconnect=False, daemon_nonblock=False)
        try:
            self.host.wait_device(20)
        except TimeoutError:
            print("repro: no local host controller sees the gadget: expecting "
                  "'gadgetd-hil drive' on the host", file=self.log)
            self.host = RemoteHost()
        self.stop()

    def serve(self, no_disconnect: bool, daemon_nonblock: bool) -> None:
        """Start `gadgetd run` and wait until it has bound the UDC."""
        args = [sys.executable, "-m", "gadgetd", "run", str(self.template_path), "--replace",
                "--no-disconnect" if no_disconnect else "--disconnect",
                "--nonblock" if daemon_nonblock else "--blocking"]
        self.daemon = subprocess.Popen(args, stderr=self.daemon_log)
        deadline = time.monotonic() + 60
        while not (udc.bound(self.gadget_dir) and all(p.exists() for p in self.ep_files)):
            if self.daemon.poll() is not None:
                raise SetupError(f"gadgetd run exited {self.daemon.returncode} during setup")
            if time.monotonic() > deadline:
                raise SetupError("gadgetd run did not bind the UDC within 60 s")
            time.sleep(0.05)
        self.udc = udc.bound(self.gadget_dir)
        if self.host.observable:
            self.host.wait_device(30)

    def stop(self) -> None:
        """Orderly stop: the daemon tears its gadget down; a failure of gadgetd is recorded."""
        if self.daemon is None:
            return
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
        status = self.daemon.wait(60)
        self.daemon = None
        if status != 0:
            self.daemon_log.seek(0)
            tail = [line for line in self.daemon_log.read().splitlines() if line][-3:]
            self.daemon_failures.append(f"gadgetd run exited {status}: " + " | ".join(tail))
        self.daemon_log.seek(0)
        self.daemon_log.truncate()

    def deactivate(self) -> None:
        """Kill the daemon: every FunctionFS file closes at once; with no_disconnect=1 the
        instance becomes DEACTIVATED while the gadget stays bound (a crashed daemon's state)."""
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait(30)
        self.daemon = None
        deadline = time.monotonic() + 10
        while any(p.exists() for p in self.ep_files) and time.monotonic() < deadline:
            time.sleep(0.02)

    def unbind(self) -> None:
        udc.unbind(self.gadget_dir)

    def bound(self) -> bool:
        return bool(udc.bound(self.gadget_dir))

    def run_opener(self, kind: str, mode: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "gadgetd.repro.openers", kind, mode,
                                 *map(str, args)], stdout=subprocess.PIPE, text=True)

    def wait_opener(self, proc: subprocess.Popen, deadline: float):
        """(result dict, None) when the child's opens finished in time; (None, evidence) when not.

        The deadline counts from the child's "opening" line, so a slow interpreter start on a
        loaded machine is not mistaken for a stuck open. Evidence of a task stuck in the kernel
        has state D (uninterruptible sleep): such a task cannot be killed and is left where it
        is. A child still running in any other state is killed and raised as repro's own error.
        """
        lines = []
        started = False
        end = time.monotonic() + STARTUP_TIMEOUT
        while True:
            remaining = end - time.monotonic()
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, remaining))
            if ready:
                line = proc.stdout.readline()
                if not line:
                    break  # the child exited
                if json.loads(line).get("opening") and not started:
                    started = True
                    end = time.monotonic() + deadline
                else:
                    lines.append(line)
                continue
            evidence = task_state(proc.pid)
            if started and evidence.get("state") == "D":
                return None, evidence
            proc.kill()
            phase = "its open" if started else "start-up"
            raise SetupError(f"opener {proc.args[3:5]} did not finish {phase} in time "
                             f"(state {evidence.get('state')}, {evidence.get('wchan', '?')})")
        proc.wait()
        if not lines:
            raise SetupError(f"opener {proc.args[3:5]} exited {proc.returncode} without a result")
        return json.loads(lines[-1]), None

    @staticmethod
    def read_line(proc: subprocess.Popen, timeout: float) -> str | None:
        """One line of a child's output, or None when none came within `timeout`."""
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        return proc.stdout.readline() or None if ready else None

    def cleanup(self) -> list[str]:
        self.stop()
        return configfs.remove_gadget(self.spec.name) if self.gadget_dir.exists() else []

    def mounted(self) -> bool:
        return bool(ffs.mountpoints(self.fn.name))


def environment_problem() -> str | None:
    if os.geteuid() != 0:
        return "repro needs root (configfs, FunctionFS mounts, the UDC)"
    if not udc.list_udcs():
        return udc.NO_UDC_HELP
    return None
