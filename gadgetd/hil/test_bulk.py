"""Bulk loopback: sizes around wMaxPacketSize and large transfers, boundaries, halt handling."""

from __future__ import annotations

import errno
import os
import time

import pytest
import usb.core

SIZES = {
    "0": lambda mps: 0,
    "1": lambda mps: 1,
    "maxpacket-1": lambda mps: mps - 1,
    "maxpacket": lambda mps: mps,
    "maxpacket+1": lambda mps: mps + 1,
    "64KiB": lambda mps: 64 << 10,
    "1MiB": lambda mps: 1 << 20,
}
GET_STATUS, CLEAR_FEATURE, SET_FEATURE, ENDPOINT_HALT = 0x00, 0x01, 0x03, 0


@pytest.mark.parametrize("size", list(SIZES))
def test_loopback_size(loopback, size):
    data = os.urandom(SIZES[size](loopback.max_packet))
    assert loopback.loopback(data) == data


def test_back_to_back_transfers_keep_their_boundaries(loopback):
    mps = loopback.max_packet
    for n in (3, mps, 2 * mps, 0, mps + 7, 16384, 16384 + mps, 5):
        data = os.urandom(n)
        assert loopback.loopback(data) == data, f"transfer of {n} bytes"


def _endpoint_halted(loopback, ep) -> bool:
    raw = loopback.dev.ctrl_transfer(0x82, GET_STATUS, 0, ep.bEndpointAddress, 2)
    return bool(raw[0] & 1)


@pytest.mark.parametrize("direction", ["in", "out"])
def test_halt_and_clear_halt(loopback, direction):
    ep = loopback.ep_in if direction == "in" else loopback.ep_out
    loopback.dev.ctrl_transfer(0x02, SET_FEATURE, ENDPOINT_HALT, ep.bEndpointAddress)
    assert _endpoint_halted(loopback, ep)
    with pytest.raises(usb.core.USBError) as exc:
        if direction == "in":
            loopback.dev.read(ep, loopback.max_packet, loopback.timeout)
        else:
            loopback.dev.write(ep, b"halted", loopback.timeout)
    assert exc.value.errno == errno.EPIPE
    loopback.dev.clear_halt(ep)
    assert not _endpoint_halted(loopback, ep)
    data = os.urandom(3 * loopback.max_packet + 1)
    assert loopback.loopback(data) == data


def test_echo_cut_off_by_set_interface_is_counted(loopback):
    """OUT data the device read, whose echo was queued on IN but not read by the host when
    SET_INTERFACE disabled the endpoints: counted as dropped (never silently lost), and nothing
    stale comes back after."""
    keys = ("bytes_out", "bytes_looped", "dropped_bytes")
    before = loopback.status()["counters"]

    def moved() -> dict:
        after = loopback.status()["counters"]
        return {k: after.get(k, 0) - before.get(k, 0) for k in keys}

    def wait_for(done) -> dict:
        deadline = time.monotonic() + 10
        while not done(now := moved()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return now

    loopback.send(os.urandom(1000))
    # Status comes from the loop that read OUT: once it says so, the echo is queued on IN.
    assert wait_for(lambda m: m["bytes_out"] == 1000)["bytes_out"] == 1000
    loopback.set_interface_raw(0)
    counted = wait_for(lambda m: m["bytes_looped"] + m["dropped_bytes"] >= 1000)
    assert counted == {"bytes_out": 1000, "bytes_looped": 0, "dropped_bytes": 1000}
    with pytest.raises(usb.core.USBTimeoutError):
        loopback.dev.read(loopback.ep_in, loopback.max_packet, 200)
    assert loopback.loopback(b"after the reset") == b"after the reset"
