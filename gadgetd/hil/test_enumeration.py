"""Enumeration: the device appears and every descriptor matches the template."""

from __future__ import annotations

import time

import usb.util

from gadgetd.host.device import BULK_MAX_PACKET, SPEED_NAMES, wait_for_device
from gadgetd.model import FunctionSpec


def _speed(device) -> str:
    return SPEED_NAMES[device.speed]


def test_device_appears_within_timeout(selector, appear_timeout):
    start = time.monotonic()
    dev = wait_for_device(selector, appear_timeout)
    assert (dev.idVendor, dev.idProduct) == (selector.vendor, selector.product)
    assert time.monotonic() - start < appear_timeout


def test_device_descriptor(device, spec):
    assert device.idVendor == spec.id_vendor
    assert device.idProduct == spec.id_product
    assert device.bcdDevice == spec.bcd_device
    assert (device.bDeviceClass, device.bDeviceSubClass, device.bDeviceProtocol) == (
        spec.device_class, spec.device_subclass, spec.device_protocol)
    assert device.bNumConfigurations == len(spec.configs)
    # composite rewrites bcdUSB by link speed whatever configfs holds.
    if _speed(device).startswith("super"):
        assert device.bcdUSB >= 0x0300
    else:
        assert device.bcdUSB in (0x0200, 0x0201, 0x0210)


def test_device_strings(device, spec):
    assert sorted(usb.util.get_langids(device)) == sorted(spec.strings)
    for lang, strings in spec.strings.items():
        for key, index in (("manufacturer", device.iManufacturer),
                           ("product", device.iProduct),
                           ("serialnumber", device.iSerialNumber)):
            if key in strings:
                assert usb.util.get_string(device, index, lang) == strings[key]


def test_configuration_descriptors(device, spec):
    # composite's encoding: units of 2 mA up to 500 mA, 8 mA up to 900 mA at SuperSpeed.
    limit, unit = (900, 8) if _speed(device).startswith("super") else (500, 2)
    for cfg_spec, cfg in zip(spec.configs, device, strict=True):
        assert cfg.bConfigurationValue == cfg_spec.number
        assert cfg.bmAttributes == cfg_spec.attributes
        assert cfg.bMaxPower == min(cfg_spec.max_power, limit) // unit
        assert cfg.bNumInterfaces == sum(spec.functions[n].interfaces for n in cfg_spec.functions)
        for lang, text in cfg_spec.strings.items():
            assert usb.util.get_string(device, cfg.iConfiguration, lang) == text


def _interfaces(device, spec):
    """(FunctionFS function, its interface) in configuration order: composite numbers the
    interfaces in link order; a kernel function's (two for acm and the ethernet functions) are
    stepped over."""
    cfg = device.get_active_configuration()
    first_alts = sorted((i for i in cfg if i.bAlternateSetting == 0),
                        key=lambda i: i.bInterfaceNumber)
    pairs, at = [], 0
    for name in spec.configs[cfg.bConfigurationValue - 1].functions:
        fn = spec.functions[name]
        if isinstance(fn, FunctionSpec):
            pairs.append((fn, first_alts[at]))
        at += fn.interfaces
    assert at == len(first_alts)
    return pairs


def test_interface_descriptors(device, spec):
    for fn, intf in _interfaces(device, spec):
        assert (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) == (
            fn.interface.cls, fn.interface.subclass, fn.interface.protocol)
        assert intf.bAlternateSetting == 0
        assert intf.bNumEndpoints == len(fn.endpoints)
        for lang, text in fn.interface.strings.items():
            assert usb.util.get_string(device, intf.iInterface, lang) == text


def test_endpoint_descriptors(device, spec):
    speed = _speed(device)
    for fn, intf in _interfaces(device, spec):
        for ep_spec, ep in zip(fn.endpoints, intf, strict=True):
            direction = usb.util.ENDPOINT_IN if ep_spec.is_in else usb.util.ENDPOINT_OUT
            assert usb.util.endpoint_direction(ep.bEndpointAddress) == direction
            assert usb.util.endpoint_type(ep.bmAttributes) == ep_spec.attributes
            if ep_spec.transfer == "bulk":
                expected = BULK_MAX_PACKET[speed]
                if speed == "full" and ep_spec.max_packet:
                    expected = ep_spec.max_packet
                assert ep.wMaxPacketSize == expected
                assert ep.bInterval == 0 or speed != "full"
            if speed.startswith("super"):
                companion = bytes(ep.extra_descriptors)
                assert companion[:2] == bytes([6, 0x30]), "SuperSpeed endpoint companion missing"
                assert companion[2] == ep_spec.max_burst
