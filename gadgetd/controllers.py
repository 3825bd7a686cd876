"""What a USB device controller can serve: endpoint budgets per controller driver.

A template names its controller with `[gadget] controller = "dwc2"` (or the UDC's name implies
it); `gadgetd check` and `gadgetd run` refuse a template the controller cannot serve, before
anything reaches the kernel, instead of letting usb_ep_autoconfig fail at bind time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gadgetd.model import Endpoint, GadgetSpec


@dataclass(frozen=True)
class UdcEndpoint:
    """One of a UDC driver's endpoints as epautoconf sees it: a name with a number in it
    ("ep5in-int") fixes the address; a generic one ("ep-bin") is numbered by epautoconf from a
    counter per direction starting at 1, whatever numbered endpoints are in use."""
    name: str
    is_in: bool
    bulk: bool  # bulk-capable endpoints also take interrupt (usb_gadget_ep_match_desc)

    @property
    def number(self) -> int | None:
        fixed = re.match(r"ep(\d+)", self.name)
        return int(fixed.group(1)) if fixed else None


def _claim(udc_eps: tuple[UdcEndpoint, ...], claimed: set, ep: Endpoint) -> UdcEndpoint | None:
    """The endpoint usb_ep_autoconfig gives `ep`: the first unclaimed one in the UDC's list of
    the right direction and type (maximum packet sizes aside: these UDCs take any)."""
    for candidate in udc_eps:
        if candidate in claimed or candidate.is_in != ep.is_in:
            continue
        if ep.transfer == "bulk" and not candidate.bulk:
            continue
        return candidate
    return None


@dataclass(frozen=True)
class Budget:
    name: str
    notes: str
    in_total: int  # endpoints usable as IN (besides ep0)
    out_total: int
    in_interrupt: int  # of those, how many can be interrupt endpoints
    out_interrupt: int
    in_max_packet: int  # largest IN wMaxPacketSize the TX FIFOs hold
    endpoint_list: tuple[UdcEndpoint, ...] = ()  # given: epautoconf's choices are replayed

    def _addresses(self, spec: GadgetSpec, cfg) -> list[str]:
        """epautoconf replayed over one configuration (functions bind in link order, each
        claims its endpoints in the order of its `endpoints`): addresses given twice.
        dummy_hcd's generic endpoints are numbered 1, 2, ... beside its
        fixed ep1in-bulk, ep2in-bulk, ...: the host's usbcore then skips the second endpoint
        with an address ("duplicate endpoint ... skipping") and dummy_hcd sends its traffic to
        the first."""
        claimed: set = set()
        counters, owners, found = {True: 0, False: 0}, {}, []
        for name in cfg.functions:
            for ep in spec.functions[name].endpoints:
                got = _claim(self.endpoint_list, claimed, ep)
                kind = f"{ep.transfer} {ep.direction.upper()}"
                if got is None:  # out of endpoints: the counts say so
                    return found
                claimed.add(got)
                number = got.number
                if number is None:
                    counters[ep.is_in] += 1
                    number = counters[ep.is_in]
                address = number | (0x80 if ep.is_in else 0)
                if address in owners:
                    found.append(f"configuration {cfg.configfs_name}: on {self.name}, {name}'s "
                                 f"{kind} endpoint would get address 0x{address:02x}, as "
                                 f"{owners[address]} has (epautoconf numbers {self.name}'s "
                                 "generic endpoints from 1); the host would drop it")
                owners.setdefault(address, f"{name}'s {kind} endpoint")
        return found

    def problems(self, spec: GadgetSpec) -> list[str]:
        """Per configuration: the endpoints all its functions need at once."""
        found = []
        for cfg in spec.configs:
            before = len(found)
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
            if self.endpoint_list and len(found) == before:
                found += self._addresses(spec, cfg)
            big = [e.max_packet for e in eps if e.is_in and e.max_packet
                   and e.max_packet > self.in_max_packet]
            if big:
                found.append(f"an IN endpoint of {max(big)} bytes exceeds {self.name}'s "
                             f"{self.in_max_packet}-byte TX FIFO")
        return found


_DUMMY_UDC = tuple(
    UdcEndpoint(name, is_in="in" in name, bulk=not name.endswith("-int"))
    for name in ("ep1in-bulk", "ep2out-bulk", "ep5in-int", "ep6in-bulk", "ep7out-bulk",
                 "ep10in-int", "ep11in-bulk", "ep12out-bulk", "ep15in-int", "ep1out-bulk",
                 "ep2in-bulk", "ep-aout", "ep-bin", "ep-cout", "ep-dout", "ep-ein", "ep-fout",
                 "ep-gin", "ep-hout", "ep-iout", "ep-jin", "ep-kout", "ep-lin", "ep-mout"))
BUDGETS = {
    # Raspberry Pi Zero / Zero 2 W / 4 with dtoverlay=dwc2: BCM2835's DWC OTG core has endpoint
    # numbers 1-7, each usable IN and OUT, and the overlay gives the seven IN endpoints TX FIFOs
    # of 512,512,512,512,512,256,256 words (the smallest, 1024 bytes, bounds an IN packet).
    "dwc2": Budget("dwc2", "Raspberry Pi dwc2 overlay", in_total=7, out_total=7,
                   in_interrupt=7, out_interrupt=7, in_max_packet=1024),
    # dummy_hcd's dummy_udc: ep_info's list (drivers/usb/gadget/udc/dummy_hcd.c, the same in
    # 6.1 and 7.2), replayed: 11 IN and 12 OUT, but past the first 7 IN (or 4 bulk and a
    # generic OUT) two endpoints share an address.
    "dummy_udc": Budget("dummy_udc", "dummy_hcd's software controller", in_total=11,
                        out_total=12, in_interrupt=11, out_interrupt=8, in_max_packet=1024,
                        endpoint_list=_DUMMY_UDC),
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
