"""TOML gadget templates -> the validated, immutable model (gadgetd.model).

The schema is documented in configfs_templates/README.md. Every problem is reported as a
TemplateError naming the file, the dotted key and the value, before anything touches the kernel.
A function's type comes from the registry (gadgetd.registry), which also names the type's own keys.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from gadgetd import controllers, registry
from gadgetd.errors import NO_VALUE, TemplateError
from gadgetd.model import (
    DEFAULT_USER,
    EP0_OPEN_MODES,
    MAX_ENDPOINTS_PER_DIRECTION,
    MAX_STRING_LEN,
    TRANSFERS,
    ConfigSpec,
    Endpoint,
    FunctionSpec,
    GadgetOsDesc,
    GadgetSpec,
    Interface,
    KernelFunctionSpec,
    MountOptions,
    OsDescriptors,
)
from gadgetd.toml_table import Table

# configfs/f_fs instance names: MAX_NAME_LEN in usb/gadget/configfs.c and f_fs dev names.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}$")
_LANG_RE = re.compile(r"^0x[0-9a-fA-F]{1,4}$")
_GADGET_STRING_KEYS = ("manufacturer", "product", "serialnumber")
_BCD_USB = (0x0110, 0x0200, 0x0201, 0x0210, 0x0300, 0x0310, 0x0320)
FFS_ROOT = "/run/gadgetd/ffs"  # every FunctionFS mount point is below it


def _string(table: Table, name: str, default=NO_VALUE) -> str:
    text = table.get(name, str, default)
    if text is not None and len(text.encode("utf-16-le")) // 2 > MAX_STRING_LEN:
        raise table.error(name, f"longer than {MAX_STRING_LEN} UTF-16 units", text)
    return text


def _language(table: Table, lang: str) -> int:
    if not _LANG_RE.match(lang):
        raise table.error(lang, "language must be a hex id such as 0x409")
    return int(lang, 16)


def is_name(value: str) -> bool:
    """A valid gadget, function or configuration name (a file name: no `/`, nothing else odd)."""
    return _NAME_RE.fullmatch(value) is not None


def _name(table: Table, name: str, what: str, value=None) -> str:
    value = table.get(name, str) if value is None else value
    if not is_name(value):
        raise table.error(name, f"{what} must be 1-40 characters of A-Z a-z 0-9 _ . -", value)
    return value


def _gadget_strings(gadget: Table) -> dict[int, dict[str, str]]:
    strings = gadget.table("strings", required=False)
    if strings is None:
        return {}
    result = {}
    for lang in strings.data:
        per_lang = strings.table(lang)
        result[_language(strings, lang)] = {
            k: _string(per_lang, k) for k in _GADGET_STRING_KEYS if per_lang.has(k)
        }
        per_lang.done()
    strings.done()
    return result


def _lang_map(table: Table, name: str) -> dict[int, str]:
    """A `strings = { 0x409 = "text" }` table."""
    sub = table.table(name, required=False)
    if sub is None:
        return {}
    result = {_language(sub, lang): _string(sub, lang) for lang in sub.data}
    sub.done()
    return result


def _endpoint(table: Table) -> Endpoint:
    transfer = table.get("transfer", str, "bulk", choices=tuple(TRANSFERS))
    ep = Endpoint(
        direction=table.get("direction", str, choices=("in", "out")),
        transfer=transfer,
        max_packet=table.get("max_packet", int, None, lo=8, hi=1024),
        interval=table.get("interval", int, None if transfer == "bulk" else 1, lo=1, hi=255),
        max_burst=table.get("max_burst", int, 0, lo=0, hi=15),
    )
    if ep.max_packet is not None and transfer == "bulk" and ep.max_packet not in (8, 16, 32, 64):
        # Full speed bulk allows 8..64; high and super speed always use 512 and 1024.
        raise table.error("max_packet", "bulk max_packet must be 8, 16, 32 or 64", ep.max_packet)
    if ep.interval is not None and transfer == "bulk":
        raise table.error("interval", "only interrupt endpoints have an interval", ep.interval)
    table.done()
    return ep


def _mountpoint(table: Table) -> str:
    """A directory below FFS_ROOT, spelled plainly: the root daemon creates and mounts on it."""
    value = table.get("mountpoint", str)
    if not value.startswith(FFS_ROOT + "/"):
        raise table.error("mountpoint", f"must be a directory under {FFS_ROOT}/", value)
    if any(part in ("", ".", "..") or "\0" in part
           for part in value[len(FFS_ROOT) + 1:].split("/")):
        raise table.error("mountpoint", "must not have empty, '.' or '..' components or NULs",
                          value)
    return value


def _function(table: Table, name: str) -> FunctionSpec | KernelFunctionSpec:
    _name(table, name, "a function instance name", value=name)
    type_name = table.get("type", str)
    try:
        ftype = registry.get(type_name)
    except registry.RegistryError as exc:
        raise table.error("type", str(exc), type_name) from None
    if ftype.kind == "kernel":
        spec = ftype.parse(table, name)
        table.done()
        return spec
    mountpoint = _mountpoint(table)
    mount_t = table.table("mount", required=False)
    mount = MountOptions()
    if mount_t is not None:
        mount = MountOptions(
            no_disconnect=mount_t.get("no_disconnect", bool, False),
            uid=mount_t.get("uid", int, None, lo=0, hi=2**32 - 2),
            gid=mount_t.get("gid", int, None, lo=0, hi=2**32 - 2),
            rmode=mount_t.get("rmode", int, None, lo=0, hi=0o7777),
            fmode=mount_t.get("fmode", int, None, lo=0, hi=0o7777),
            mode=mount_t.get("mode", int, None, lo=0, hi=0o7777),
        )
        mount_t.done()
    # An exec function's program may write its own descriptors: then interface and endpoints
    # are optional (declared, they count in the endpoint budget).
    intf_t = table.table("interface", required=ftype.kind != "exec")
    interface = Interface()
    if intf_t is not None:
        interface = Interface(
            cls=intf_t.get("class", int, 0xFF, lo=0, hi=0xFF),
            subclass=intf_t.get("subclass", int, 0, lo=0, hi=0xFF),
            protocol=intf_t.get("protocol", int, 0, lo=0, hi=0xFF),
            strings=_lang_map(intf_t, "strings"),
        )
        intf_t.done()
    endpoints = tuple(_endpoint(t) for t in table.tables("endpoint"))
    for direction in ("in", "out"):
        count = sum(ep.direction == direction for ep in endpoints)
        if count > MAX_ENDPOINTS_PER_DIRECTION:
            raise table.error(
                "endpoint",
                f"too many {direction.upper()} endpoints (at most {MAX_ENDPOINTS_PER_DIRECTION})",
                count,
            )
    request_size = table.get("request_size", int, 16384, lo=1024, hi=4 << 20)
    if request_size % 1024:
        # A multiple of every speed's bulk wMaxPacketSize, so a full request never ends a transfer.
        raise table.error("request_size", "must be a multiple of 1024", request_size)
    spec = FunctionSpec(
        name=name,
        type=ftype.name,
        mountpoint=Path(mountpoint),
        interface=interface,
        endpoints=endpoints,
        mount=mount,
        ep0_open=table.get("ep0_open", str, "blocking", choices=EP0_OPEN_MODES),
        request_size=request_size,
        queue_depth=table.get("queue_depth", int, 4, lo=1, hi=64),
        user=table.get("user", str, DEFAULT_USER),
        allow_root=table.get("allow_root", bool, False),
        os_desc=_function_os_desc(table.table("os_desc", required=False)),
        options=ftype.parse_options(table) if ftype.parse_options else
        {o.name: table.get(o.name, o.kind, o.default, lo=o.lo, hi=o.hi, choices=o.choices)
         for o in ftype.options},
    )
    if (spec.options.get("open") == "gadgetd" and not spec.options.get("descriptors")
            and (intf_t is None or not endpoints)):
        raise table.error("open", "gadgetd writes the descriptors: give [...interface] and "
                          "endpoints, or the descriptors and strings blob files", "gadgetd")
    if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", spec.user):
        raise table.error("user", "not a valid user name", spec.user)
    if spec.user == "root" and not spec.allow_root:
        # Any uid 0 user is refused again at run time (gadgetd.supervisor), from the user database.
        raise table.error("user", f"the worker would run as root: set allow_root = true in "
                          f"[{table.path}] if it must", spec.user)
    table.done()
    problem = ftype.check_layout(spec) if ftype.check_layout else None
    if problem:
        raise table.error("endpoint", problem, [f"{e.transfer} {e.direction}" for e in endpoints])
    return spec


def _ascii_id(table: Table, name: str, default: str) -> str:
    value = table.get(name, str, default)
    if len(value) > 8 or not value.isascii() or not all(c.isalnum() or c == "_" for c in value):
        raise table.error(name, "must be at most 8 ASCII letters, digits or _", value)
    return value


def _function_os_desc(table: Table | None) -> OsDescriptors | None:
    if table is None:
        return None
    props_t = table.table("properties", required=False)
    properties: dict[str, str] = {}
    for name in props_t.data if props_t else ():
        value = props_t.data[name]
        props_t.seen.add(name)
        if isinstance(value, list):
            # composite.c's fill_ext_prop() (6.1) returns -EINVAL for REG_MULTI_SZ: the host's
            # request for the properties is STALLed (seen on 6.1.0-57 with dummy_hcd).
            raise props_t.error(name, "arrays (REG_MULTI_SZ) are refused: the kernel's "
                                "composite layer fails the host's request for them", value)
        if not all(isinstance(v, str) and v.isascii() and "\0" not in v for v in (value, name)):
            # f_fs doubles each length to widen the text to UTF-16: one byte per character.
            raise props_t.error(name, "must be an ASCII string (REG_SZ)", value)
        properties[name] = value
    spec = OsDescriptors(compatible_id=_ascii_id(table, "compatible_id", "WINUSB"),
                         sub_compatible_id=_ascii_id(table, "sub_compatible_id", ""),
                         properties=properties)
    table.done()
    return spec


def _gadget_os_desc(table: Table | None, configs: tuple) -> GadgetOsDesc | None:
    if table is None:
        return None
    spec = GadgetOsDesc(b_vendor_code=table.get("b_vendor_code", int, 0xCD, lo=1, hi=0xFF),
                        qw_sign=table.get("qw_sign", str, "MSFT100"),
                        config=table.get("config", int, 1, lo=1, hi=len(configs)))
    if len(spec.qw_sign) != 7 or not spec.qw_sign.isascii():
        raise table.error("qw_sign", "must be 7 ASCII characters (MSFT100)", spec.qw_sign)
    table.done()
    return spec


def _config(table: Table, number: int, functions: dict[str, FunctionSpec]) -> ConfigSpec:
    linked = tuple(table.get("functions", list))
    if not all(isinstance(f, str) for f in linked):
        raise table.error("functions", "must be an array of function names", list(linked))
    for fname in linked:
        if fname not in functions:
            raise table.error("functions", f"no [function.{fname}] in this template", fname)
    if len(set(linked)) != len(linked):
        raise table.error("functions", "a function is listed twice", list(linked))
    if not linked:
        raise table.error("functions", "a configuration needs at least one function", [])
    attributes = table.get("bmAttributes", int, 0x80, lo=0, hi=0xFF)
    if attributes & ~0xE0 or not attributes & 0x80:
        raise table.error("bmAttributes", "bit 7 must be set; only bits 5-7 may be", attributes)
    max_power = table.get("MaxPower", int, 100, lo=0, hi=900)
    if max_power == 0 and not attributes & 0x40:
        # composite would silently report CONFIG_USB_GADGET_VBUS_DRAW instead.
        raise table.error("MaxPower", "0 needs a self-powered configuration (bmAttributes 0xc0)",
                          max_power)
    spec = ConfigSpec(
        label=_name(table, "label", "a configuration label") if table.has("label") else "c",
        number=number,
        max_power=max_power,
        attributes=attributes,
        strings=_lang_map(table, "strings"),
        functions=linked,
    )
    table.seen.add("label")
    table.done()
    return spec


def parse(text: str, source: str) -> GadgetSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(source, "(file)", f"invalid TOML: {exc}") from None
    root = Table(source, "", data)
    gadget = root.table("gadget")
    functions_t = root.table("function")
    functions = {}
    for fname in functions_t.data:
        functions[fname] = _function(functions_t.table(fname), fname)
    functions_t.done()
    if not functions:
        raise TemplateError(source, "[function]", "missing section: at least one function")
    configs_t = root.tables("config")
    if not configs_t:
        raise TemplateError(source, "[[config]]", "missing section: at least one configuration")
    configs = tuple(_config(t, i + 1, functions) for i, t in enumerate(configs_t))
    unused = sorted(set(functions) - {f for c in configs for f in c.functions})
    if unused:
        raise TemplateError(source, f"function.{unused[0]}", "not linked into any [[config]]")
    spec = GadgetSpec(
        source=source,
        name=_name(gadget, "name", "a gadget name"),
        udc=gadget.get("udc", str, "auto"),
        id_vendor=gadget.get("idVendor", int, lo=0, hi=0xFFFF),
        id_product=gadget.get("idProduct", int, lo=0, hi=0xFFFF),
        bcd_device=gadget.get("bcdDevice", int, 0x0100, lo=0, hi=0xFFFF),
        bcd_usb=gadget.get("bcdUSB", int, 0x0200, choices=_BCD_USB),
        device_class=gadget.get("bDeviceClass", int, 0, lo=0, hi=0xFF),
        device_subclass=gadget.get("bDeviceSubClass", int, 0, lo=0, hi=0xFF),
        device_protocol=gadget.get("bDeviceProtocol", int, 0, lo=0, hi=0xFF),
        strings=_gadget_strings(gadget),
        configs=configs,
        functions=functions,
        controller=gadget.get("controller", str, None),
        os_desc=_gadget_os_desc(gadget.table("os_desc", required=False), configs),
    )
    if any(f.os_desc for f in functions.values()) and spec.os_desc is None:
        raise TemplateError(source, "[gadget.os_desc]", "missing section: a function declares "
                            "MS OS descriptors, which the host is only served with it")
    if spec.controller is not None and spec.controller not in controllers.BUDGETS:
        raise gadget.error("controller", "must be one of " + ", ".join(controllers.BUDGETS),
                           spec.controller)
    named = spec.controller or (controllers.controller_of(spec.udc) if spec.udc != "auto"
                                else None)
    for problem in controllers.check(spec, named):
        raise gadget.error("controller" if spec.controller else "udc", problem,
                           spec.controller or spec.udc)
    gadget.done()
    root.done()
    mounts = [str(f.mountpoint) for f in spec.ffs_functions.values()]
    if len(set(mounts)) != len(mounts):
        raise TemplateError(source, "function.*.mountpoint", "two functions share a mountpoint")
    return spec


def read(path: str | Path) -> str:
    """The template's text; unreadable or not UTF-8 is a TemplateError naming the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(str(path), "(file)", f"cannot read: {exc}") from None


def load(path: str | Path) -> GadgetSpec:
    return parse(read(path), str(path))
