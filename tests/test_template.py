"""Template validation: every refusal is one line naming file, key and value; exit status 2."""

import subprocess
import sys

import pytest

from gadgetd import template
from gadgetd.errors import TemplateError


def parse(text):
    return template.parse(text, "t.toml")


def refused(text) -> str:
    with pytest.raises(TemplateError) as exc:
        parse(text)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith("t.toml: ")
    return message


def test_loopback_template_model(loopback_text):
    spec = parse(loopback_text)
    assert (spec.name, spec.udc, spec.id_vendor, spec.id_product) == (
        "gadgetd-loopback", "auto", 0x1D6B, 0x0104)
    assert spec.strings[0x409]["product"] == "gadgetd loopback"
    (cfg,) = spec.configs
    assert (cfg.configfs_name, cfg.max_power, cfg.attributes, cfg.functions) == (
        "c.1", 100, 0x80, ("loop0",))
    fn = spec.functions["loop0"]
    assert fn.configfs_name == "ffs.loop0"
    assert str(fn.mountpoint) == "/run/gadgetd/ffs/loop0"
    assert [(e.direction, e.transfer) for e in fn.endpoints] == [("out", "bulk"), ("in", "bulk")]
    assert fn.mount.as_option_string() == "no_disconnect=0"


def test_unknown_key(loopback_text):
    msg = refused(loopback_text.replace("idVendor = 0x1d6b", "idVendr = 0x1d6b\nidVendor = 1"))
    assert msg == "t.toml: gadget.idVendr = 7531: unknown key"


def test_wrong_type(loopback_text):
    msg = refused(loopback_text.replace("idProduct = 0x0104", 'idProduct = "0x0104"'))
    assert msg == "t.toml: gadget.idProduct = '0x0104': must be an integer"


def test_bool_is_not_an_integer(loopback_text):
    msg = refused(loopback_text.replace("bDeviceClass = 0x00", "bDeviceClass = true"))
    assert "gadget.bDeviceClass = True: must be an integer" in msg


def test_out_of_range_id(loopback_text):
    msg = refused(loopback_text.replace("idVendor = 0x1d6b", "idVendor = 0x12345"))
    assert msg == "t.toml: gadget.idVendor = 74565: out of range 0..0xffff"


def test_too_many_endpoints(loopback_text):
    extra = '\n[[function.loop0.endpoint]]\ndirection = "in"\n' * 16
    msg = refused(loopback_text + extra)
    assert "function.loop0.endpoint = 17: too many IN endpoints (at most 15)" in msg


def test_loopback_needs_its_endpoint_pair(loopback_text):
    msg = refused(loopback_text + '\n[[function.loop0.endpoint]]\ndirection = "in"\n')
    assert "needs exactly one bulk IN and one bulk OUT" in msg


def test_missing_section(loopback_text):
    start = loopback_text.index("[gadget]")
    end = loopback_text.index("[[config]]")
    msg = refused(loopback_text[:start] + loopback_text[end:])
    assert msg.startswith("t.toml: [gadget]: missing section")


def test_missing_config(loopback_text):
    start = loopback_text.index("[[config]]")
    end = loopback_text.index("[function.loop0]")
    assert "[[config]]: missing section" in refused(loopback_text[:start] + loopback_text[end:])


def test_bad_toml():
    assert "invalid TOML" in refused("[gadget\n")


def test_function_not_linked(loopback_text):
    text = loopback_text + ('\n[function.spare]\ntype = "loopback"\nmountpoint = "/run/gadgetd/ffs/x"\n'
                            '[function.spare.interface]\n[[function.spare.endpoint]]\ndirection = "in"\n'
                            '[[function.spare.endpoint]]\ndirection = "out"\n')
    assert "function.spare: not linked" in refused(text)


def test_config_names_unknown_function(loopback_text):
    msg = refused(loopback_text.replace('functions = ["loop0"]', 'functions = ["loop1"]'))
    assert msg == "t.toml: config[0].functions = 'loop1': no [function.loop1] in this template"


def test_string_too_long(loopback_text):
    msg = refused(loopback_text.replace('product = "gadgetd loopback"', f'product = "{"x" * 127}"'))
    assert "gadget.strings.0x409.product" in msg and "longer than 126" in msg


def test_bad_names_and_paths(loopback_text):
    assert "a gadget name" in refused(loopback_text.replace('"gadgetd-loopback"', '"a/b"'))
    # `$` also matches before a final newline: the name would have been "gadgetd-loopback\n".
    assert "a gadget name" in refused(loopback_text.replace('"gadgetd-loopback"',
                                                            '"gadgetd-loopback\\n"'))


@pytest.mark.parametrize("mountpoint, problem", [
    ("rel", "must be a directory under /run/gadgetd/ffs/"),
    ("/run/x", "must be a directory under /run/gadgetd/ffs/"),
    ("/etc", "must be a directory under /run/gadgetd/ffs/"),
    ("/run/gadgetd/ffs", "must be a directory under /run/gadgetd/ffs/"),
    ("/run/gadgetd/ffsx/loop0", "must be a directory under /run/gadgetd/ffs/"),
    ("/run/gadgetd/ffs/", "must not have empty, '.' or '..' components or NULs"),
    ("/run/gadgetd/ffs/../../../etc", "must not have empty, '.' or '..' components or NULs"),
    ("/run/gadgetd/ffs/a/../b", "must not have empty, '.' or '..' components or NULs"),
    ("/run/gadgetd/ffs/./loop0", "must not have empty, '.' or '..' components or NULs"),
    ("/run/gadgetd/ffs//loop0", "must not have empty, '.' or '..' components or NULs"),
    ("/run/gadgetd/ffs/loop0/", "must not have empty, '.' or '..' components or NULs"),
    ("/run/gadgetd/ffs/lo\\u0000op", "must not have empty, '.' or '..' components or NULs"),
])
def test_mountpoint_outside_the_ffs_root_refused(loopback_text, mountpoint, problem):
    msg = refused(loopback_text.replace('"/run/gadgetd/ffs/loop0"', f'"{mountpoint}"'))
    assert msg.startswith("t.toml: function.loop0.mountpoint = ") and msg.endswith(problem)


