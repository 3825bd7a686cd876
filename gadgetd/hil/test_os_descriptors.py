"""MS OS 1.0 descriptors as Windows reads them: the 0xEE string, extended compat ID (WINUSB),
extended properties (DeviceInterfaceGUID). Run when the template declares them."""

from __future__ import annotations

import struct

import pytest


@pytest.fixture
def os_desc(spec):
    if spec.os_desc is None:
        pytest.skip("the template declares no MS OS descriptors")
    return spec.os_desc


def test_os_string_descriptor(device, os_desc):
    raw = bytes(device.ctrl_transfer(0x80, 0x06, 0x03EE, 0, 18))  # GET_DESCRIPTOR string 0xEE
    assert raw[:2] == bytes([18, 3])
    assert raw[2:16].decode("utf-16-le") == os_desc.qw_sign
    assert raw[16] == os_desc.b_vendor_code


def _functions_with_os_desc(spec):
    """(function, its first interface number) for those with MS OS descriptors in the os_desc
    configuration: composite numbers interfaces in link order, kernel functions' included."""
    cfg = spec.configs[spec.os_desc.config - 1]
    found, at = [], 0
    for name in cfg.functions:
        fn = spec.functions[name]
        if fn.os_desc:
            found.append((fn, at))
        at += fn.interfaces
    return found


def test_extended_compat_id(device, spec, os_desc):
    """One section per interface the kernel reports; ours are found by bFirstInterfaceNumber
    (in a composite, kernel functions such as NCM and RNDIS report sections of their own)."""
    raw = bytes(device.ctrl_transfer(0xC0, os_desc.b_vendor_code, 0, 4, 4096))
    length, version, index, count = struct.unpack_from("<IHHB", raw)
    assert (length, version, index) == (len(raw), 0x0100, 4)
    sections = {raw[16 + 24 * i]: raw[16 + 24 * i: 16 + 24 * (i + 1)] for i in range(count)}
    for fn, first in _functions_with_os_desc(spec):
        section = sections[first]
        assert section[1] == 1
        assert section[2:10] == fn.os_desc.compatible_id.encode().ljust(8, b"\0")
        assert section[10:18] == fn.os_desc.sub_compatible_id.encode().ljust(8, b"\0")


def test_extended_properties(device, spec, os_desc):
    fn, first = next(((f, i) for f, i in _functions_with_os_desc(spec) if f.os_desc.properties),
                     (None, None))
    if fn is None:
        pytest.skip("no extended properties declared")
    raw = bytes(device.ctrl_transfer(0xC1, os_desc.b_vendor_code, first, 5, 4096))
    length, version, index, count = struct.unpack_from("<IHHH", raw)
    assert (length, version, index, count) == (len(raw), 0x0100, 5, len(fn.os_desc.properties))
    found, offset = {}, 10
    for _ in range(count):
        size, kind, name_len = struct.unpack_from("<IIH", raw, offset)
        name = raw[offset + 10: offset + 10 + name_len].decode("utf-16-le").rstrip("\0")
        (data_len,) = struct.unpack_from("<I", raw, offset + 10 + name_len)
        data = raw[offset + 14 + name_len: offset + 14 + name_len + data_len]
        assert kind == 1  # REG_SZ: the only type gadgetd declares (composite fails MULTI_SZ)
        found[name] = data.decode("utf-16-le").rstrip("\0")
        offset += size
    assert found == dict(fn.os_desc.properties)
