"""Device-side control for HIL tests that change the gadget's state (unbind/bind the UDC).

LocalBoard: the gadget is served on this machine (the VM with dummy_hcd, or a board testing
itself); its configfs tree is right here.
"""

from __future__ import annotations

from pathlib import Path

CONFIGFS_GADGETS = Path("/sys/kernel/config/usb_gadget")


class LocalBoard:
    def __init__(self, gadget: str):
        self.gadget = gadget
        self.udc_file = CONFIGFS_GADGETS / gadget / "UDC"

    @classmethod
    def find(cls, gadget: str) -> LocalBoard | None:
        return cls(gadget) if (CONFIGFS_GADGETS / gadget / "UDC").exists() else None

    def bound_udc(self) -> str:
        return self.udc_file.read_text().strip()

    def unbind(self) -> str:
        """Unbind the gadget (the host sees a disconnect); returns the UDC it was bound to."""
        udc = self.bound_udc()
        self.udc_file.write_text("\n")
        return udc

    def bind(self, udc: str) -> None:
        self.udc_file.write_text(udc + "\n")
