"""Source/sink, speaking the kernel's Gadget Zero protocol (f_sourcesink.c) so that the kernel's
own host test driver `usbtest` and `testusb` run against gadgetd.

Bulk IN is a source and bulk OUT a sink of data in `pattern` 0 (all zeros) or 1 (each packet
holds bytes (i % 63) for i = 0 .. wMaxPacketSize-1, as f_sourcesink writes and checks it). The
vendor requests are Gadget Zero's: 0x5b (OUT, device recipient, wValue = wIndex = 0) stores up to
4096 bytes, 0x5c (IN) returns them.

Data path: `queue_depth` AIO requests of `request_size` bytes per direction, each resubmitted as it
completes. The source writes the same pre-filled buffer over and over (the pattern depends only on
the offset within a packet); the sink checks what it read against a reference buffer with one
C memcmp per request. No per-byte Python work.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os

import functionfs
import libaio

from gadgetd.aio import buffer_pool
from gadgetd.function import AioFunction, Stall
from gadgetd.protocol import GADGET_ZERO_CONTROL_MAX as CONTROL_MAX
from gadgetd.protocol import GADGET_ZERO_READ as CONTROL_READ
from gadgetd.protocol import GADGET_ZERO_WRITE as CONTROL_WRITE

log = logging.getLogger(__name__)



_libc = ctypes.CDLL(None)
_memcmp = _libc.memcmp
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_memcmp.restype = ctypes.c_int


def _address(buf: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def fill_pattern(buf, pattern: int, max_packet: int) -> None:
    """f_sourcesink's reinit_write_data: zeros, or (i % max_packet) % 63 for each byte i."""
    packet = bytes(i % 63 for i in range(max_packet)) if pattern == 1 else bytes(max_packet)
    whole, rest = divmod(len(buf), max_packet)
    buf[: whole * max_packet] = packet * whole
    buf[whole * max_packet:] = packet[:rest]


class SourceSink(AioFunction):
    # Gadget Zero's control requests are addressed to the device, not to our interface.
    ffs_flags = functionfs.ALL_CTRL_RECIP
    vendor_requests = {CONTROL_WRITE: "control_write", CONTROL_READ: "control_read"}

    def __init__(self, spec, ep0, endpoints):
        depth = spec.queue_depth
        super().__init__(spec, ep0, endpoints, 2 * depth)
        self.pattern = spec.options["pattern"]
        self.request_size = spec.request_size
        self.control_buffer = b""
        self.source_buffer = mmap.mmap(-1, self.request_size)
        self.expected = mmap.mmap(-1, self.request_size)
        self.sink_buffers = buffer_pool(depth, self.request_size)
        # The sink's check is one C memcmp per request: comparing memoryviews in Python goes
        # byte by byte (about 20 times slower), and slicing would copy.
        self.expected_address = _address(self.expected)
        self.sink_addresses = [_address(b) for b in self.sink_buffers]
        self.writes = [self.queue.block(libaio.AIOBLOCK_MODE_WRITE, self.ep_in, self._written)
                       for _ in range(depth)]
        self.reads = [self.queue.block(libaio.AIOBLOCK_MODE_READ, self.ep_out,
                                       lambda b, res, _, i=i: self._read(i, res))
                      for i in range(depth)]
        for block in self.writes:
            block.buffer_list = (self.source_buffer,)
        for block, buf in zip(self.reads, self.sink_buffers, strict=True):
            block.buffer_list = (buf,)
        self.idle_writes = list(self.writes)
        self.idle_reads = list(range(depth))

    # --- events -----------------------------------------------------------------------------
    def on_enable(self):
        super().on_enable()
        try:
            max_in = self.ep_in.getDescriptor().wMaxPacketSize
            max_out = self.ep_out.getDescriptor().wMaxPacketSize
        except BlockingIOError:  # disabled again before this ENABLE was read
            self.counters["stale_enables"] += 1
            return
        fill_pattern(self.source_buffer, self.pattern, max_in)
        fill_pattern(self.expected, self.pattern, max_out)
        self.running = True
        self._fill()

    # --- data path --------------------------------------------------------------------------
    def _fill(self) -> None:
        while self.running and self.idle_writes:
            block = self.idle_writes.pop()
            if not self.queue.submit(block):
                self.idle_writes.append(block)
                break
        while self.running and self.idle_reads:
            i = self.idle_reads.pop()
            if not self.queue.submit(self.reads[i]):
                self.idle_reads.append(i)
                break

    def _resubmit(self, block, idle: list, item) -> None:
        if self.running:
            self.queue.resubmit(block, idle, item)
        else:
            idle.append(item)

    def _written(self, block, res, _res2) -> None:
        if res < 0:
            if self.failed("in", res):
                self.idle_writes.append(block)
                return
        else:
            self.counters["bytes_sourced"] += res
        self._resubmit(block, self.idle_writes, block)

    def _read(self, i: int, res: int) -> None:
        if res < 0:
            if self.failed("out", res):
                self.idle_reads.append(i)
                return
        else:
            self.counters["bytes_sunk"] += res
            if _memcmp(self.sink_addresses[i], self.expected_address, res):
                # As f_sourcesink does: a wrong byte halts the OUT endpoint (the host sees
                # EPIPE and clears it) and the request is queued again.
                self.counters["pattern_errors"] += 1
                self.warnings.warn("pattern", "OUT data does not match pattern %d",
                                   self.pattern)
                self._halt_out()
        self._resubmit(self.reads[i], self.idle_reads, i)

    def _halt_out(self) -> None:
        try:  # writing to an OUT endpoint file halts it; f_fs answers EBADMSG
            os.write(self.ep_out.fileno(), b"")
        except OSError as exc:
            if exc.errno != errno.EBADMSG:
                log.warning("%s: halting OUT failed: %s", self.spec.name, exc)

    # --- Gadget Zero's vendor requests -------------------------------------------------------
    def setup_handler(self, setup):
        handler = super().setup_handler(setup)
        if handler is not None and setup.recipient != 0:  # device recipient only
            return None
        return handler

    def control_write(self, setup):
        if setup.is_in or setup.value or setup.index or setup.length > CONTROL_MAX:
            raise Stall()
        self.control_buffer = self.ep0.receive(setup.length)

    def control_read(self, setup):
        if not setup.is_in or setup.value or setup.index or setup.length > CONTROL_MAX:
            raise Stall()
        # f_sourcesink returns whatever its buffer holds; pad with zeros like a fresh buffer.
        data = self.control_buffer[: setup.length]
        self.ep0.reply(data + bytes(setup.length - len(data)))
