"""Control transfers through usbfs URBs, for what libusb refuses to send: a wLength over 4096
(libusb caps control data at 4096 bytes; a hostile or broken host is not bound by that).

One URB is submitted on a fresh open of the device node and reaped without blocking until it
completes or the timeout passes (then it is discarded and reaped). Vendor requests need no claimed
interface (usbfs lets them through), so this works beside a pyusb handle on the same device.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import time

import usb.core

_URB_TYPE_CONTROL = 2


class _Urb(ctypes.Structure):  # struct usbdevfs_urb (linux/usbdevice_fs.h), without iso frames
    _fields_ = [("type", ctypes.c_ubyte), ("endpoint", ctypes.c_ubyte), ("status", ctypes.c_int),
                ("flags", ctypes.c_uint), ("buffer", ctypes.c_void_p),
                ("buffer_length", ctypes.c_int), ("actual_length", ctypes.c_int),
                ("start_frame", ctypes.c_int), ("number_of_packets", ctypes.c_int),
                ("error_count", ctypes.c_int), ("signr", ctypes.c_uint),
                ("usercontext", ctypes.c_void_p)]


def _ioc(direction: int, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | ord("U") << 8 | nr


_SUBMITURB = _ioc(2, 10, ctypes.sizeof(_Urb))
_DISCARDURB = _ioc(0, 11, 0)
_REAPURB = _ioc(1, 12, ctypes.sizeof(ctypes.c_void_p))
_REAPURBNDELAY = _ioc(1, 13, ctypes.sizeof(ctypes.c_void_p))
_libc = ctypes.CDLL(None, use_errno=True)


def _ioctl(fd: int, request: int, arg) -> int:
    result = _libc.ioctl(fd, ctypes.c_ulong(request), arg)
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result


def device_node(dev: usb.core.Device) -> str:
    return f"/dev/bus/usb/{dev.bus:03d}/{dev.address:03d}"


def control(dev: usb.core.Device, request_type: int, request: int, value: int, index: int,
            data_or_length: bytes | int, timeout: float = 5.0) -> bytes:
    """One control transfer with any wLength up to 65535: the data read (IN) or b"" (OUT).
    A STALL raises OSError(EPIPE); no completion within `timeout` raises TimeoutError."""
    is_in = bool(request_type & 0x80)
    data = b"" if is_in else bytes(data_or_length)
    length = data_or_length if is_in else len(data)
    buffer = ctypes.create_string_buffer(
        struct.pack("<BBHHH", request_type, request, value, index, length) + data, 8 + length)
    urb = _Urb(type=_URB_TYPE_CONTROL, endpoint=0, buffer=ctypes.addressof(buffer),
               buffer_length=8 + length)
    reaped = ctypes.c_void_p()
    fd = os.open(device_node(dev), os.O_RDWR)
    try:
        _ioctl(fd, _SUBMITURB, ctypes.byref(urb))
        deadline = time.monotonic() + timeout
        while True:
            try:
                _ioctl(fd, _REAPURBNDELAY, ctypes.byref(reaped))
                break
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
            if time.monotonic() > deadline:
                try:
                    _ioctl(fd, _DISCARDURB, ctypes.byref(urb))
                except OSError:  # it completed meanwhile
                    pass
                _ioctl(fd, _REAPURB, ctypes.byref(reaped))
                raise TimeoutError(f"control request {request:#04x} did not complete in {timeout} s")
            time.sleep(0.001)
    finally:
        os.close(fd)
    if urb.status:
        raise OSError(-urb.status, os.strerror(-urb.status))
    return buffer.raw[8:8 + urb.actual_length] if is_in else b""
