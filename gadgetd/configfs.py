"""The gadget's configfs tree: built transactionally (undo log), or found and removed by name."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from gadgetd import syscalls, udc
from gadgetd.errors import SetupError
from gadgetd.model import GadgetSpec, KernelFunctionSpec
from gadgetd.undo import UndoLog

log = logging.getLogger(__name__)

CONFIGFS = Path("/sys/kernel/config")
GADGETS = CONFIGFS / "usb_gadget"


def ensure_configfs() -> None:
    """Mount configfs and load libcomposite if the system has not (systemd normally mounts it)."""
    if not any(fs == "configfs" for _, _, fs in syscalls.mounts("configfs")):
        try:
            syscalls.mount("none", CONFIGFS, "configfs")
        except OSError as exc:
            raise SetupError(f"cannot mount configfs on {CONFIGFS}: {exc.strerror} "
                             "(kernel without CONFIG_CONFIGFS_FS, or not root)") from None
    if not GADGETS.is_dir():
        subprocess.run(["modprobe", "libcomposite"], check=False, capture_output=True)
    if not GADGETS.is_dir():
        raise SetupError(f"{GADGETS} missing: the kernel has no libcomposite (CONFIG_USB_CONFIGFS)")


def gadget_dir(name: str) -> Path:
    return GADGETS / name


class GadgetTree:
    """Creates the gadget's directories, attributes and links, recording each step in `undo`."""

    def __init__(self, spec: GadgetSpec, undo: UndoLog):
        self.spec, self.undo = spec, undo
        self.path = gadget_dir(spec.name)

    def _mkdir(self, path: Path) -> None:
        os.mkdir(path)
        self.undo.push(f"rmdir {path}", lambda: os.rmdir(path))

    def _symlink(self, target: Path, link: Path) -> None:
        os.symlink(target, link)
        self.undo.push(f"unlink {link}", lambda: os.unlink(link))

    def _strings(self, parent: Path, lang: int, values: dict[str, str]) -> None:
        d = parent / "strings" / f"{lang:#x}"
        self._mkdir(d)
        for key, text in values.items():
            syscalls.write_attr(d / key, text)

    def _kernel_function(self, f: Path, fn: KernelFunctionSpec) -> None:
        """Attributes, LUNs (lun.0 comes with the function) and os_desc, before any link."""
        for attr, value in fn.attributes:
            syscalls.write_attr(f / attr, value)
        for number, lun in enumerate(fn.luns):
            if number:
                self._mkdir(f / f"lun.{number}")
            for attr, value in lun:
                syscalls.write_attr(f / f"lun.{number}" / attr, value)
        if fn.os_desc is not None:
            interface = next((f / "os_desc").glob("interface.*"))
            syscalls.write_attr(interface / "compatible_id", fn.os_desc.compatible_id)
            syscalls.write_attr(interface / "sub_compatible_id", fn.os_desc.sub_compatible_id)

    def build(self) -> None:
        s, g = self.spec, self.path
        self._mkdir(g)
        for attr, value in (("idVendor", s.id_vendor), ("idProduct", s.id_product),
                            ("bcdDevice", s.bcd_device), ("bcdUSB", s.bcd_usb),
                            ("bDeviceClass", s.device_class),
                            ("bDeviceSubClass", s.device_subclass),
                            ("bDeviceProtocol", s.device_protocol)):
            syscalls.write_attr(g / attr, value)
        for lang, values in s.strings.items():
            self._strings(g, lang, values)
        for fn in s.functions.values():
            # mkdir loads usb_f_fs (usb_f_acm, ...) on demand and creates the instance.
            self._mkdir(g / "functions" / fn.configfs_name)
            if isinstance(fn, KernelFunctionSpec):
                self._kernel_function(g / "functions" / fn.configfs_name, fn)
        for cfg in s.configs:
            c = g / "configs" / cfg.configfs_name
            self._mkdir(c)
            syscalls.write_attr(c / "MaxPower", cfg.max_power)
            syscalls.write_attr(c / "bmAttributes", cfg.attributes)
            for lang, text in cfg.strings.items():
                self._strings(c, lang, {"configuration": text})
            for fname in cfg.functions:
                fn = s.functions[fname]
                self._symlink(g / "functions" / fn.configfs_name, c / fn.configfs_name)
        if s.os_desc is not None:
            os_desc = g / "os_desc"
            syscalls.write_attr(os_desc / "b_vendor_code", f"{s.os_desc.b_vendor_code:#04x}")
            syscalls.write_attr(os_desc / "qw_sign", s.os_desc.qw_sign)
            syscalls.write_attr(os_desc / "use", 1)
            cfg = s.configs[s.os_desc.config - 1]
            self._symlink(g / "configs" / cfg.configfs_name, os_desc / cfg.configfs_name)