@pytest.mark.parametrize("mountpoint", ["/run/gadgetd/ffs/loop0", "/run/gadgetd/ffs/a/b.c/x-1"])
def test_mountpoint_below_the_ffs_root(loopback_text, mountpoint):
    spec = parse(loopback_text.replace('"/run/gadgetd/ffs/loop0"', f'"{mountpoint}"'))
    assert str(spec.functions["loop0"].mountpoint) == mountpoint


def test_max_power_zero_needs_self_powered(loopback_text):
    assert "MaxPower = 0" in refused(loopback_text.replace("MaxPower = 100", "MaxPower = 0"))
    text = loopback_text.replace("MaxPower = 100", "MaxPower = 0").replace(
        "bmAttributes = 0x80", "bmAttributes = 0xc0")
    assert parse(text).configs[0].max_power == 0


def test_request_size_multiple_of_1024(loopback_text):
    msg = refused(loopback_text.replace("request_size = 16384", "request_size = 5000"))
    assert msg == "t.toml: function.loop0.request_size = 5000: must be a multiple of 1024"


def test_mount_options(loopback_text):
    text = loopback_text.replace("no_disconnect = false",
                                 "no_disconnect = true\nuid = 1000\ngid = 100\nmode = 0o660")
    fn = parse(text).functions["loop0"]
    assert fn.mount.as_option_string() == "no_disconnect=1,uid=1000,gid=100,mode=660"


def test_overrides(loopback_text):
    spec = parse(loopback_text).with_overrides(udc="dummy_udc.0", no_disconnect=True,
                                               ep0_open="nonblock")
    fn = spec.functions["loop0"]
    assert (spec.udc, fn.mount.no_disconnect, fn.ep0_open) == ("dummy_udc.0", True, "nonblock")
    same = parse(loopback_text).with_overrides()
    assert same == parse(loopback_text)


def test_shipped_templates_are_valid(templates_dir):
    paths = sorted(templates_dir.glob("*.toml"))
    assert paths
    for path in paths:
        template.load(path)


def gadgetd_check(path, text) -> subprocess.CompletedProcess:
    """`gadgetd check` of `text` written to `path`."""
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "gadgetd", "check", str(path)],
                          capture_output=True, text=True)


def test_check_command_exit_status_and_one_line(tmp_path, loopback_text):
    bad = tmp_path / "bad.toml"
    proc = gadgetd_check(bad, loopback_text.replace("idVendor = 0x1d6b", "idVendor = -1"))
    assert proc.returncode == 2
    assert proc.stderr == f"gadgetd: error: {bad}: gadget.idVendor = -1: out of range 0..0xffff\n"
    proc = gadgetd_check(tmp_path / "good.toml", loopback_text)
    assert proc.returncode == 0 and "ok" in proc.stdout


def test_missing_file(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gadgetd", "check", str(tmp_path / "no.toml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "cannot read" in proc.stderr


def _without_user(text):
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.startswith("user ="))


def test_default_user_is_gadgetd(loopback_text, templates_dir):
    fn = parse(_without_user(loopback_text)).functions["loop0"]
    assert (fn.user, fn.allow_root) == ("gadgetd", False)
    ss = template.load(templates_dir / "sourcesink.toml").functions["ss0"]
    assert ss.user == "gadgetd"


def test_shipped_templates_run_as_gadgetd(templates_dir):
    for path in sorted(templates_dir.glob("*.toml")):
        for fn in template.load(path).ffs_functions.values():
            assert (fn.user, fn.allow_root) == ("gadgetd", False), path


def test_root_refused_without_allow_root(loopback_text):
    text = loopback_text.replace('user = "gadgetd"', 'user = "root"')
    assert refused(text) == ("t.toml: function.loop0.user = 'root': the worker would run as root: "
                             "set allow_root = true in [function.loop0] if it must")
    assert "allow_root" in refused(text.replace('user = "root"', 'user = "root"\nallow_root = false'))


def test_root_accepted_with_allow_root(loopback_text):
    text = loopback_text.replace('user = "gadgetd"', 'user = "root"\nallow_root = true')
    fn = parse(text).functions["loop0"]
    assert (fn.user, fn.allow_root) == ("root", True)


def test_allow_root_must_be_a_bool(loopback_text):
    msg = refused(loopback_text.replace('user = "gadgetd"', 'user = "root"\nallow_root = 1'))
    assert msg == "t.toml: function.loop0.allow_root = 1: must be true or false"
    msg = refused(loopback_text.replace('user = "gadgetd"', 'allow_root = "yes"'))
    assert msg == "t.toml: function.loop0.allow_root = 'yes': must be true or false"


def test_check_command_refuses_a_mountpoint_outside_the_ffs_root(tmp_path, loopback_text):
    bad = tmp_path / "bad.toml"
    proc = gadgetd_check(bad, loopback_text.replace('"/run/gadgetd/ffs/loop0"', '"/etc"'))
    assert proc.returncode == 2
    assert proc.stderr == (f"gadgetd: error: {bad}: function.loop0.mountpoint = '/etc': "
                           "must be a directory under /run/gadgetd/ffs/\n")
