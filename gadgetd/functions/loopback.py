"""Loopback: bulk OUT transfers come back unchanged on bulk IN, transfer boundaries kept.

Framing (the same on every UDC): a transfer ends with a short packet; one whose length is a
multiple of wMaxPacketSize is ended by a zero-length packet, from the host and in the echo.

Data path: `queue_depth` page-aligned buffers of `request_size` bytes (a multiple of 1024, so a
full request never ends a transfer). Each OUT completion is written to IN from the same buffer
(no copy); the buffer is read into again once IN has sent it, which bounds memory and makes a host
that does not read IN stall the OUT side instead of growing a queue.

Vendor requests (recipient interface): ECHO_OUT stores up to 4096 bytes, ECHO_IN returns them,
STATUS returns the counters as JSON.
"""

from __future__ import annotations

import errno
import json

import libaio

from gadgetd.aio import buffer_pool
from gadgetd.function import AioFunction, Stall
from gadgetd.protocol import LOOPBACK_ECHO_IN as ECHO_IN
from gadgetd.protocol import LOOPBACK_ECHO_MAX as ECHO_MAX
from gadgetd.protocol import LOOPBACK_ECHO_OUT as ECHO_OUT
from gadgetd.protocol import LOOPBACK_STATUS as STATUS


class Loopback(AioFunction):
    vendor_requests = {ECHO_OUT: "echo_out", ECHO_IN: "echo_in", STATUS: "send_status"}

    def __init__(self, spec, ep0, endpoints):
        depth, size = spec.queue_depth, spec.request_size
        super().__init__(spec, ep0, endpoints, 3 * depth)
        self.echo = b""
        self.request_size = size
        self.buffers = buffer_pool(depth, size)
        self.views = [memoryview(b) for b in self.buffers]
        self.reads = [self.queue.block(libaio.AIOBLOCK_MODE_READ, self.ep_out,
                                       lambda b, res, _, i=i: self._read_done(i, res))
                      for i in range(depth)]
        for block, buf in zip(self.reads, self.buffers, strict=True):
            block.buffer_list = (buf,)
        self.writes = [self.queue.block(libaio.AIOBLOCK_MODE_WRITE, self.ep_in,
                                        lambda b, res, _, i=i: self._write_done(i, res))
                       for i in range(depth)]
        self.sizes = [0] * depth  # bytes each buffer holds for IN
        self.idle = list(range(depth))  # buffers neither being read into nor written from
        self.zlps: list[libaio.AIOBlock] = []  # spare zero-length IN blocks
        self.max_packet = 512

    # --- events -----------------------------------------------------------------------------
    def on_enable(self):
        super().on_enable()
        try:
            self.max_packet = self.ep_in.getDescriptor().wMaxPacketSize
        except BlockingIOError:
            # Disabled again before this ENABLE was read (host reset storm): another ENABLE or a
            # DISABLE is queued behind it.
            self.counters["stale_enables"] += 1
            return
        self.running = True
        self._fill()

    # --- data path --------------------------------------------------------------------------
    def _fill(self) -> None:
        while self.running and self.idle:
            i = self.idle.pop()
            if not self.queue.submit(self.reads[i]):
                self.idle.append(i)  # endpoint disabled: ENABLE refills
                return

    def _read_done(self, i: int, res: int) -> None:
        if res < 0:
            self.idle.append(i)
            if not self.failed("out", res):
                self._fill()  # SET_INTERFACE re-enables at once: ENABLE may already be handled
            return
        self.counters["bytes_out"] += res
        write = self.writes[i]
        self.sizes[i] = res
        # libaio cannot point an iovec at an empty buffer: a ZLP is a write with no iovec.
        write.buffer_list = (self.views[i][:res],) if res else ()
        ends_transfer = res < self.request_size
        if ends_transfer:
            self.counters["transfers"] += 1
        if not self.queue.submit(write):
            self._dropped(i, res)
            return
        if ends_transfer and res and res % self.max_packet == 0:
            self._send_zlp()

    def _send_zlp(self) -> None:
        block = self.zlps.pop() if self.zlps else self.queue.block(
            libaio.AIOBLOCK_MODE_WRITE, self.ep_in, self._zlp_done)
        if not self.queue.submit(block):
            self.zlps.append(block)
            self.counters["dropped_zlps"] += 1

    def _zlp_done(self, block, res, _res2) -> None:
        self.zlps.append(block)
        if res < 0 and self.failed("in", res):
            self.counters["dropped_zlps"] += 1

    def _write_done(self, i: int, res: int) -> None:
        if res < 0:
            # EAGAIN: IN was disabled before the echo could be queued; ESHUTDOWN/ECONNRESET:
            # disabled (SET_INTERFACE, SET_CONFIGURATION, reset) before the host read it.
            if self.failed("in", res):
                self._dropped(i, self.sizes[i])
                return
            self._dropped(i, self.sizes[i], "IN " + errno.errorcode.get(-res, str(res)))
        else:
            self.counters["bytes_looped"] += res
            self.idle.append(i)
        self._fill()

    def _dropped(self, i: int, size: int, why: str = "IN disabled") -> None:
        """IN refused or cut off the echo (the host disabled the function meanwhile): counted,
        never silent."""
        self.counters["dropped_bytes"] += size
        self.warnings.warn("dropped", "%d bytes read from OUT could not be echoed: %s", size, why)
        self.idle.append(i)

    # --- vendor requests --------------------------------------------------------------------
    def echo_out(self, setup):
        if setup.is_in or setup.length > ECHO_MAX:
            raise Stall()
        self.echo = self.ep0.receive(setup.length)

    def echo_in(self, setup):
        if not setup.is_in:
            raise Stall()
        self.ep0.reply(self.echo[: setup.length])

    def send_status(self, setup):
        if not setup.is_in:
            raise Stall()
        self.ep0.reply(json.dumps(self.status(), sort_keys=True).encode()[: setup.length])
