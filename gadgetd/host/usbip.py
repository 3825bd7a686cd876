"""USB/IP, the two-kernel topology: a gadget bound to usbip-vudc on the board is exported over TCP
by `usbipd --device` and attached by the host kernel's vhci-hcd (`usbip attach`).

Unbinding the gadget on the board ends the USB/IP connection (vudc's pullup(0) queues
VUDC_EVENT_REMOVED, which shuts the socket), and the host's vhci port is freed: nothing attaches
it again by itself. The Attacher does, whenever the board exports the device again.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

PLATFORM = Path("/sys/devices/platform")
PORT = 3240  # usbipd's TCP port
BUSID = "usbip-vudc.0"  # the board's first vudc, as usbipd --device exports it
# enum usbip_device_status (drivers/usb/usbip/usbip_common.h): a port is free in VDEV_ST_NULL
# (or VDEV_ST_ERROR, on its way back to it); an attach makes it NOTASSIGNED until the hub has
# reset the port, then USED.
VDEV_ST_NULL, VDEV_ST_ERROR = 4, 7
ATTACH_TIMEOUT = 10  # seconds one `usbip attach` may take
POLL = 0.25  # seconds between looks at the vhci ports (re-attach within 5 s is the promise)


def used_ports(status: str) -> list[str]:
    """The vhci ports in use (attached, enumerated or not yet), from vhci_hcd.N/status* text:
    `hub port sta spd dev sockfd local_busid`, sta in decimal; each by its port number."""
    found = []
    for line in status.splitlines():
        fields = line.split()
        if len(fields) == 7 and fields[0] in ("hs", "ss") and fields[2].isdigit() \
                and int(fields[2]) not in (VDEV_ST_NULL, VDEV_ST_ERROR):
            found.append(fields[1])
    return found


def vhci_status() -> str:
    return "".join(p.read_text() for p in sorted(PLATFORM.glob("vhci_hcd.*/status*")))


def listening(port: int = PORT) -> bool:
    """Whether a TCP socket listens on `port` here (/proc/net/tcp*, state 0A)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def start_usbipd(log, timeout: float = 10.0) -> subprocess.Popen:
    """`usbipd --device` (export this machine's vudc gadgets), once it listens."""
    proc = subprocess.Popen(["usbipd", "--device"], stdout=log, stderr=subprocess.STDOUT)
    end = time.monotonic() + timeout
    while not listening():
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise OSError(f"usbipd --device did not listen on port {PORT} "
                          f"(exit {proc.poll()})")
        time.sleep(0.1)
    return proc


class Attacher:
    """Keeps `busid` on `remote` attached to this machine's vhci-hcd: attaches whenever no vhci
    port is in use (the board not yet bound, or just unbound, fails the attach: tried again)."""

    def __init__(self, remote: str, busid: str = BUSID, log=sys.stderr):
        self.remote, self.busid, self.log = remote, busid, log
        self._stop = threading.Event()

    def _say(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} attach {self.remote}/{self.busid}: {text}",
              file=self.log, flush=True)

    def run(self, duration: float = 0) -> None:
        end = time.monotonic() + duration if duration else None
        attached, detached_at, last_error = False, time.monotonic(), ""
        while not self._stop.is_set() and (end is None or time.monotonic() < end):
            now_attached = bool(used_ports(vhci_status()))
            if attached and not now_attached:
                detached_at = time.monotonic()
                self._say("detached")
            attached = now_attached
            if not attached:
                try:
                    proc = subprocess.run(["usbip", "attach", "-r", self.remote, "-d",
                                           self.busid], capture_output=True, text=True,
                                          timeout=ATTACH_TIMEOUT)
                except subprocess.TimeoutExpired:  # usbipd busy with a gadget going away
                    proc = subprocess.CompletedProcess([], 1, "", f"no answer within "
                                                       f"{ATTACH_TIMEOUT} s")
                if proc.returncode == 0:
                    attached = True
                    self._say(f"attached ({time.monotonic() - detached_at:.2f} s after the "
                              "port was free)")
                    last_error = ""
                elif (error := (proc.stderr.strip().splitlines() or [""])[-1]) != last_error:
                    last_error = error  # said once, not at every poll
                    self._say(f"not yet: {error}")
            self._stop.wait(POLL)

    def stop(self) -> None:
        self._stop.set()
