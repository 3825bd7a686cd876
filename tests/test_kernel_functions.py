"""Kernel functions in templates (acm, ecm, ncm, rndis, mass_storage, hid): what each becomes
in configfs, and every refusal one line naming file, key and value, before the kernel is touched."""

import subprocess
import sys

import pytest

from gadgetd import template, templates
from gadgetd.model import FunctionSpec, KernelFunctionSpec
from tests.test_template import parse, refused

HEAD = """
[gadget]
name = "composite"
idVendor = 0x1d6b
idProduct = 0x0104
{controller}

[[config]]
functions = [{functions}]
"""
LOOP = """
[function.loop0]
type = "loopback"
mountpoint = "/run/gadgetd/ffs/loop0"
[function.loop0.interface]
[[function.loop0.endpoint]]
direction = "out"
[[function.loop0.endpoint]]
direction = "in"
"""
KEYBOARD = "05 01 09 06 a1 01 05 07 19 e0 29 e7 15 00 25 01 75 01 95 08 81 02 c0"


def composite(disk, controller=""):
    return HEAD.format(controller=controller, functions='"ser0", "usb0", "ecm0", "rndis0", '
                       '"disk0", "kbd0", "loop0"') + LOOP + f"""
[function.ser0]
type = "acm"

[function.usb0]
type = "ncm"
dev_addr = "02:00:00:00:00:01"
host_addr = "02:00:00:00:00:02"
qmult = 5
ifname = "usb%d"

[function.ecm0]
type = "ecm"

[function.rndis0]
type = "rndis"
[function.rndis0.os_desc]
[gadget.os_desc]

[function.disk0]
type = "mass_storage"
[[function.disk0.lun]]
file = "{disk}"
removable = true
inquiry_string = "gadgetd disk            0001"
[[function.disk0.lun]]
removable = true
cdrom = true

[function.kbd0]
type = "hid"
protocol = 1
subclass = 1
report_length = 8
report_desc = "{KEYBOARD}"
"""


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * 65536)
    return str(path)


def test_a_composite_becomes_configfs_functions_in_order(disk):
    spec = parse(composite(disk))
    assert list(spec.ffs_functions) == ["loop0"]
    kinds = {n: f.configfs_name for n, f in spec.functions.items()
             if isinstance(f, KernelFunctionSpec)}
    assert kinds == {"ser0": "acm.ser0", "usb0": "ncm.usb0", "ecm0": "ecm.ecm0",
                     "rndis0": "rndis.rndis0", "disk0": "mass_storage.disk0", "kbd0": "hid.kbd0"}
    assert spec.configs[0].functions == ("ser0", "usb0", "ecm0", "rndis0", "disk0", "kbd0",
                                         "loop0")
    usb0 = spec.functions["usb0"]
    assert usb0.attributes == (("dev_addr", "02:00:00:00:00:01"),
                               ("host_addr", "02:00:00:00:00:02"), ("qmult", "5"),
                               ("ifname", "usb%d"))
    assert spec.functions["ecm0"].attributes == ()  # the kernel picks random addresses
    rndis = spec.functions["rndis0"]
    assert dict(rndis.attributes)["class"] == "224"
    assert (rndis.os_desc.compatible_id, rndis.os_desc.sub_compatible_id) == ("RNDIS", "5162001")
    lun0, lun1 = spec.functions["disk0"].luns
    assert lun0[-1] == ("file", disk)  # last: ro and cdrom are refused once a file is open
    assert dict(lun1) == {"ro": "1", "removable": "1", "cdrom": "1", "nofua": "0"}
    kbd = dict(spec.functions["kbd0"].attributes)
    assert kbd["report_desc"] == bytes.fromhex(KEYBOARD)
    assert (kbd["protocol"], kbd["subclass"], kbd["report_length"]) == ("1", "1", "8")
    assert sum(f.interfaces for f in spec.functions.values()) == 11


def test_endpoints_are_counted_with_the_functionfs_ones(disk):
    spec = parse(composite(disk, ""))
    eps = [e for f in spec.functions.values() for e in f.endpoints]
    assert (sum(e.is_in for e in eps), sum(not e.is_in for e in eps)) == (11, 7)
    message = refused(composite(disk, 'controller = "dummy_udc"'))  # 11 IN, but 7 own addresses
    assert "rndis0's interrupt IN endpoint would get address 0x81" in message
    message = refused(composite(disk, 'controller = "dwc2"'))
    assert "gadget.controller" in message and "needs 11 IN endpoints; dwc2 has 7" in message


def test_the_pi_zero_composite_fits_dwc2():
    spec = template.load(templates.path("pizero-composite"))
    assert spec.controller == "dwc2"
    assert [f.type for f in spec.functions.values()] == ["acm", "ncm", "loopback"]
    assert isinstance(spec.functions["loop0"], FunctionSpec)


def _one(disk, kind, body, extra=""):
    return (HEAD.format(controller="", functions='"f0"') + f'[function.f0]\ntype = "{kind}"\n'
            + body + extra)


