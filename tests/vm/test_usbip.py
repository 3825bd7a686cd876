"""USB/IP in one kernel (`gadgetd-hil vm --usb usbip-loopback`): the gadget on usbip-vudc,
exported over loopback TCP by usbipd and attached by this kernel's vhci-hcd, dummy_hcd not
loaded. `make usbip-test` runs these (repro over the same path runs in a boot of its own:
`gadgetd-hil matrix --usb usbip-loopback`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gadgetd import configfs, controllers, udc
from gadgetd.host import usbip
from gadgetd.host.device import wait_for_device, wait_for_removal
from tests.vm.conftest import save_figures

pytestmark = pytest.mark.usbip
HIL = Path(sys.executable).parent / "gadgetd-hil"


def test_usbip_alone_is_loaded():
    assert os.environ.get("GADGETD_USB") == "usbip-loopback"
    assert not Path("/sys/module/dummy_hcd").exists()
    assert Path("/sys/module/usbip_vudc").exists() and Path("/sys/module/vhci_hcd").exists()
    assert udc.list_udcs() == ["usbip-vudc.0"]
    assert udc.resolve("auto") == "usbip-vudc.0"
    assert controllers.controller_of("usbip-vudc.0") == "usbip-vudc"


def test_reattached_within_5_s_after_unbind_and_bind(daemon):
    d = daemon()
    d.wait_bound()
    gadget = configfs.gadget_dir(d.spec.name)
    seconds = []
    for _ in range(5):
        name = udc.bound(gadget)
        udc.unbind(gadget)
        wait_for_removal(d.selector, 10)
        start = time.monotonic()
        try:
            udc.bind(gadget, name)
        except OSError as exc:  # EBUSY: bound again by the daemon itself; its log says why
            pytest.fail(f"{exc}\n{d.read_log()[-3000:]}")
        while not usbip.used_ports(usbip.vhci_status()):
            assert time.monotonic() - start < 5, "not attached again within 5 s"
            time.sleep(0.05)
        seconds.append(time.monotonic() - start)
        wait_for_device(d.selector, 30)
    save_figures({"suite": "usbip_reattach", "kernel": os.uname().release,
                  "reattach_max_s": round(max(seconds), 2)})
    assert "Traceback" not in d.stop_and_log()


def test_hil_suite_over_usbip():
    proc = subprocess.run([str(HIL), "local", "loopback", "-q", "-rs", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]
