"""gadgetd@.service under the machine's real systemd, booted as init in the VM
(`gadgetd-hil vm --systemd`): READY=1 once bound, STATUS= lines, a stuck worker recovered by the
supervisor, the watchdog restarting a stuck supervisor, reload, stop leaving nothing behind, a
start that waits for a late UDC, and the instance started by usb-gadget.target when a UDC
appears."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import usb.util

from gadgetd import configfs, runstate, template, templates
from gadgetd.host.device import DeviceSelector, LoopbackDriver, wait_for_device
from gadgetd.service import render_unit
from tests.vm.conftest import dummy_hcd_params

pytestmark = pytest.mark.systemd
ROOT = Path(__file__).resolve().parents[2]
NAME = "gadgetd-loopback"
UNIT = f"gadgetd@{NAME}.service"


def systemctl(*args, check=True) -> str:
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=600,
                          check=False)
    if check:
        assert proc.returncode == 0, f"systemctl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def show(prop: str) -> str:
    return systemctl("show", "-p", prop, "--value", UNIT).strip()


@pytest.fixture(scope="module")
def installed():
    Path("/etc/systemd/system/gadgetd@.service").write_text(
        render_unit(str(ROOT / ".venv" / "bin" / "gadgetd")))
    dropin = Path("/etc/systemd/system/gadgetd@.service.d/checkout-in-tmp.conf")
    if ROOT.is_relative_to("/tmp"):  # PrivateTmp= would hide this checkout's venv from the unit
        dropin.parent.mkdir(exist_ok=True)
        dropin.write_text("[Service]\nPrivateTmp=no\n")
    Path("/etc/gadgetd").mkdir(exist_ok=True)
    shutil.copyfile(templates.path("loopback"), f"/etc/gadgetd/{NAME}.toml")
    os.chmod(f"/etc/gadgetd/{NAME}.toml", 0o644)
    systemctl("daemon-reload")
    yield template.load(f"/etc/gadgetd/{NAME}.toml")
    systemctl("stop", UNIT, check=False)


def _loopback(spec, **kw):
    dev = wait_for_device(DeviceSelector(spec.id_vendor, spec.id_product), 60, **kw)
    try:
        assert LoopbackDriver(dev).loopback(b"under systemd" * 100) == b"under systemd" * 100
    finally:
        usb.util.dispose_resources(dev)


def test_start_is_ready_once_bound(installed):
    systemctl("start", UNIT)  # Type=notify: returns once READY=1 came
    assert show("ActiveState") == "active" and show("SubState") == "running"
    assert show("StatusText").startswith(("bound to", "dummy_udc.0:"))
    assert runstate.read(NAME)["bound"] == "dummy_udc.0"
    _loopback(installed)
    journal = _journal()
    assert "bound to dummy_udc.0" in journal
    assert not any(line[:4].isdigit() for line in journal.splitlines()), \
        "no timestamps of our own under systemd"


def _journal() -> str:
    return subprocess.run(["journalctl", "-u", UNIT, "-o", "cat"], capture_output=True,
                          text=True, check=False).stdout


def test_a_stuck_worker_is_recovered_by_the_supervisor(installed):
    """The worker's loop stops (SIGSTOP): the supervisor restarts it itself, the watchdog is
    fed meanwhile and systemd restarts nothing."""
    restarts = int(show("NRestarts"))
    old = DeviceSelector(installed.id_vendor, installed.id_product).find()
    worker = runstate.read(NAME)["functions"]["loop0"]["pid"]
    os.kill(worker, signal.SIGSTOP)
    start = time.monotonic()
    _loopback(installed, gone_first=old)
    print(f"\nstuck worker to working loopback in {time.monotonic() - start:.1f} s")
    assert int(show("NRestarts")) == restarts and show("ActiveState") == "active"
    assert runstate.read(NAME)["recovery_count"] == 1
    assert "silent for" in _journal()


def test_watchdog_restarts_a_stuck_supervisor(installed):
    restarts = int(show("NRestarts"))
    old = DeviceSelector(installed.id_vendor, installed.id_product).find()
    os.kill(int(show("MainPID")), signal.SIGSTOP)  # the supervisor's loop stops: no pings
    start = time.monotonic()
    deadline = start + 120
    while int(show("NRestarts")) == restarts and time.monotonic() < deadline:
        time.sleep(0.5)
    assert int(show("NRestarts")) == restarts + 1, "systemd did not restart the service"
    while show("ActiveState") != "active" and time.monotonic() < deadline:
        time.sleep(0.5)
    _loopback(installed, gone_first=old)
    print(f"\nwatchdog: stuck supervisor to working loopback in {time.monotonic() - start:.1f} s")
    assert "Watchdog timeout" in _journal() or "watchdog" in show("Result")


def test_reload_reenumerates(installed):
    old = DeviceSelector(installed.id_vendor, installed.id_product).find()
    systemctl("reload", UNIT)
    _loopback(installed, gone_first=old)
    assert show("ActiveState") == "active"


def test_stop_leaves_nothing(installed):
    systemctl("stop", UNIT)
    assert show("ActiveState") == "inactive"
    assert configfs.leftovers(installed) == []
    assert runstate.read(NAME) is None


def test_start_waits_for_a_late_udc(installed):
    params = dummy_hcd_params()
    subprocess.run(["rmmod", "dummy_hcd"], check=True)
    try:
        systemctl("start", "--no-block", UNIT)
        deadline = time.monotonic() + 60
        while "waiting for UDC" not in show("StatusText") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "waiting for UDC" in show("StatusText")
        assert show("ActiveState") == "activating"  # not READY before it is bound
    finally:
        subprocess.run(["modprobe", "dummy_hcd", *params], check=True)
    deadline = time.monotonic() + 60
    while show("ActiveState") != "active" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert show("ActiveState") == "active"
    _loopback(installed)
    systemctl("stop", UNIT)
    assert configfs.leftovers(installed) == []


def test_a_udc_appearing_starts_the_enabled_instance(installed):
    """WantedBy=usb-gadget.target: udev's UDC add event pulls the enabled instance in."""
    systemctl("stop", UNIT)
    params = dummy_hcd_params()
    subprocess.run(["rmmod", "dummy_hcd"], check=True)
    # As at boot before the controller probes: the target is not reached yet (once active it
    # stays active, and a second UDC arriving starts nothing new).
    systemctl("stop", "usb-gadget.target")
    systemctl("enable", UNIT)
    try:
        assert show("ActiveState") == "inactive"
        subprocess.run(["modprobe", "dummy_hcd", *params], check=True)
        deadline = time.monotonic() + 60
        while show("ActiveState") != "active" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert show("ActiveState") == "active", "the UDC's arrival did not start the unit"
        assert systemctl("is-active", "usb-gadget.target").strip() == "active"
        _loopback(installed)
    finally:
        systemctl("disable", UNIT, check=False)
        systemctl("stop", UNIT, check=False)
    assert configfs.leftovers(installed) == []
