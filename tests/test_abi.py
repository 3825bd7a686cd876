"""The ctypes layouts gadgetd hands to the kernel and to libaio.so, against the C ABI of the arch
the tests run on (scripts/armel-tests.sh runs them on 32-bit ARM under qemu-user). Sources:
include/uapi/linux/aio_abi.h, include/uapi/linux/usb/functionfs.h and ch9.h, libaio.h. The
descriptor, string and event bytes themselves are in test_wire.py."""

import ctypes
import errno
import platform
import struct
import sys

import functionfs
import libaio
import pytest
from functionfs import ch9
from libaio import libaio as L

import gadgetd.aio  # noqa: F401  (anything gadgetd sets in python-libaio at import is in force)

LITTLE = sys.byteorder == "little"


def offset(ctype, path: str) -> int:
    """Offset of a dotted field path such as "u.c.buf" in a ctypes structure."""
    total = 0
    for name in path.split("."):
        total += getattr(ctype, name).offset
        ctype = dict(f[:2] for f in ctype._fields_)[name]
    return total


# struct iocb, aio_abi.h: 64 bytes on every arch; aio_key and aio_rw_flags in byte order.
IOCB = {"data": 0, "key": 8 if LITTLE else 12, "aio_rw_flags": 12 if LITTLE else 8,
        "aio_lio_opcode": 16, "aio_reqprio": 18, "aio_fildes": 20, "u.c.buf": 24,
        "u.c.nbytes": 32, "u.c.offset": 40, "u.c.__pad3": 48, "u.c.flags": 56, "u.c.resfd": 60}
# The kernel's view, in field order: aio_data, (aio_key, aio_rw_flags), aio_lio_opcode,
# aio_reqprio, aio_fildes, aio_buf, aio_nbytes, aio_offset, aio_reserved2, aio_flags, aio_resfd.
KERNEL_IOCB = "=QIIHhIQQqQII"


def test_iocb_offsets():
    assert ctypes.sizeof(L.iocb) == struct.calcsize(KERNEL_IOCB) == 64
    assert {path: offset(L.iocb, path) for path in IOCB} == IOCB


def test_iocb_bytes_are_what_the_kernel_reads():
    cb = L.iocb()
    L.io_prep_pwrite(cb, 5, ctypes.c_void_p(0x89ABCDE0), 0x7654321, 0x0102030405060708)
    L.io_set_eventfd(cb, 9)
    cb.data, cb.key, cb.aio_rw_flags, cb.aio_reqprio = 0x13579BDF, 0x2468, 0x11, -3
    data, first, second, *rest = struct.unpack(KERNEL_IOCB, bytes(cb))
    key, rw_flags = (first, second) if LITTLE else (second, first)
    assert (data, key, rw_flags) == (0x13579BDF, 0x2468, 0x11)
    # High halves of pointer-sized fields are zero on 32-bit: the kernel refuses the iocb otherwise.
    assert rest == [L.IO_CMD_PWRITE, -3, 5, 0x89ABCDE0, 0x7654321, 0x0102030405060708, 0,
                    L.IOCB_FLAG_RESFD, 9]


def test_aioblock_as_gadgetd_builds_it():
    """gadgetd's AioQueue.block(): a PWRITEV of one iovec, completion signalled on an eventfd."""
    buf = bytearray(64)
    with open("/dev/null", "wb") as f:
        block = libaio.AIOBlock(mode=libaio.AIOBLOCK_MODE_WRITE, target_file=f,
                                buffer_list=[buf], eventfd=11)
        iocb = struct.unpack(KERNEL_IOCB, bytes(block._iocb))
        assert iocb[3:6] == (L.IO_CMD_PWRITEV, 0, f.fileno())
        assert iocb[7:] == (1, 0, 0, L.IOCB_FLAG_RESFD, 11)  # one iovec, offset 0
        # aio_buf points at a native struct iovec { void *iov_base; size_t iov_len; }.
        iov = struct.unpack("@PN", ctypes.string_at(iocb[6], struct.calcsize("@PN")))
        assert iov == (ctypes.addressof((ctypes.c_char * 64).from_buffer(buf)), 64)


def test_io_event_from_kernel_bytes():
    cb = L.iocb()
    raw = struct.pack("=QQqq", 0x2468ACE0, ctypes.addressof(cb), -errno.ECONNRESET, 7)
    assert ctypes.sizeof(L.io_event) == len(raw) == 32
    ev = L.io_event.from_buffer_copy(raw)
    assert (ev.data, ctypes.addressof(ev.obj.contents), ev.res, ev.res2) == (
        0x2468ACE0, ctypes.addressof(cb), -errno.ECONNRESET, 7)


@pytest.mark.parametrize("ctype, size", [
    (functionfs.Event, 12),  # struct usb_functionfs_event: usb_ctrlrequest, type, 3 pad bytes
    (functionfs.DescsHeadV2, 12),
    (functionfs.StringsHead, 16),
    (functionfs.OSDescHeader, 11),
    (functionfs.OSExtCompatDesc, 24),
    (functionfs.OSExtPropDescHead, 10),
    (ch9.USBCtrlRequest, 8),
    (ch9.USBInterfaceDescriptor, 9),
    (ch9.USBEndpointDescriptorNoAudio, 7),  # what the descriptor blob carries
    (ch9.USBEndpointDescriptor, 9),  # what FUNCTIONFS_ENDPOINT_DESC copies out
    (ch9.USBSSEPCompDescriptor, 6),
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_functionfs_sizes(ctype, size):
    assert ctypes.sizeof(ctype) == size


def test_event_type_follows_the_setup_packet():
    assert (functionfs.Event.u.offset, functionfs.Event.u.size, functionfs.Event.type.offset) == (
        0, 8, 8)


@pytest.mark.skipif(platform.machine().startswith(("mips", "ppc", "powerpc", "sparc", "alpha")),
                    reason="asm-generic/ioctl.h encoding only")
def test_functionfs_ioctl_numbers():
    # The numbers <linux/usb/functionfs.h> gives; ENDPOINT_DESC carries sizeof(endpoint desc) 9.
    assert [functionfs.INTERFACE_REVMAP, functionfs.ENDPOINT_REVMAP, functionfs.ENDPOINT_DESC,
            functionfs.CLEAR_HALT, functionfs.FIFO_STATUS, functionfs.FIFO_FLUSH] == [
        0x6780, 0x6781, 0x80096782, 0x6703, 0x6701, 0x6702]
