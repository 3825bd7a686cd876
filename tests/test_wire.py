"""Descriptor, string and event bytes against golden bytes computed by hand from ch9 and
include/uapi/linux/usb/functionfs.h."""

import dataclasses
import struct

import pytest

from gadgetd import template, wire


def le32(*values):
    return b"".join(struct.pack("<I", v) for v in values)


INTERFACE = bytes([9, 4, 0, 0, 2, 0xFF, 0, 0, 1])  # bLength, INTERFACE, num 0, alt 0, 2 eps,
#                                                    vendor class, iInterface 1


def endpoint(address, max_packet):
    return bytes([7, 5, address, 2]) + struct.pack("<H", max_packet) + bytes([0])  # bulk


COMPANION = bytes([6, 0x30, 0, 0, 0, 0])  # SS endpoint companion, bMaxBurst 0

FS = INTERFACE + endpoint(0x01, 64) + endpoint(0x82, 64)
HS = INTERFACE + endpoint(0x01, 512) + endpoint(0x82, 512)
SS = INTERFACE + endpoint(0x01, 1024) + COMPANION + endpoint(0x82, 1024) + COMPANION
BODY = le32(3, 3, 5) + FS + HS + SS  # fs_count, hs_count, ss_count
FLAGS = 1 | 2 | 4  # HAS_FS_DESC | HAS_HS_DESC | HAS_SS_DESC
GOLDEN_DESCRIPTORS = le32(3, 12 + len(BODY), FLAGS) + BODY  # magic v2, length, flags

STRING = b"gadgetd loopback\0"
GOLDEN_STRINGS = le32(2, 16 + 2 + len(STRING), 1, 1) + struct.pack("<H", 0x409) + STRING


@pytest.fixture
def loop0(plain_loopback_text):
    return template.parse(plain_loopback_text, "loopback.toml").functions["loop0"]


def test_loopback_descriptors_golden(loop0):
    blob = wire.descriptors_blob(loop0)
    assert len(blob) == 105
    assert blob == GOLDEN_DESCRIPTORS


def test_descriptor_flags_are_ored_in(loop0):
    blob = wire.descriptors_blob(loop0, flags=64)  # ALL_CTRL_RECIP
    assert blob[8:12] == le32(FLAGS | 64)
    assert blob[12:] == GOLDEN_DESCRIPTORS[12:]


def test_loopback_strings_golden(loop0):
    assert wire.strings_blob(loop0) == GOLDEN_STRINGS


def test_interrupt_endpoint_and_burst(plain_loopback_text):
    text = plain_loopback_text.replace('direction = "in"\ntransfer = "bulk"',
                                 'direction = "in"\ntransfer = "bulk"\nmax_burst = 3')
    fn = template.parse(text, "t.toml").functions["loop0"]
    blob = wire.descriptors_blob(fn)
    assert blob.endswith(endpoint(0x82, 1024) + bytes([6, 0x30, 3, 0, 0, 0]))


def test_no_interface_string_means_no_string_index(plain_loopback_text):
    text = plain_loopback_text.replace('strings = { 0x409 = "gadgetd loopback" }\n', "")
    fn = template.parse(text, "t.toml").functions["loop0"]
    assert wire.descriptors_blob(fn)[24 + 8] == 0  # iInterface of the FS interface
    assert wire.strings_blob(fn) == le32(2, 16, 0, 0)


def test_parse_events():
    setup = bytes([0xC1, 0x02, 0x34, 0x12, 0x00, 0x00, 0x00, 0x10])  # IN vendor intf, wLength 4096
    raw = (bytes(8) + bytes([2, 0, 0, 0])  # ENABLE
           + setup + bytes([4, 0, 0, 0])  # SETUP
           + bytes(8) + bytes([3, 0, 0, 0]))  # DISABLE
    events = wire.parse_events(raw)
    assert [e.name for e in events] == ["ENABLE", "SETUP", "DISABLE"]
    s = events[1].setup
    assert (s.request_type, s.request, s.value, s.index, s.length) == (0xC1, 2, 0x1234, 0, 4096)
    assert s.is_in and s.kind == 0x40 and s.recipient == 1
    assert events[0].setup is None


def test_parse_events_rejects_partial_record():
    with pytest.raises(ValueError):
        wire.parse_events(bytes(13))


