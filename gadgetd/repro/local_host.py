"""repro's host side when this machine's own host controller sees the gadget (dummy_hcd): pyusb.

The one board-side module that imports the host kit (gadgetd.host); the rig imports it only
when the local host controller has enumerated the gadget.
"""

from __future__ import annotations

import contextlib

from gadgetd.host import drive
from gadgetd.host.device import DeviceSelector, wait_for_device, wait_for_removal


class LocalHost:
    """This machine's host controller sees the gadget (dummy_hcd): drive it with pyusb."""

    observable = True
    counted = True  # its requests reach contended_open's counts

    def __init__(self, vendor: int, product: int):
        self.selector = DeviceSelector(vendor, product)

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

    def quiet(self):
        """This machine's host sends only what repro asks it to: quiet already."""
        return contextlib.nullcontext(True)

    def storm(self) -> drive.Storm:
        return drive.Storm(self.selector).start()

    def set_interface(self, alt: int) -> str:
        dev = self.selector.find()
        return drive.set_interface(dev, alt) if dev else "absent"

    def set_configuration(self, value: int) -> str:
        dev = self.selector.find()
        return drive.set_configuration(dev, value) if dev else "absent"