def remove_gadget(name: str) -> list[str]:
    """Tear down an existing gadget found by name (for `down`, `--replace`, crash leftovers).

    Reverse order of GadgetTree.build: unbind, unlink, remove config strings and configs,
    unmount FunctionFS instances and remove functions, gadget strings, the gadget. Errors are
    logged and returned; the walk goes on so as much as possible is removed.
    """
    g = gadget_dir(name)
    failures: list[str] = []

    def attempt(description, action):
        try:
            action()
        except OSError as exc:
            log.error("%s: %s", description, exc)
            failures.append(f"{description}: {exc}")

    if not g.is_dir():
        return failures
    attempt(f"unbind {name}", lambda: udc.unbind(g))
    for link in sorted((g / "os_desc").glob("*")):
        if link.is_symlink():  # the os_desc configuration link goes before the configuration
            attempt(f"unlink {link}", lambda p=link: os.unlink(p))
    for c in sorted((g / "configs").iterdir()):
        for entry in sorted(c.iterdir()):
            if entry.is_symlink():
                attempt(f"unlink {entry}", lambda e=entry: os.unlink(e))
        for lang in sorted((c / "strings").iterdir()):
            attempt(f"rmdir {lang}", lambda p=lang: os.rmdir(p))
        attempt(f"rmdir {c}", lambda p=c: os.rmdir(p))
    from gadgetd import ffs  # FunctionFS mounts belong to the function directories below

    for f in sorted((g / "functions").iterdir()):
        kind, _, instance = f.name.partition(".")
        if kind == "ffs":
            for mountpoint in ffs.mountpoints(instance):
                attempt(f"umount {mountpoint}", lambda m=mountpoint: ffs.unmount(m))
        for lun in sorted(f.glob("lun.*"), reverse=True):
            if lun.name != "lun.0":  # mass_storage's first LUN goes with the function
                attempt(f"rmdir {lun}", lambda p=lun: os.rmdir(p))
        attempt(f"rmdir {f}", lambda p=f: os.rmdir(p))
    for lang in sorted((g / "strings").iterdir()):
        attempt(f"rmdir {lang}", lambda p=lang: os.rmdir(p))
    attempt(f"rmdir {g}", lambda: os.rmdir(g))
    return failures


def leftovers(spec: GadgetSpec) -> list[str]:
    """What a template's gadget left behind after teardown (empty when nothing)."""
    from gadgetd import ffs

    found = []
    if gadget_dir(spec.name).exists():
        found.append(f"configfs gadget {gadget_dir(spec.name)}")
    for fn in spec.ffs_functions.values():
        found += [f"FunctionFS {fn.name} mounted at {m}" for m in ffs.mountpoints(fn.name)]
        if fn.mountpoint.exists():
            found.append(f"mount point {fn.mountpoint}")
    return found


def kernel_functions(name: str) -> dict[str, dict[str, str]]:
    """What the kernel made of a gadget's kernel functions, read back from configfs: the tty of
    acm (/dev/ttyGSn), the interface and addresses of ecm, ncm and rndis, the device of hid
    (/dev/hidgN), the backing files of mass_storage."""
    found = {}
    for f in sorted((gadget_dir(name) / "functions").glob("*.*")):
        driver, _, instance = f.name.partition(".")
        info: dict[str, str] = {"driver": driver}
        try:
            if driver == "acm":
                info["tty"] = f"/dev/ttyGS{syscalls.read_attr(f / 'port_num')}"
            elif driver in ("ecm", "ncm", "rndis"):
                for attr in ("ifname", "dev_addr", "host_addr"):
                    info[attr] = syscalls.read_attr(f / attr)
            elif driver == "hid":
                dev = syscalls.read_attr(f / "dev")
                uevent = Path(f"/sys/dev/char/{dev}/uevent")
                names = [line.partition("=")[2] for line in
                         (uevent.read_text().splitlines() if uevent.exists() else [])
                         if line.startswith("DEVNAME=")]
                info["device"] = f"/dev/{names[0]}" if names else dev
            elif driver == "mass_storage":
                for lun in sorted(f.glob("lun.*")):
                    info[lun.name] = syscalls.read_attr(lun / "file") or "(no medium)"
            else:
                continue
        except OSError as exc:
            info["error"] = str(exc)
        found[instance] = info
    return found
