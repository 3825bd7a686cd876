"""The gadget's configfs tree: built transactionally (undo log), or found and removed by name."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from gadgetd import syscalls, udc
from gadgetd.errors import SetupError
from gadgetd.model import GadgetSpec
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
            # mkdir loads usb_f_fs on demand and creates the FunctionFS instance named fn.name.
            self._mkdir(g / "functions" / fn.configfs_name)
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
    for fn in spec.functions.values():
        found += [f"FunctionFS {fn.name} mounted at {m}" for m in ffs.mountpoints(fn.name)]
        if fn.mountpoint.exists():
            found.append(f"mount point {fn.mountpoint}")
    return found