def test_all_event_types_named():
    names = [wire.parse_events(bytes(8) + bytes([t, 0, 0, 0]))[0].name for t in range(7)]
    assert names == ["BIND", "UNBIND", "ENABLE", "DISABLE", "SETUP", "SUSPEND", "RESUME"]


OS_DESC = '''
[gadget.os_desc]
b_vendor_code = 0xcd
qw_sign = "MSFT100"

[function.loop0.os_desc]
compatible_id = "WINUSB"
properties = { DeviceInterfaceGUID = "{8fe6d4d7-49dd-41e7-9486-49afc6bfe475}" }
'''


def test_ms_os_descriptors_golden(plain_loopback_text):
    fn = template.parse(plain_loopback_text + OS_DESC, "t.toml").functions["loop0"]
    blob = wire.descriptors_blob(fn)
    # Extended compat ID: interface 0, dwLength 35, bcdVersion 1, wIndex 4, bCount 1, reserved,
    # then bFirstInterfaceNumber 0, Reserved1 1, "WINUSB\0\0", 8 zero bytes, 6 reserved zeros.
    compat = (bytes([0]) + struct.pack("<IHHBB", 35, 1, 4, 1, 0)
              + bytes([0, 1]) + b"WINUSB\0\0" + bytes(8) + bytes(6))
    # FunctionFS takes 8-bit text; composite widens it to UTF-16 for the host.
    name = b"DeviceInterfaceGUID\0"  # 20 bytes
    value = b"{8fe6d4d7-49dd-41e7-9486-49afc6bfe475}\0"  # 39 bytes
    prop = (struct.pack("<IIH", 4 + 4 + 2 + len(name) + 4 + len(value), 1, len(name)) + name
            + struct.pack("<I", len(value)) + value)
    props = bytes([0]) + struct.pack("<IHHH", 11 + len(prop), 1, 5, 1) + prop
    assert blob[8:12] == le32(FLAGS | 8)  # HAS_MS_OS_DESC
    assert blob[12:28] == le32(3, 3, 5, 2)  # fs, hs, ss, os counts
    assert blob[28:].startswith(FS + HS + SS)
    assert blob.endswith(compat + props)
    assert len(blob) == 16 + len(BODY) + len(compat) + len(props)


def test_multi_sz_property_is_refused(plain_loopback_text):
    """The kernel's composite layer STALLs the host's request for REG_MULTI_SZ properties
    (fill_ext_prop() returns -EINVAL): refused before anything reaches it."""
    text = plain_loopback_text + OS_DESC.replace(
        'DeviceInterfaceGUID = "{8fe6d4d7-49dd-41e7-9486-49afc6bfe475}"',
        'DeviceInterfaceGUIDs = ["{a}", "{b}"]')
    with pytest.raises(template.TemplateError) as exc:
        template.parse(text, "t.toml")
    assert str(exc.value) == ("t.toml: function.loop0.os_desc.properties.DeviceInterfaceGUIDs = "
                              "['{a}', '{b}']: arrays (REG_MULTI_SZ) are refused: the kernel's "
                              "composite layer fails the host's request for them")


def test_os_desc_needs_the_gadget_section(plain_loopback_text):
    text = plain_loopback_text + '\n[function.loop0.os_desc]\ncompatible_id = "WINUSB"\n'
    with pytest.raises(template.TemplateError) as exc:
        template.parse(text, "t.toml")
    assert str(exc.value).startswith("t.toml: [gadget.os_desc]: missing section")


def test_os_desc_properties_must_be_ascii(plain_loopback_text):
    text = plain_loopback_text + OS_DESC.replace("{8fe6d4d7", "{8fé6d4d7")
    with pytest.raises(template.TemplateError) as exc:
        template.parse(text, "t.toml")
    assert "function.loop0.os_desc.properties.DeviceInterfaceGUID" in str(exc.value)


def test_control_only_function_has_just_its_interface(loop0):
    """A function type without endpoints (the greeting example): one interface descriptor per
    speed, bNumEndpoints 0, byte for byte."""
    fn = dataclasses.replace(loop0, endpoints=())
    interface = bytes([9, 4, 0, 0, 0, 0xFF, 0, 0, 1])  # bLength, INTERFACE, ..., iInterface 1
    body = le32(1, 1, 1) + interface * 3
    assert wire.descriptors_blob(fn) == le32(3, 12 + len(body), FLAGS) + body
