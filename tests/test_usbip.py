"""USB/IP: the vhci status the Attacher reads, and the two lab stacks' modules."""

from gadgetd.host import usbip
from gadgetd.host.guest import USB_STACKS

# As vhci_hcd.0/status reads (drivers/usb/usbip/vhci_sysfs.c): one high-speed port in use.
STATUS = """hub port sta spd dev      sockfd local_busid
hs  0000 006 003 00010002 000003 3-1
hs  0001 005 000 00000000 000000 0-0
hs  0002 004 000 00000000 000000 0-0
hs  0003 007 000 00000000 000000 0-0
ss  0008 004 000 00000000 000000 0-0
"""


def test_used_ports_from_vhci_status():
    assert usbip.used_ports(STATUS) == ["0000", "0001"]  # enumerated, and attached not yet reset
    assert usbip.used_ports(STATUS.replace(" 006 ", " 004 ").replace(" 005 ", " 004 ")) == []
    assert usbip.used_ports("") == []


def test_the_board_has_no_host_controller_and_the_host_no_udc():
    host_controllers = {"dummy_hcd", "vhci-hcd"}
    udcs = {"dummy_hcd", "usbip-vudc"}
    assert "usbip-vudc" in USB_STACKS["usbip-board"]
    assert not host_controllers & set(USB_STACKS["usbip-board"])
    assert USB_STACKS["usbip-host"] == ("vhci-hcd",)
    assert not udcs & set(USB_STACKS["usbip-host"])
    assert "dummy_hcd" not in USB_STACKS["usbip-loopback"]
