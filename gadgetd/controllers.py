"""What a USB device controller can serve: endpoint budgets per controller driver.

A template names its controller with `[gadget] controller = "dwc2"` (or the UDC's name implies
it); `gadgetd check` and `gadgetd run` refuse a template the controller cannot serve, before
anything reaches the kernel, instead of letting usb_ep_autoconfig fail at bind time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gadgetd.model import GadgetSpec


@dataclass(frozen=True)
class Budget:
    name: str
    notes: str
    in_total: int  # endpoints usable as IN (besides ep0)
    out_total: int
    in_interrupt: int  # of those, how many can be interrupt endpoints
    out_interrupt: int
    in_max_packet: int  # largest IN wMaxPacketSize the TX FIFOs hold

    def problems(self, spec: GadgetSpec) -> list[str]:
        """Per configuration: the endpoints all its functions need at once."""
        found = []
        for cfg in spec.configs:
            eps = [ep for name in cfg.functions for ep in spec.functions[name].endpoints]
            counts = {
                ("IN", None): sum(e.is_in for e in eps),
                ("OUT", None): sum(not e.is_in for e in eps),
                ("IN", "interrupt"): sum(e.is_in and e.transfer == "interrupt" for e in eps),
                ("OUT", "interrupt"): sum(not e.is_in and e.transfer == "interrupt" for e in eps),
            }
            limits = {("IN", None): self.in_total, ("OUT", None): self.out_total,
                      ("IN", "interrupt"): self.in_interrupt,
                      ("OUT", "interrupt"): self.out_interrupt}
            for key, limit in limits.items():
                if counts[key] > limit:
                    kind = f"{key[1]} {key[0]}" if key[1] else key[0]
                    found.append(f"configuration {cfg.configfs_name} needs {counts[key]} {kind} "
                                 f"endpoints; {self.name} has {limit}")
            big = [e.max_packet for e in eps if e.is_in and e.max_packet
                   and e.max_packet > self.in_max_packet]
            if big:
                found.append(f"an IN endpoint of {max(big)} bytes exceeds {self.name}'s "
                             f"{self.in_max_packet}-byte TX FIFO")
        return found


BUDGETS = {
    # Raspberry Pi Zero / Zero 2 W / 4 with dtoverlay=dwc2: BCM2835's DWC OTG core has endpoint
    # numbers 1-7, each usable IN and OUT, and the overlay gives the seven IN endpoints TX FIFOs
    # of 512,512,512,512,512,256,256 words (the smallest, 1024 bytes, bounds an IN packet).
    "dwc2": Budget("dwc2", "Raspberry Pi dwc2 overlay", in_total=7, out_total=7,
                   in_interrupt=7, out_interrupt=7, in_max_packet=1024),
    # dummy_hcd's dummy_udc (drivers/usb/gadget/udc/dummy_hcd.c ep_info): fixed-function
    # ep1in/ep6in/ep11in/ep2in bulk, ep5in/ep10in/ep15in interrupt, ep2out/ep7out/ep12out/
    # ep1out bulk, and generic bulk-or-interrupt ep-bin/ein/gin/jin/lin and ep-a/c/d/f/h/i/k/mout.
    "dummy_udc": Budget("dummy_udc", "dummy_hcd's software controller", in_total=12,
                        out_total=12, in_interrupt=8, out_interrupt=8, in_max_packet=1024),
    # usbip-vudc (drivers/usb/usbip/vudc_dev.c): ep1in..ep15in and ep1out..ep15out, each bulk,
    # interrupt or isochronous, with no packet size limit (usb_ep_set_maxpacket_limit(~0)); it
    # offers high speed at most. The gadget travels to another kernel's vhci-hcd over TCP.
    "usbip-vudc": Budget("usbip-vudc", "USB/IP virtual device controller", in_total=15,
                         out_total=15, in_interrupt=15, out_interrupt=15, in_max_packet=1 << 16),
}
# UDC names that give the controller away.
_UDC_NAMES = ((re.compile(r"^dummy_udc\.\d+$"), "dummy_udc"),
              (re.compile(r"^usbip-vudc\.\d+$"), "usbip-vudc"),
              (re.compile(r"^[0-9a-f]+\.usb$"), "dwc2"))  # 20980000.usb, 3f980000.usb, fe980000.usb


def controller_of(udc_name: str, sysfs: Path = Path("/sys/class/udc")) -> str | None:
    """The controller driver behind a UDC: its sysfs driver link, else its name's pattern."""
    driver = sysfs / udc_name / "device" / "driver"
    if driver.exists():
        name = driver.resolve().name
        return "dummy_udc" if name.startswith("dummy_udc") else name
    for pattern, kind in _UDC_NAMES:
        if pattern.match(udc_name):
            return kind
    return None


def check(spec: GadgetSpec, controller: str | None) -> list[str]:
    budget = BUDGETS.get(controller or "")
    return budget.problems(spec) if budget else []
