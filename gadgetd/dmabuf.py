"""FunctionFS DMABUF (Linux 6.9+): FUNCTIONFS_DMABUF_ATTACH, DETACH and TRANSFER on an ep file,
completion by a dma-fence. It needs a UDC with scatter-gather: f_fs's ffs_dmabuf_attach() returns
EPERM when `gadget->sg_supported` is unset, before it looks at the dmabuf fd. Neither of the
UDCs gadgetd is tested on sets it (dummy_hcd.c's dummy_udc_probe() and usbip-vudc's vudc_probe()
fill in name, ops, max_speed and parent only, in 6.1.192 and 7.2.13), and both copy through
req->buf, which a DMABUF request has none of. So gadgetd only asks the kernel, once the endpoint
is enabled, and keeps to AIO; the answer is in the log and the status file.

Asking: ATTACH with fd -1. EPERM: no scatter-gather here; EBADF: the UDC could carry it (the
fd was looked at); ENOTTY: a kernel before 6.9 (EINVAL from some, ENOSYS from qemu-user);
ENODEV: the function is not active; EAGAIN: the endpoint is not enabled (the ep file is
non-blocking). DETACH is never used to ask: 6.9+ dereferences the gadget before any check.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import struct

_IOC_WRITE, _IOC_SIZESHIFT, _IOC_TYPESHIFT = 1, 16, 8


def _iow(kind: str, number: int, size: int) -> int:
    return (_IOC_WRITE << 30) | (size << _IOC_SIZESHIFT) | (ord(kind) << _IOC_TYPESHIFT) | number


class TransferRequest(ctypes.Structure):
    """struct usb_ffs_dmabuf_transfer_req (uapi linux/usb/functionfs.h): packed, 16 bytes."""

    _pack_ = 1
    _fields_ = [("fd", ctypes.c_int), ("flags", ctypes.c_uint32), ("length", ctypes.c_uint64)]


ATTACH = _iow("g", 131, ctypes.sizeof(ctypes.c_int))
DETACH = _iow("g", 132, ctypes.sizeof(ctypes.c_int))
TRANSFER = _iow("g", 133, ctypes.sizeof(TransferRequest))
ANSWERS = {
    errno.EPERM: "not on this UDC (no scatter-gather: gadget->sg_supported unset)",
    errno.EBADF: "possible (the UDC has scatter-gather)",
    errno.ENOTTY: "not in this kernel (FunctionFS DMABUF came in 6.9)",
    errno.EINVAL: "not in this kernel (FunctionFS DMABUF came in 6.9)",
    # qemu-user (the armel tests) answers ioctls it does not know itself, with ENOSYS
    errno.ENOSYS: "not in this kernel (FunctionFS DMABUF came in 6.9)",
    errno.ENODEV: "unknown: the function is not active",
    errno.EAGAIN: "unknown: the endpoint is not enabled",
}


def probe(ep_fd: int) -> str:
    """What the kernel says about DMABUF on this ep file (see the module docstring)."""
    try:
        fcntl.ioctl(ep_fd, ATTACH, struct.pack("i", -1))
    except OSError as exc:
        name = errno.errorcode.get(exc.errno, exc.errno)
        return ANSWERS.get(exc.errno, f"unknown: ATTACH failed with {name}")
    return ANSWERS[errno.EBADF]  # fd -1 attached: not what any kernel does; taken as possible
