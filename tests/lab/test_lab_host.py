"""Reconnects across two kernels, run in the lab's host VM (tests/lab/test_two_machines.py
starts them after the HIL suite, with the HIL plugin's options: --device, --board ssh://...):
the host detaches and attaches, the board unbinds and binds, the board's daemon is killed and
started again with no_disconnect. Each time the host must see the device come back and loop
data through it. Times go to $GADGETD_RESULTS/reconnects.json."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import usb.util

from gadgetd.host import usbip
from gadgetd.host.device import LoopbackDriver, wait_for_device, wait_for_removal

pytestmark = pytest.mark.lab_host
CYCLES = 3
FIGURES: dict = {}


@pytest.fixture(scope="module", autouse=True)
def figures():
    yield FIGURES
    Path(os.environ["GADGETD_RESULTS"], "reconnects.json").write_text(
        json.dumps(FIGURES, indent=1, sort_keys=True) + "\n")


def _back(selector, timeout, gone_first=None) -> None:
    dev = wait_for_device(selector, timeout, gone_first=gone_first)
    try:
        data = os.urandom(20000)
        assert LoopbackDriver(dev).loopback(data) == data
    finally:
        usb.util.dispose_resources(dev)


def _daemon_pid(board) -> int:
    served = json.loads(board.sh("gadgetd status --json"))
    return next(s["pid"] for s in served if s["name"] == board.gadget and s["running"])


def test_host_detaches_and_attaches(selector, appear_timeout):
    """`usbip detach` on the host; the lab's attacher attaches again (within 5 s)."""
    seconds = []
    for _ in range(CYCLES):
        _back(selector, appear_timeout)
        port = usbip.used_ports(usbip.vhci_status())[0]
        subprocess.run(["usbip", "detach", "-p", port], check=True, capture_output=True)
        wait_for_removal(selector, 10)
        start = time.monotonic()
        while not usbip.used_ports(usbip.vhci_status()):
            assert time.monotonic() - start < 5, "not attached again within 5 s"
            time.sleep(0.05)
        _back(selector, appear_timeout)
        seconds.append(round(time.monotonic() - start, 2))
    FIGURES["host_detach_attach_s"] = seconds


def test_board_unbinds_and_binds(board, selector, appear_timeout):
    """Attached again within 5 s of the bind (the ssh command that binds, itself seconds long
    under emulation, is timed apart); then the device works."""
    binds, attaches, totals = [], [], []
    for _ in range(CYCLES):
        _back(selector, appear_timeout)
        udc = board.unbind()
        wait_for_removal(selector, 10)
        start = time.monotonic()
        board.bind(udc)
        bound = time.monotonic()
        while not usbip.used_ports(usbip.vhci_status()):
            assert time.monotonic() - bound < 5, "not attached again within 5 s of the bind"
            time.sleep(0.05)
        attaches.append(round(time.monotonic() - bound, 2))
        binds.append(round(bound - start, 2))
        _back(selector, appear_timeout)
        totals.append(round(time.monotonic() - start, 2))
    FIGURES.update(board_bind_over_ssh_s=binds, board_attached_after_bind_s=attaches,
                   board_unbind_bind_s=totals)


def test_board_daemon_killed_and_restarted_with_no_disconnect(board, selector, appear_timeout):
    """SIGKILL leaves the gadget bound with its instance DEACTIVATED (no_disconnect=1); the next
    daemon must bring it back (without reopening it bound: that hangs 6.1.0-57). The last
    daemon is stopped with SIGTERM, leaving the board as it found it minus its daemon."""
    log = Path(os.environ["GADGETD_LAB"], "board", "gadgetd-restarts.log")
    start_daemon = (f"setsid gadgetd run loopback --no-disconnect >> {shlex.quote(str(log))} "
                    "2>&1 < /dev/null &")
    board.sh(f"kill {_daemon_pid(board)}")  # the board's own daemon (no no_disconnect)
    wait_for_removal(selector, 30)
    board.sh(start_daemon)
    _back(selector, appear_timeout)
    seconds = []
    for _ in range(CYCLES):
        old = wait_for_device(selector, appear_timeout)
        usb.util.dispose_resources(old)
        board.sh(f"kill -KILL {_daemon_pid(board)}")
        start = time.monotonic()
        board.sh(start_daemon)
        _back(selector, 60, gone_first=old)
        seconds.append(round(time.monotonic() - start, 2))
    FIGURES["daemon_kill_restart_no_disconnect_s"] = seconds
    pid = _daemon_pid(board)
    board.sh(f"kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.2; done")
    assert "deactivated" in log.read_text()
