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
    assert controllers.check(crowded, "dummy_udc") == []
    assert controllers.check(crowded, None) == []


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
