"""The gadget model: what a template describes, as immutable values, and the limits they obey.

This module imports nothing from gadgetd: the template reader (gadgetd.template) builds these
values, every other layer reads them. A function type (FunctionType) is registered by a package
through the `gadgetd.functions` entry-point group (see gadgetd.registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

# f_fs addresses at most 15 endpoints per direction (USB endpoint numbers 1..15).
MAX_ENDPOINTS_PER_DIRECTION = 15
# USB string descriptors hold at most 126 UTF-16 code units; configfs refuses longer strings.
MAX_STRING_LEN = 126
TRANSFERS = {"bulk": 2, "interrupt": 3}  # bmAttributes transfer type
# How ep0 (and the ep files) are opened: one vocabulary for template, CLI, policy and repro.
# blocking: open(O_RDWR), which may wait for ffs->mutex; nonblock: O_RDWR|O_NDELAY, retried on
# EAGAIN under Ep0OpenPolicy (repro's naive opener, nonblock without retry, is NONBLOCK_ONCE).
BLOCKING, NONBLOCK, NONBLOCK_ONCE = "blocking", "nonblock", "nonblock-once"
EP0_OPEN_MODES = (BLOCKING, NONBLOCK)
# ffs: a FunctionFS function served by a gadgetd worker; kernel: one the kernel implements
# (usb_f_acm, usb_f_ncm, ...), which gadgetd only creates, configures and links in configfs;
# exec: a FunctionFS function served by another program, which gadgetd starts and restarts
FUNCTION_KINDS = ("ffs", "kernel", "exec")
# The worker's user when a template names none: a system user of gadgetd's own (its sysusers.d
# file is gadgetd/systemd/gadgetd.sysusers), not `nobody`, which other daemons share.
DEFAULT_USER = "gadgetd"


@dataclass(frozen=True)
class Endpoint:
    direction: str  # "in" or "out"
    transfer: str  # "bulk" or "interrupt"
    max_packet: int | None = None  # None: the largest the speed allows
    interval: int | None = None  # ms for interrupt endpoints
    max_burst: int = 0  # SuperSpeed companion bMaxBurst

    @property
    def is_in(self) -> bool:
        return self.direction == "in"

    @property
    def attributes(self) -> int:
        return TRANSFERS[self.transfer]


@dataclass(frozen=True)
class Interface:
    cls: int = 0xFF
    subclass: int = 0
    protocol: int = 0
    strings: dict[int, str] = field(default_factory=dict)  # language -> iInterface text


@dataclass(frozen=True)
class MountOptions:
    no_disconnect: bool = False
    uid: int | None = None
    gid: int | None = None
    rmode: int | None = None
    fmode: int | None = None
    mode: int | None = None

    def as_option_string(self) -> str:
        opts = [f"no_disconnect={int(self.no_disconnect)}"]
        for key in ("uid", "gid"):
            if getattr(self, key) is not None:
                opts.append(f"{key}={getattr(self, key)}")
        for key in ("rmode", "fmode", "mode"):
            if getattr(self, key) is not None:
                opts.append(f"{key}={getattr(self, key):o}")
        return ",".join(opts)


@dataclass(frozen=True)
class OsDescriptors:
    """A function's MS OS descriptors: what makes Windows bind WinUSB without an INF."""

    compatible_id: str = "WINUSB"
    sub_compatible_id: str = ""
    properties: dict[str, str] = field(default_factory=dict)  # REG_SZ name -> value


@dataclass(frozen=True)
class GadgetOsDesc:
    """configfs os_desc: without use=1 and a linked configuration they are never served."""

    b_vendor_code: int = 0xCD
    qw_sign: str = "MSFT100"
    config: int = 1


@dataclass(frozen=True)
class FunctionSpec:
    name: str  # FunctionFS instance: configfs functions/ffs.NAME and the mount source
    type: str
    mountpoint: Path
    interface: Interface
    endpoints: tuple[Endpoint, ...]
    mount: MountOptions = MountOptions()
    ep0_open: str = BLOCKING
    request_size: int = 16384
    queue_depth: int = 4
    user: str = DEFAULT_USER  # the worker's user
    allow_root: bool = False  # a uid 0 `user` is refused unless the template says this
    os_desc: OsDescriptors | None = None
    options: dict[str, object] = field(default_factory=dict)  # the type's own keys (Option)

    interfaces = 1  # gadgetd's FunctionFS functions have one interface each

    @property
    def configfs_name(self) -> str:
        return f"ffs.{self.name}"


