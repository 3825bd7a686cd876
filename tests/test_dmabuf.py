"""The DMABUF ioctls as the uapi header defines them (x86_64 values computed from
linux/usb/functionfs.h of 7.2), and the probe's reading of the kernel's answers."""

import ctypes
import os

from gadgetd import dmabuf


def test_ioctl_numbers_are_the_uapi_s():
    assert (dmabuf.ATTACH, dmabuf.DETACH, dmabuf.TRANSFER) == (0x40046783, 0x40046784, 0x40106785)


def test_the_transfer_request_is_packed_in_16_bytes():
    req = dmabuf.TransferRequest(fd=7, flags=0, length=1 << 20)
    assert ctypes.sizeof(req) == 16
    assert [getattr(dmabuf.TransferRequest, f).offset for f in ("fd", "flags", "length")] == [0, 4, 8]
    assert bytes(req) == (7).to_bytes(4, "little") + bytes(4) + (1 << 20).to_bytes(8, "little")


def test_a_file_without_the_ioctl_is_a_kernel_without_dmabuf():
    read, write = os.pipe()
    try:
        assert dmabuf.probe(read) == "not in this kernel (FunctionFS DMABUF came in 6.9)"
    finally:
        os.close(read)
        os.close(write)
