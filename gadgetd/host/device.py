"""Host side of the cable: find the gadget (pyudev, no sleeping) and talk to it (pyusb).

Shaped like labgrid: a DeviceSelector says which device (resource), LoopbackDriver says how to
talk to it (driver); the HIL fixtures and repro's host driver combine them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyudev
import usb.core
import usb.util

from gadgetd.errors import GadgetdError
from gadgetd.protocol import LOOPBACK_ECHO_IN as ECHO_IN
from gadgetd.protocol import LOOPBACK_ECHO_OUT as ECHO_OUT
from gadgetd.protocol import LOOPBACK_STATUS as STATUS

# pyusb's speed codes
SPEED_NAMES = {1: "low", 2: "full", 3: "high", 4: "super", 5: "super-plus"}
BULK_MAX_PACKET = {"full": 64, "high": 512, "super": 1024, "super-plus": 1024}
# gadgetd loopback vendor requests (recipient interface)
VENDOR_OUT = usb.util.CTRL_OUT | usb.util.CTRL_TYPE_VENDOR | usb.util.CTRL_RECIPIENT_INTERFACE
VENDOR_IN = usb.util.CTRL_IN | usb.util.CTRL_TYPE_VENDOR | usb.util.CTRL_RECIPIENT_INTERFACE


@dataclass(frozen=True)
class DeviceSelector:
    vendor: int
    product: int
    serial: str | None = None

    @classmethod
    def parse(cls, text: str, serial: str | None = None) -> DeviceSelector:
        """VID:PID in hex; ValueError, saying what is wrong with `text`, otherwise."""
        vid, colon, pid = text.partition(":")
        try:
            ids = [int(part, 16) for part in (vid, pid)] if colon else []
        except ValueError:
            ids = []
        if len(ids) != 2 or not all(0 <= i <= 0xFFFF for i in ids):
            raise ValueError(f"{text!r} is not VID:PID (two hex numbers up to ffff, e.g. 1d6b:0104)")
        return cls(*ids, serial)

    def __str__(self) -> str:
        return f"{self.vendor:04x}:{self.product:04x}" + (f" ({self.serial})" if self.serial else "")

    def matches_udev(self, dev: pyudev.Device) -> bool:
        attrs = dev.attributes
        try:
            ok = (int(attrs.asstring("idVendor"), 16) == self.vendor
                  and int(attrs.asstring("idProduct"), 16) == self.product)
            return ok and (self.serial is None or attrs.asstring("serial") == self.serial)
        except KeyError:
            return False

    def find(self) -> usb.core.Device | None:
        for dev in usb.core.find(find_all=True, idVendor=self.vendor, idProduct=self.product):
            if self.serial is None or _serial(dev) == self.serial:
                return dev
        return None


def _serial(dev: usb.core.Device) -> str | None:
    try:
        return usb.util.get_string(dev, dev.iSerialNumber) if dev.iSerialNumber else None
    except (usb.core.USBError, ValueError):
        return None


# libusb's device list (what pyusb sees) follows uevents through its own monitor, so it can lag
# behind ours: after an event, or a quiet slice of this length, the list is read again.
RECHECK = 0.1


def host_controller(dev: usb.core.Device) -> str:
    """The driver of the host controller the device hangs off (dummy_hcd, vhci_hcd, xhci_hcd)."""
    root = Path(f"/sys/bus/usb/devices/usb{dev.bus}").resolve()
    driver = root.parent / "driver"
    return driver.resolve().name if driver.exists() else ""


def wait_for_device(selector: DeviceSelector, timeout: float = 30.0,
                    gone_first: usb.core.Device | None = None) -> usb.core.Device:
    """Wait (woken by udev events) until the selected device is present and configured by the
    kernel's enumeration; with `gone_first`, wait for that instance to vanish first."""
    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context)
    monitor.filter_by(subsystem="usb", device_type="usb_device")
    monitor.start()
    deadline = time.monotonic() + timeout
    old = (gone_first.bus, gone_first.address) if gone_first is not None else None

    def present():
        dev = selector.find()
        if dev is not None and (dev.bus, dev.address) != old:
            return dev
        return None

    dev = present()
    while dev is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"USB device {selector} did not appear within {timeout:g} s")
        event = monitor.poll(timeout=min(remaining, RECHECK))
        if event is not None and event.action == "add" and selector.matches_udev(event):
            old = None  # a fresh enumeration: whatever is present now is the new instance
        dev = present()
    return dev


def wait_for_removal(selector: DeviceSelector, timeout: float = 30.0) -> None:
    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context)
    monitor.filter_by(subsystem="usb", device_type="usb_device")
    monitor.start()
    deadline = time.monotonic() + timeout
    while selector.find() is not None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"USB device {selector} still present after {timeout:g} s")
        monitor.poll(timeout=min(remaining, RECHECK))


