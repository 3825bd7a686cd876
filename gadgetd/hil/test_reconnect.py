"""Reconnects and restarts: device-side UDC unbind/bind, host-side port reset, the daemon
re-enumerating; each followed by a working loopback."""

from __future__ import annotations

import os

from gadgetd.host.device import LoopbackDriver, wait_for_device, wait_for_removal


def test_udc_unbind_bind(board, selector, device, appear_timeout):
    udc = board.unbind()
    try:
        wait_for_removal(selector, appear_timeout)
    finally:
        board.bind(udc)
    dev = wait_for_device(selector, appear_timeout)
    data = os.urandom(70000)
    assert LoopbackDriver(dev).loopback(data) == data


def test_host_port_reset(loopback, selector, appear_timeout):
    loopback.dev.reset()
    dev = wait_for_device(selector, appear_timeout)
    data = os.urandom(70000)
    assert LoopbackDriver(dev).loopback(data) == data


def test_daemon_reenumerates_on_reload(board, selector, device, appear_timeout):
    """SIGHUP: gadgetd tears the gadget down, reads its template again and brings it back."""
    board.reload_daemon()
    dev = wait_for_device(selector, appear_timeout, gone_first=device)  # a new enumeration
    data = os.urandom(30000)
    assert LoopbackDriver(dev).loopback(data) == data
