"""Gadget Zero data patterns, as f_sourcesink.c writes and checks them, and the template keys."""

import pytest

from gadgetd import template
from gadgetd.functions.sourcesink import fill_pattern


@pytest.mark.parametrize("max_packet", [64, 512, 1024])
def test_pattern_1_is_i_mod_maxpacket_mod_63(max_packet):
    buf = bytearray(3 * max_packet + 100)
    fill_pattern(buf, 1, max_packet)
    assert buf == bytes((i % max_packet) % 63 for i in range(len(buf)))


def test_pattern_0_is_zeros():
    buf = bytearray(b"\xff" * 5000)
    fill_pattern(buf, 0, 512)
    assert buf == bytes(5000)


def test_sourcesink_template(templates_dir):
    spec = template.load(templates_dir / "sourcesink.toml")
    fn = spec.functions["ss0"]
    assert (spec.id_vendor, spec.id_product) == (0x0525, 0xA4A0)  # what usbtest binds to
    assert (fn.type, fn.options["pattern"], fn.request_size, fn.queue_depth) == ("sourcesink", 0, 65536, 8)


def test_pattern_is_validated(templates_dir):
    text = (templates_dir / "sourcesink.toml").read_text().replace("pattern = 0", "pattern = 2")
    with pytest.raises(template.TemplateError) as exc:
        template.parse(text, "s.toml")
    assert str(exc.value) == "s.toml: function.ss0.pattern = 2: must be one of 0, 1"


def test_pattern_only_for_sourcesink(loopback_text):
    text = loopback_text.replace('type = "loopback"', 'type = "loopback"\npattern = 1')
    with pytest.raises(template.TemplateError) as exc:
        template.parse(text, "l.toml")
    assert "function.loop0.pattern" in str(exc.value) and "unknown key" in str(exc.value)
