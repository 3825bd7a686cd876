"""FunctionFS wire formats as pure functions: descriptor and string blobs, ep0 event records.

Structures and builders come from python-functionfs; this module only decides what goes in them.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

import functionfs
from functionfs import ch9

from gadgetd.model import FunctionSpec

EVENT_SIZE = ctypes.sizeof(functionfs.Event)  # 12: struct usb_ctrlrequest + type + 3 pad bytes
EVENT_NAMES = {
    functionfs.BIND: "BIND",
    functionfs.UNBIND: "UNBIND",
    functionfs.ENABLE: "ENABLE",
    functionfs.DISABLE: "DISABLE",
    functionfs.SETUP: "SETUP",
    functionfs.SUSPEND: "SUSPEND",
    functionfs.RESUME: "RESUME",
}
MAX_EVENTS = 4  # f_fs queues at most four events


@dataclass(frozen=True)
class Setup:
    request_type: int
    request: int
    value: int
    index: int
    length: int

    @property
    def is_in(self) -> bool:
        return bool(self.request_type & ch9.USB_DIR_IN)

    @property
    def kind(self) -> int:
        return self.request_type & ch9.USB_TYPE_MASK

    @property
    def recipient(self) -> int:
        return self.request_type & ch9.USB_RECIP_MASK


@dataclass(frozen=True)
class Event:
    type: int
    setup: Setup | None = None  # only for SETUP

    @property
    def name(self) -> str:
        return EVENT_NAMES.get(self.type, f"UNKNOWN({self.type})")


def parse_events(buf: bytes) -> list[Event]:
    """Split what read(ep0) returned into events; a trailing partial record is an error."""
    if len(buf) % EVENT_SIZE:
        raise ValueError(f"ep0 read returned {len(buf)} bytes, not a multiple of {EVENT_SIZE}")
    events = []
    for offset in range(0, len(buf), EVENT_SIZE):
        raw = functionfs.Event.from_buffer_copy(buf, offset)
        setup = None
        if raw.type == functionfs.SETUP:
            s = raw.u.setup
            setup = Setup(s.bRequestType, s.bRequest, s.wValue, s.wIndex, s.wLength)
        events.append(Event(raw.type, setup))
    return events


def speed_descriptors(fn: FunctionSpec):
    """(fs, hs, ss) descriptor lists for one interface with the template's endpoints."""
    endpoints = []
    for ep in fn.endpoints:
        kw = {
            # Address 0 on the first endpoint makes python-functionfs number them 1, 2, ...
            "bEndpointAddress": ch9.USB_DIR_IN if ep.is_in else ch9.USB_DIR_OUT,
            "bmAttributes": ep.attributes,
        }
        if ep.max_packet is not None:
            kw["wMaxPacketSize"] = ep.max_packet
        if ep.interval is not None:
            kw["bInterval"] = ep.interval
        endpoints.append({"endpoint": kw, "superspeed": {"bMaxBurst": ep.max_burst}})
    interface = {
        "bInterfaceNumber": 0,
        "bAlternateSetting": 0,
        "bInterfaceClass": fn.interface.cls,
        "bInterfaceSubClass": fn.interface.subclass,
        "bInterfaceProtocol": fn.interface.protocol,
        "iInterface": 1 if fn.interface.strings else 0,
    }
    if not endpoints:  # a control-only function (python-functionfs wants at least one endpoint)
        descriptor = functionfs.getDescriptor(functionfs.USBInterfaceDescriptor, bNumEndpoints=0,
                                              **interface)
        return [descriptor], [descriptor], [descriptor]
    return functionfs.getInterfaceInAllSpeeds(interface, endpoints)


REG_SZ = 1  # the only type composite.c's fill_ext_prop() serves from FunctionFS


def _asciiz(text: str) -> bytes:
    return (text + "\0").encode("ascii")


def os_descriptors(fn: FunctionSpec) -> list:
    """MS OS descriptors for interface 0: extended compat ID, then extended properties."""
    if fn.os_desc is None:
        return []
    d = fn.os_desc
    compat = functionfs.OSExtCompatDesc(
        bFirstInterfaceNumber=0, Reserved1=1,
        CompatibleID=(ctypes.c_uint8 * 8)(*d.compatible_id.encode().ljust(8, b"\0")),
        SubCompatibleID=(ctypes.c_uint8 * 8)(*d.sub_compatible_id.encode().ljust(8, b"\0")))
    result = [functionfs.getOSDesc(0, [compat])]
    if d.properties:
        result.append(_ext_properties(d.properties))
    return result


def _ext_properties(properties: dict) -> functionfs.OSDescHeader:
    """Extended properties for interface 0. FunctionFS takes names and string values as 8-bit
    text and the composite layer widens them to UTF-16 for the host. Built here byte by byte:
    python-functionfs wants every property of one layout."""
    body = b""
    for name, value in properties.items():
        data, kind = _asciiz(value), REG_SZ
        key = _asciiz(name)
        body += (struct.pack("<IIH", 14 + len(key) + len(data), kind, len(key)) + key
                 + struct.pack("<I", len(data)) + data)
    # header: interface, dwLength, bcdVersion 1, wIndex 5 (extended properties), wCount
    raw = struct.pack("<BIHHH", 0, 11 + len(body), 1, 5, len(properties)) + body
    klass = type("OSDescProperties", (functionfs.OSDescHeader,),
                 {"_pack_": 1, "_fields_": [("body", ctypes.c_uint8 * len(body))]})
    return klass.from_buffer_copy(raw)


def descriptors_blob(fn: FunctionSpec, flags: int = 0) -> bytes:
    """The v2 descriptor blob (FS, HS and SS sets, MS OS descriptors) written first to ep0."""
    fs, hs, ss = speed_descriptors(fn)
    return bytes(functionfs.serialise(
        functionfs.getDescsV2(flags, fs, hs, ss, os_descriptors(fn))))


def strings_blob(fn: FunctionSpec) -> bytes:
    """The strings blob written second to ep0; it moves the instance to ACTIVE."""
    lang_dict = {lang: [text] for lang, text in sorted(fn.interface.strings.items())}
    return bytes(functionfs.serialise(functionfs.getStrings(lang_dict)))