@pytest.mark.parametrize("kind,body,key,problem", [
    ("ncm", 'dev_addr = "03:00:00:00:00:01"\n', "function.f0.dev_addr", "unicast"),
    ("ncm", 'dev_addr = "02:00:00:00:00"\n', "function.f0.dev_addr", "MAC address"),
    ("ecm", 'dev_addr = "02:00:00:00:00:01"\nhost_addr = "02:00:00:00:00:01"\n',
     "function.f0.host_addr", "must differ"),
    ("ecm", 'ifname = "usb%d%d"\n', "function.f0.ifname", "at most one %d"),
    ("rndis", "qmult = 0\n", "function.f0.qmult", "out of range"),
    ("acm", "console = true\n", "function.f0.console", "unknown key"),
    ("hid", "report_length = 8\n", "function.f0.report_desc", "either report_desc"),
    ("hid", 'report_length = 8\nreport_desc = "zz"\n', "function.f0.report_desc", "hex bytes"),
    ("hid", 'report_length = 2000\nreport_desc = "c0"\n', "function.f0.report_length",
     "out of range"),
    ("mass_storage", "stall = true\n", "function.f0.lun", "needs 1 to 16"),
    ("mass_storage", "[[function.f0.lun]]\nro = true\n", "function.f0.lun[0].file",
     "only a removable LUN"),
    ("mass_storage", '[[function.f0.lun]]\nfile = "disk.img"\n', "function.f0.lun[0].file",
     "absolute path"),
    ("mass_storage", '[[function.f0.lun]]\nfile = "/nonexistent/disk.img"\n',
     "function.f0.lun[0].file", "No such file"),
    ("mass_storage", '[[function.f0.lun]]\nfile = "/dev/null"\nro = true\n',
     "function.f0.lun[0].file", "regular file or a block device"),
    ("mass_storage", '[[function.f0.lun]]\nremovable = true\ninquiry_string = "'
     + "x" * 29 + '"\n', "function.f0.lun[0].inquiry_string", "at most 28"),
])
def test_kernel_function_refusals(disk, kind, body, key, problem):
    message = refused(_one(disk, kind, body))
    assert f": {key}" in message and problem in message, message


def test_a_backing_file_behind_a_symlink_is_refused(disk, tmp_path):
    link = tmp_path / "link.img"
    link.symlink_to(disk)
    message = refused(_one(disk, "mass_storage", f'[[function.f0.lun]]\nfile = "{link}"\n'))
    assert "symlink" in message and str(link) in message


def test_a_backing_file_it_cannot_write_needs_ro(disk, monkeypatch):
    """The kernel would open it read-only and say nothing (fsg_lun_open falls back on EROFS or
    EACCES); a read-only file system refuses even root, which access(2) reports."""
    from gadgetd.functions import kernel

    monkeypatch.setattr(kernel.os, "access", lambda path, mode: path != disk)
    assert "set ro = true" in refused(_one(disk, "mass_storage",
                                           f'[[function.f0.lun]]\nfile = "{disk}"\n'))
    parse(_one(disk, "mass_storage", f'[[function.f0.lun]]\nfile = "{disk}"\nro = true\n'))


def test_a_report_descriptor_from_a_file(tmp_path, disk):
    desc = tmp_path / "kbd.bin"
    desc.write_bytes(bytes.fromhex(KEYBOARD))
    spec = parse(_one(disk, "hid", f'report_length = 8\nreport_desc_file = "{desc}"\n'
                      "no_out_endpoint = true\n"))
    fn = spec.functions["f0"]
    assert dict(fn.attributes)["report_desc"] == bytes.fromhex(KEYBOARD)
    assert [(e.direction, e.transfer) for e in fn.endpoints] == [("in", "interrupt")]
    desc.write_bytes(b"")
    assert "1 to 4096 bytes" in refused(_one(disk, "hid", f'report_length = 8\n'
                                               f'report_desc_file = "{desc}"\n'))


def test_check_warns_of_host_quirks(disk, tmp_path):
    from gadgetd import host_quirks

    spec = parse(composite(disk))
    found = host_quirks.warnings(spec)
    assert any("RNDIS (rndis0) only as the first function" in w for w in found)
    assert any("macOS drives NCM" in w for w in found)
    assert not any("first configuration" in w for w in found)
    rndis_first = composite(disk).replace('functions = ["ser0", "usb0", "ecm0", "rndis0"',
                                          'functions = ["rndis0", "ser0", "usb0"') \
        .replace('"disk0", "kbd0", "loop0"]', '"disk0", "kbd0", "loop0", "ecm0"]')
    assert not [w for w in host_quirks.warnings(parse(rndis_first)) if "RNDIS" in w]
    path = tmp_path / "t.toml"
    path.write_text(composite(disk))
    out = subprocess.run([sys.executable, "-m", "gadgetd", "check", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.count(": warning: ") == len(found), out.stdout