class LoopbackDriver:
    """gadgetd's loopback function seen from the host."""

    def __init__(self, dev: usb.core.Device, timeout_ms: int = 5000):
        self.dev, self.timeout = dev, timeout_ms
        self.intf = self._vendor_interface()
        self.ep_out = usb.util.find_descriptor(self.intf, custom_match=_direction(usb.util.ENDPOINT_OUT))
        self.ep_in = usb.util.find_descriptor(self.intf, custom_match=_direction(usb.util.ENDPOINT_IN))
        self.max_packet = self.ep_in.wMaxPacketSize

    def _vendor_interface(self):
        try:
            cfg = self.dev.get_active_configuration()
        except usb.core.USBError:
            self.dev.set_configuration()
            cfg = self.dev.get_active_configuration()
        return next(i for i in cfg if i.bInterfaceClass == 0xFF)

    @property
    def speed(self) -> str:
        return SPEED_NAMES.get(self.dev.speed, "unknown")

    @property
    def interface_number(self) -> int:
        return self.intf.bInterfaceNumber

    # --- control ---------------------------------------------------------------------------
    def echo(self, data: bytes) -> bytes:
        self.dev.ctrl_transfer(VENDOR_OUT, ECHO_OUT, 0, self.interface_number, data, self.timeout)
        return bytes(self.dev.ctrl_transfer(VENDOR_IN, ECHO_IN, 0, self.interface_number,
                                            len(data), self.timeout))

    def status(self) -> dict:
        raw = self.dev.ctrl_transfer(VENDOR_IN, STATUS, 0, self.interface_number, 4096,
                                     self.timeout)
        return json.loads(bytes(raw))

    def set_interface_raw(self, alt: int) -> None:
        """SET_INTERFACE sent as is: pyusb's helper hides a STALL on single-altsetting interfaces."""
        self.dev.ctrl_transfer(0x01, 0x0B, alt, self.interface_number, None, self.timeout)

    # --- bulk ------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """One OUT transfer; a multiple of wMaxPacketSize is ended by a zero-length packet."""
        self.dev.write(self.ep_out, data, self.timeout)
        if data and len(data) % self.ep_out.wMaxPacketSize == 0:
            self.dev.write(self.ep_out, b"", self.timeout)

    def receive(self, limit: int) -> bytes:
        """One IN transfer of at most `limit` bytes (ends at a short or zero-length packet)."""
        size = (limit // self.max_packet + 1) * self.max_packet
        return bytes(self.dev.read(self.ep_in, size, self.timeout))

    def loopback(self, data: bytes) -> bytes:
        """Send one transfer and return its echo; the IN side is read while OUT is written, as
        the device holds a bounded number of buffers."""
        result: dict = {}

        def reader():
            try:
                result["data"] = self.receive(len(data))
            except usb.core.USBError as exc:
                result["error"] = exc

        t = threading.Thread(target=reader)
        t.start()
        try:
            self.send(data)
        finally:
            t.join()
        if "error" in result:
            raise result["error"]
        return result["data"]


def _direction(direction):
    return lambda e: usb.util.endpoint_direction(e.bEndpointAddress) == direction



def port_disable_file(dev: usb.core.Device) -> Path:
    """The hub port's `disable` attribute: writing 1 powers the port off (a host-side unplug)."""
    name = f"{dev.bus}-" + ".".join(map(str, dev.port_numbers))
    link = Path("/sys/bus/usb/devices") / name / "port"
    if (link / "disable").exists():
        return link.resolve() / "disable"  # the port's own path outlives the device's
    if len(dev.port_numbers) == 1:  # root hub port, for kernels without the `port` link
        bus, port = dev.bus, dev.port_numbers[0]
        return Path(f"/sys/bus/usb/devices/usb{bus}/{bus}-0:1.0/usb{bus}-port{port}/disable")
    raise FileNotFoundError(f"no port disable attribute for {name}")


_GROUP_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_SERIAL_NOT = '"\\,=*?['  # a rule's quoting and separators, and udev's glob characters


def _check_rule_values(serial: str | None, group: str) -> None:
    """Values going into a rule line are plain: no quote, separator, glob or newline."""
    if serial and not (len(serial) <= 126 and all(" " <= c <= "~" and c not in _SERIAL_NOT
                                                  for c in serial)):
        raise GadgetdError(f"serial {serial!r}: must be at most 126 printable ASCII characters "
                           f"without any of {_SERIAL_NOT}")
    if not _GROUP_RE.fullmatch(group):
        raise GadgetdError(f"group {group!r}: not a group name ({_GROUP_RE.pattern})")


def udev_rule(selector: DeviceSelector, group: str = "plugdev") -> str:
    """A udev rule giving the logged-in user (uaccess) and `group` access to the device."""
    _check_rule_values(selector.serial, group)
    serial = f', ATTR{{serial}}=="{selector.serial}"' if selector.serial else ""
    return (f"# gadgetd: non-root access to {selector} for pyusb and the HIL suite\n"
            f'SUBSYSTEM=="usb", ENV{{DEVTYPE}}=="usb_device", '
            f'ATTR{{idVendor}}=="{selector.vendor:04x}", ATTR{{idProduct}}=="{selector.product:04x}"'
            f'{serial}, MODE="0660", GROUP="{group}", TAG+="uaccess"\n')
