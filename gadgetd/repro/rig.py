"""The device-side rig repro works on: the real `gadgetd run` serving the loopback template,
brought to each state by gadgetd.strategy (killed when a scenario needs a DEACTIVATED
instance), and the host side that drives it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from gadgetd import ffs, runstate, templates, udc
from gadgetd.errors import SetupError
from gadgetd.repro.host_report import HostReport, ReportedStorm
from gadgetd.repro.report import HANG_INTERVAL, HANG_SAMPLES, hang_proven
from gadgetd.strategy import USB_DEVICES, GadgetStrategy, local_host_sees
from gadgetd.syscalls import task_state

STARTUP_TIMEOUT = 120.0  # seconds a child interpreter may take to start on a loaded machine
OPEN_GRACE = 5.0  # more seconds for an opener that was in state D but not proven stuck


def sample_hang(pid: int) -> dict:
    """Up to HANG_SAMPLES samples of a task, HANG_INTERVAL s apart (stopping once it leaves state
    D): the last one's fields at the top, all of them under "samples" (see report.hang_proven)."""
    samples = []
    while len(samples) < HANG_SAMPLES:
        if samples:
            time.sleep(HANG_INTERVAL * 1.02)
        samples.append({**task_state(pid), "t": round(time.monotonic(), 3)})
        if samples[-1]["state"] != "D":
            break
    return {**samples[-1], "samples": samples}


class RemoteHost:
    """A separate host runs `gadgetd-hil drive`: its traffic arrives by itself and its outcomes
    are only visible there, or in its report when one is shared (`drive --report`). The device
    side waits for their effects instead."""

    observable = False

    def __init__(self, report: HostReport | None = None):
        self.report = report
        self.counted = report is not None  # its requests reach contended_open's counts

    def present(self) -> bool:
        return True

    def wait_gone(self, timeout: float) -> bool:
        return False

    def storm(self):
        return ReportedStorm(self.report) if self.report else None

    def quiet(self):
        """A block in which the host sends nothing, where it can be asked (its report's
        directory is shared); yields whether it confirmed."""
        return self.report.quiet() if self.report else contextlib.nullcontext(False)

    def set_interface(self, alt: int) -> str:
        return "sent by gadgetd-hil drive (see its log)"

    set_configuration = set_interface


class Rig:
    def __init__(self, template_path: Path | None = None, log=sys.stderr):
        self.strategy = GadgetStrategy(template_path or templates.path("loopback"))
        self.spec = self.strategy.spec
        self.fn = next(iter(self.spec.ffs_functions.values()))
        self.gadget_dir = self.strategy.gadget_dir
        self.daemon_failures: list[str] = []
        self.log = log
        self.host = RemoteHost()

    @property
    def ep0(self) -> Path:
        return self.fn.mountpoint / "ep0"

    @property
    def ep_files(self) -> list[Path]:
        return self.strategy.ep_files

    def choose_host(self, mode: str = "auto", report: HostReport | None = None) -> None:
        """`remote`: a separate host drives the gadget (a board; the USB/IP lab, whose vhci
        device this kernel also sees). `local`: this machine's host controller, which must
        enumerate the gadget. `auto`: local if it does (looked at twice, the gadget served
        again in between, where this machine has a USB host), else remote."""
        if mode == "remote":
            self.host = RemoteHost(report)
            return
        self.serve(no_disconnect=False, daemon_nonblock=False, wait_host=False)
        seen = local_host_sees(self.spec, 20)
        if not seen and any(USB_DEVICES.glob("usb*")):  # a host is here: a second look, re-served
            self.stop()
            self.serve(no_disconnect=False, daemon_nonblock=False, wait_host=False)
            seen = local_host_sees(self.spec, 20)
        if seen:
            from gadgetd.repro.local_host import LocalHost  # pyusb: only when it can serve

            self.host = LocalHost(self.spec.id_vendor, self.spec.id_product)
        elif mode == "local":
            self.stop()
            raise SetupError("--host local: no host controller on this machine enumerated the "
                             "gadget")
        else:
            self.host = RemoteHost(report)
            print("repro: no local host controller sees the gadget: expecting "
                  "'gadgetd-hil drive' on the host", file=self.log)
        self.stop()

    def serve(self, no_disconnect: bool, daemon_nonblock: bool, wait_host: bool = True) -> None:
        """Start `gadgetd run`, wait until it has bound the UDC and (`wait_host`) the host has
        enumerated the gadget."""
        self.strategy.daemon_args = ("--replace",
                                     "--no-disconnect" if no_disconnect else "--disconnect",
                                     "--nonblock" if daemon_nonblock else "--blocking")
        self.strategy.transition("served")
        if not wait_host:
            return
        if self.host.observable:
            self.host.wait_device(30)
        else:  # a remote host's enumeration, as this side sees it: the UDC's state
            self.strategy.transition("enumerated", 30)

    def stop(self) -> None:
        """Orderly stop: the daemon tears its gadget down; a failure of gadgetd is recorded."""
        status = self.strategy.stop()
        if status not in (0, None):
            tail = [line for line in self.strategy.daemon_log().splitlines() if line][-3:]
            self.daemon_failures.append(f"gadgetd run exited {status}: " + " | ".join(tail))

    def deactivate(self) -> None:
        """Kill the daemon: every FunctionFS file closes at once; with no_disconnect=1 the
        instance becomes DEACTIVATED while the gadget stays bound (a crashed daemon's state)."""
        self.strategy.transition("deactivated")

    def unbind(self) -> None:
        self.strategy.transition("unbound")

    def daemon_setups(self) -> int:
        """SETUPs the running daemon's function has handled (its last status, once a second)."""
        state = runstate.read(self.spec.name) or {}
        function = state.get("functions", {}).get(self.fn.name, {})
        return function.get("counters", {}).get("setups", 0)

    def bound(self) -> bool:
        return bool(self.strategy.bound_udc())

    def run_opener(self, kind: str, mode: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "gadgetd.repro.openers", kind, mode,
                                 *map(str, args)], stdout=subprocess.PIPE, text=True)

    def wait_opener(self, proc: subprocess.Popen, deadline: float):
        """(result dict, None) when the child's opens finished in time; (None, evidence) when not.

        The deadline counts from the child's "opening" line, so a slow interpreter start on a
        loaded machine is not mistaken for a stuck open. Evidence of a task stuck in the kernel
        is what report.hang_proven asks (samples in state D inside f_fs): such a task cannot be
        killed and is left where it is. A child still running otherwise gets OPEN_GRACE more
        seconds, then is killed and raised as repro's own error.
        """
        lines = []
        started = graced = False
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
                evidence = sample_hang(proc.pid)
                if hang_proven(evidence):
                    return None, evidence
                if not graced:  # it left D, or is in D elsewhere: it may still finish
                    graced, end = True, time.monotonic() + OPEN_GRACE
                    continue
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
        try:
            self.strategy.transition("absent")
        except SetupError as exc:
            return [str(exc)]
        return []

    def mounted(self) -> bool:
        return bool(ffs.mountpoints(self.fn.name))


def environment_problem() -> str | None:
    if os.geteuid() != 0:
        return "repro needs root (configfs, FunctionFS mounts, the UDC)"
    if not udc.list_udcs():
        return udc.NO_UDC_HELP
    return None