@dataclass(frozen=True)
class KernelFunctionSpec:
    """A function the kernel implements: configfs functions/DRIVER.NAME, its attributes written
    in order before it is linked (the kernel locks most of them once the gadget is bound)."""

    name: str
    type: str  # the registered type
    driver: str  # configfs function driver: acm, ecm, ncm, rndis, mass_storage, hid
    attributes: tuple[tuple[str, str | bytes], ...] = ()
    luns: tuple[tuple[tuple[str, str], ...], ...] = ()  # mass_storage: lun.0, lun.1, ...
    endpoints: tuple[Endpoint, ...] = ()  # what it takes from the controller (budgets)
    interfaces: int = 1  # acm and the ethernet functions have two (an IAD groups them)
    os_desc: OsDescriptors | None = None

    @property
    def configfs_name(self) -> str:
        return f"{self.driver}.{self.name}"


@dataclass(frozen=True)
class ConfigSpec:
    label: str
    number: int
    max_power: int
    attributes: int
    strings: dict[int, str]
    functions: tuple[str, ...]

    @property
    def configfs_name(self) -> str:
        return f"{self.label}.{self.number}"


@dataclass(frozen=True)
class GadgetSpec:
    source: str
    name: str
    udc: str
    id_vendor: int
    id_product: int
    bcd_device: int
    bcd_usb: int
    device_class: int
    device_subclass: int
    device_protocol: int
    strings: dict[int, dict[str, str]]
    configs: tuple[ConfigSpec, ...]
    functions: dict[str, FunctionSpec | KernelFunctionSpec]
    controller: str | None = None  # the UDC's driver, for endpoint budgets (dwc2, dummy_udc)
    os_desc: GadgetOsDesc | None = None

    @property
    def ffs_functions(self) -> dict[str, FunctionSpec]:
        """The FunctionFS functions: what gadgetd's workers serve."""
        return {n: f for n, f in self.functions.items() if isinstance(f, FunctionSpec)}

    def with_overrides(self, udc=None, no_disconnect=None, ep0_open=None) -> GadgetSpec:
        """Command-line flags win over the template."""
        spec = self
        if udc is not None:
            spec = replace(spec, udc=udc)
        functions = {}
        for name, fn in spec.functions.items():
            if not isinstance(fn, FunctionSpec):
                functions[name] = fn
                continue
            if no_disconnect is not None:
                fn = replace(fn, mount=replace(fn.mount, no_disconnect=no_disconnect))
            if ep0_open is not None:
                fn = replace(fn, ep0_open=ep0_open)
            functions[name] = fn
        return replace(spec, functions=functions)


@dataclass(frozen=True)
class Option:
    """A template key a function type adds to its [function.NAME] table."""

    name: str
    kind: type  # int, str or bool
    default: object
    choices: tuple | None = None
    lo: int | None = None
    hi: int | None = None
    doc: str = ""


@dataclass(frozen=True)
class FunctionType:
    """One entry of the function registry (entry-point group `gadgetd.functions`).

    `server` names the FunctionServer subclass as "module:attribute"; it is imported only by the
    worker that serves a function of this type, so validating a template loads no server code.
    """

    name: str
    kind: str  # one of FUNCTION_KINDS
    server: str | None = None
    # kind "kernel": reads the type's keys from its [function.NAME] table (a toml_table.Table)
    parse: Callable[[object, str], KernelFunctionSpec] | None = None
    # kind "exec": reads the program's keys (command, ...) into FunctionSpec.options
    parse_options: Callable[[object], dict] | None = None
    check_layout: Callable[[FunctionSpec], str | None] | None = None  # a problem, or None
    options: tuple[Option, ...] = ()
    doc: str = ""
