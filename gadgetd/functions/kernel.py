"""Functions the kernel implements (kind "kernel"): serial (acm), USB ethernet (ecm, ncm, rndis),
mass storage and HID. gadgetd creates configfs functions/DRIVER.NAME, writes the attributes the
template gives (checked here, before anything reaches the kernel) and links the function into its
configurations; the kernel serves it. Attribute names and limits are those of Linux 6.1's
drivers/usb/gadget/function/ (u_ether_configfs.h, f_mass_storage.c, f_hid.c).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import replace
from pathlib import Path

from gadgetd.model import Endpoint, FunctionType, KernelFunctionSpec, OsDescriptors
from gadgetd.toml_table import Table

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]*(%d)?[A-Za-z0-9_.-]*$")
FSG_MAX_LUNS = 16  # f_mass_storage.c
INQUIRY_STRING_LEN = 28  # storage_common.h: vendor (8) + product (16) + revision (4)
REPORT_DESC_MAX = 4096  # what one configfs attribute write takes
# Endpoints in the order each function's bind claims them (usb_ep_autoconfig: data IN, data
# OUT, then the notification endpoint), which decides the addresses some UDCs give.
BULK_PAIR = (Endpoint("in", "bulk"), Endpoint("out", "bulk"))


def _mac(table: Table, key: str) -> str | None:
    value = table.get(key, str, None)
    if value is None:
        return None
    if not _MAC.match(value):
        raise table.error(key, "must be a MAC address such as 02:00:00:00:00:01", value)
    first = int(value[:2], 16)
    if first & 1 or value.replace(":", "") == "0" * 12:
        raise table.error(key, "must be a unicast address (first octet even, not all zero)",
                          value)
    return value.lower()


def _plain_file(table: Table, key: str, value: str, block_ok: bool) -> Path:
    """An absolute path, spelled plainly and reached without symlinks (the kernel opens it as
    root: no one may swap a link in for it), naming a regular file (or a block device)."""
    path = Path(value)
    if not path.is_absolute() or os.path.normpath(value) != value or "\0" in value:
        raise table.error(key, "must be an absolute path without '.', '..' or '//'", value)
    if os.path.realpath(value) != value:
        raise table.error(key, "must not go through a symlink", value)
    try:
        st = os.stat(value)
    except OSError as exc:
        raise table.error(key, f"cannot be used: {exc.strerror}", value) from None
    if not (stat.S_ISREG(st.st_mode) or block_ok and stat.S_ISBLK(st.st_mode)):
        raise table.error(key, "must be a regular file" + (" or a block device" if block_ok
                                                           else ""), value)
    return path


def _ether(table: Table, name: str, ftype: FunctionType, interrupt_packet: int,
           extra: tuple[tuple[str, str], ...] = ()) -> KernelFunctionSpec:
    attributes = [(key, value) for key in ("dev_addr", "host_addr")
                  if (value := _mac(table, key)) is not None]
    if len(attributes) == 2 and attributes[0][1] == attributes[1][1]:
        raise table.error("host_addr", "must differ from dev_addr", attributes[1][1])
    qmult = table.get("qmult", int, None, lo=1, hi=100)
    if qmult is not None:
        attributes.append(("qmult", str(qmult)))
    ifname = table.get("ifname", str, None)
    if ifname is not None:
        if not 0 < len(ifname) < 16 or not _IFNAME.match(ifname):
            raise table.error("ifname", "must be 1-15 characters of A-Z a-z 0-9 _ . - with at "
                              "most one %d", ifname)
        attributes.append(("ifname", ifname))
    return KernelFunctionSpec(
        name=name, type=ftype.name, driver=ftype.name, attributes=(*attributes, *extra),
        endpoints=(*BULK_PAIR, Endpoint("in", "interrupt", max_packet=interrupt_packet)),
        interfaces=2)


def _parse_acm(table: Table, name: str) -> KernelFunctionSpec:
    return KernelFunctionSpec(name=name, type="acm", driver="acm", interfaces=2,
                              endpoints=(*BULK_PAIR, Endpoint("in", "interrupt", max_packet=10)))


def _parse_ecm(table: Table, name: str) -> KernelFunctionSpec:
    return _ether(table, name, ECM, 16)


def _parse_ncm(table: Table, name: str) -> KernelFunctionSpec:
    return _ether(table, name, NCM, 16)


def _parse_rndis(table: Table, name: str) -> KernelFunctionSpec:
    # Windows' own class triple is wireless/RNDIS (0xe0/0x01/0x03), the kernel's default
    extra = tuple((key, str(table.get(key, int, default, lo=0, hi=0xFF)))
                  for key, default in (("class", 0xE0), ("subclass", 0x01), ("protocol", 0x03)))
    spec = _ether(table, name, RNDIS, 8, extra)
    os_t = table.table("os_desc", required=False)
    if os_t is None:
        return spec
    os_desc = OsDescriptors(compatible_id=os_t.get("compatible_id", str, "RNDIS"),
                            sub_compatible_id=os_t.get("sub_compatible_id", str, "5162001"))
    for key in ("compatible_id", "sub_compatible_id"):
        value = getattr(os_desc, key)
        if len(value) > 8 or not value.isascii() or not value.isalnum():
            raise os_t.error(key, "must be at most 8 ASCII letters or digits", value)
    os_t.done()
    return replace(spec, os_desc=os_desc)


def _lun(table: Table) -> tuple[tuple[str, str], ...]:
    ro = table.get("ro", bool, False)
    removable = table.get("removable", bool, False)
    cdrom = table.get("cdrom", bool, False)
    nofua = table.get("nofua", bool, False)
    attributes = [("ro", str(int(ro or cdrom))), ("removable", str(int(removable))),
                  ("cdrom", str(int(cdrom))), ("nofua", str(int(nofua)))]
    inquiry = table.get("inquiry_string", str, None)
    if inquiry is not None:
        if len(inquiry) > INQUIRY_STRING_LEN or not inquiry.isascii() or not inquiry.isprintable():
            raise table.error("inquiry_string", f"must be at most {INQUIRY_STRING_LEN} printable "
                              "ASCII characters", inquiry)
        attributes.append(("inquiry_string", inquiry))
    backing = table.get("file", str, None)
    if backing is None and not removable:
        raise table.error("file", "missing (only a removable LUN may start without a medium)")
    if backing is not None:
        _plain_file(table, "file", backing, block_ok=True)
        if not (ro or cdrom) and not os.access(backing, os.W_OK):
            raise table.error("file", "is not writable: set ro = true for a read-only LUN",
                              backing)
        attributes.append(("file", backing))  # last: ro and cdrom cannot change once it is open
    table.done()
    return tuple(attributes)


def _parse_mass_storage(table: Table, name: str) -> KernelFunctionSpec:
    luns = table.tables("lun")
    if not 1 <= len(luns) <= FSG_MAX_LUNS:
        raise table.error("lun", f"needs 1 to {FSG_MAX_LUNS} [[...lun]] tables", len(luns))
    stall = table.get("stall", bool, True)
    return KernelFunctionSpec(name=name, type="mass_storage", driver="mass_storage",
                              attributes=(("stall", str(int(stall))),),
                              luns=tuple(_lun(t) for t in luns), endpoints=BULK_PAIR)


def _report_desc(table: Table) -> bytes:
    text, path = table.get("report_desc", str, None), table.get("report_desc_file", str, None)
    if (text is None) == (path is None):
        raise table.error("report_desc", "give either report_desc (hex) or report_desc_file")
    if path is not None:
        data = _plain_file(table, "report_desc_file", path, block_ok=False).read_bytes()
        key, shown = "report_desc_file", path
    else:
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise table.error("report_desc", "must be hex bytes such as '05 01 09 06 ...'",
                              text) from None
        key, shown = "report_desc", text
    if not 0 < len(data) <= REPORT_DESC_MAX:
        raise table.error(key, f"must hold 1 to {REPORT_DESC_MAX} bytes", shown)
    return data


def _parse_hid(table: Table, name: str) -> KernelFunctionSpec:
    report_length = table.get("report_length", int, lo=1, hi=1024)
    no_out = table.get("no_out_endpoint", bool, False)
    attributes = (("subclass", str(table.get("subclass", int, 0, lo=0, hi=0xFF))),
                  ("protocol", str(table.get("protocol", int, 0, lo=0, hi=0xFF))),
                  ("report_length", str(report_length)), ("no_out_endpoint", str(int(no_out))),
                  ("report_desc", _report_desc(table)))
    endpoints = (Endpoint("in", "interrupt", max_packet=report_length),)
    if not no_out:
        endpoints += (Endpoint("out", "interrupt", max_packet=report_length),)
    return KernelFunctionSpec(name=name, type="hid", driver="hid", attributes=attributes,
                              endpoints=endpoints)


ACM = FunctionType(name="acm", kind="kernel", parse=_parse_acm,
                   doc="CDC ACM serial port: /dev/ttyGSn on the gadget, /dev/ttyACMn on the host")
ECM = FunctionType(name="ecm", kind="kernel", parse=_parse_ecm,
                   doc="CDC ECM ethernet (Linux and macOS hosts); dev_addr, host_addr, qmult, "
                       "ifname")
NCM = FunctionType(name="ncm", kind="kernel", parse=_parse_ncm,
                   doc="CDC NCM ethernet (Linux, macOS, Windows 10+); keys as ecm")
RNDIS = FunctionType(name="rndis", kind="kernel", parse=_parse_rndis,
                     doc="RNDIS ethernet (Windows); keys as ecm, class, subclass, protocol, "
                         "os_desc")
MASS_STORAGE = FunctionType(name="mass_storage", kind="kernel", parse=_parse_mass_storage,
                            doc="USB mass storage: [[function.NAME.lun]] file, ro, removable, "
                                "cdrom, nofua, inquiry_string; stall")
HID = FunctionType(name="hid", kind="kernel", parse=_parse_hid,
                   doc="HID: report_desc (hex) or report_desc_file, report_length, subclass, "
                       "protocol, no_out_endpoint; /dev/hidgN on the gadget")
