"""Endpoint budgets: a template a named controller cannot serve is refused at check time."""

from dataclasses import replace

import pytest

from gadgetd import controllers, template
from gadgetd.errors import TemplateError


def loopback_with(text, controller):
    return text.replace('udc = "auto"', f'udc = "auto"\ncontroller = "{controller}"')


def with_in_endpoints(spec, count):
    """The loopback layout check refuses extra endpoints: build the model directly."""
    fn = spec.functions["loop0"]
    endpoints = (fn.endpoints[0],) + (fn.endpoints[1],) * count
    return replace(spec, functions={"loop0": replace(fn, endpoints=endpoints)})


def test_dwc2_takes_seven_in_endpoints(loopback_text):
    spec = template.parse(loopback_text, "t.toml")
    assert controllers.check(with_in_endpoints(spec, 7), "dwc2") == []
    crowded = with_in_endpoints(spec, 8)
    assert controllers.check(crowded, "dwc2") == [
        "configuration c.1 needs 8 IN endpoints; dwc2 has 7"]
    assert controllers.check(crowded, None) == []


def test_dummy_udc_has_seven_in_endpoints_with_addresses_of_their_own(loopback_text):
    """dummy_hcd's fixed IN endpoints are ep1/6/11/2 (bulk) and ep5/10/15 (interrupt, which
    bulk endpoints also serve); the generic ep-bin, ep-ein... come next, numbered 1, 2, ..."""
    spec = template.parse(loopback_text, "t.toml")
    assert controllers.check(with_in_endpoints(spec, 4), "dummy_udc") == []
    assert controllers.check(with_in_endpoints(spec, 5), "dummy_udc") == [
        "configuration c.1: on dummy_udc, loop0's bulk IN endpoint would get address 0x81, as "
        "loop0's bulk IN endpoint has (epautoconf numbers dummy_udc's generic endpoints from 1); "
        "the host would drop it"]
    assert controllers.check(with_in_endpoints(spec, 12), "dummy_udc") == [
        "configuration c.1 needs 12 IN endpoints; dummy_udc has 11"]


COMPOSITE = """
[gadget]
name = "c"
idVendor = 0x1d6b
idProduct = 0x0104
controller = "dummy_udc"
[[config]]
functions = {functions}
[function.ser0]
type = "acm"
[function.usb0]
type = "ncm"
[function.ecm0]
type = "ecm"
[function.rndis0]
type = "rndis"
[function.hid0]
type = "hid"
report_length = 8
report_desc = "06 00 ff 09 01 a1 01 c0"
"""


def test_dummy_udc_composites_are_replayed_in_link_order():
    """Each kernel function claims data IN, data OUT, then its interrupt IN (usb_ep_autoconfig
    in its bind): acm + ncm + ecm take all seven fixed IN endpoints; rndis's notification
    endpoint would then be the generic ep-bin, numbered 0x81 like acm's data IN."""
    ok = COMPOSITE.format(functions='["ser0", "usb0", "ecm0"]').replace("[function.rndis0]\n"
                                                                       'type = "rndis"\n', "")
    ok = ok[:ok.index("[function.hid0]")]
    template.parse(ok, "t.toml")
    with pytest.raises(TemplateError) as exc:
        template.parse(COMPOSITE.format(functions='["ser0", "usb0", "ecm0", "rndis0", "hid0"]'),
                       "t.toml")
    assert "rndis0's interrupt IN endpoint would get address 0x81, as ser0's bulk IN" in str(
        exc.value)


def test_usbip_vudc_takes_fifteen_in_endpoints(loopback_text):
    spec = template.parse(loopback_text, "t.toml")
    assert controllers.check(with_in_endpoints(spec, 15), "usbip-vudc") == []
    assert controllers.check(with_in_endpoints(spec, 16), "usbip-vudc") == [
        "configuration c.1 needs 16 IN endpoints; usbip-vudc has 15"]


def test_template_names_a_controller_that_cannot_serve_it(loopback_text, monkeypatch):
    tiny = controllers.Budget("tiny", "test", 0, 1, 0, 0, 64)
    monkeypatch.setitem(controllers.BUDGETS, "tiny", tiny)
    with pytest.raises(TemplateError) as exc:
        template.parse(loopback_with(loopback_text, controller="tiny"), "t.toml")
    assert str(exc.value).startswith("t.toml: gadget.controller = 'tiny': configuration c.1")


def test_unknown_controller(loopback_text):
    with pytest.raises(TemplateError) as exc:
        template.parse(loopback_with(loopback_text, controller="musb"), "t.toml")
    assert "must be one of dwc2, dummy_udc" in str(exc.value)


@pytest.mark.parametrize("udc,kind", [("20980000.usb", "dwc2"), ("fe980000.usb", "dwc2"),
                                      ("dummy_udc.0", "dummy_udc"), ("usbip-vudc.0", "usbip-vudc"),
                                      ("musb-hdrc.0", None)])
def test_controller_from_udc_name(tmp_path, udc, kind):
    assert controllers.controller_of(udc, sysfs=tmp_path) == kind


def test_controller_from_sysfs_driver(tmp_path):
    (tmp_path / "drivers" / "dwc2").mkdir(parents=True)
    (tmp_path / "x.usb" / "device").mkdir(parents=True)
    (tmp_path / "x.usb" / "device" / "driver").symlink_to(tmp_path / "drivers" / "dwc2")
    assert controllers.controller_of("x.usb", sysfs=tmp_path) == "dwc2"
