"""USB device controllers: find one, bind a gadget to it, read its state."""

from __future__ import annotations

from pathlib import Path

from gadgetd import syscalls
from gadgetd.errors import SetupError

UDC_CLASS = Path("/sys/class/udc")

NO_UDC_HELP = (
    "no USB device controller in /sys/class/udc: on a Raspberry Pi add 'dtoverlay=dwc2' to "
    "config.txt and load the dwc2 module; on a PC run 'modprobe dummy_hcd'"
)


def list_udcs() -> list[str]:
    try:
        return sorted(p.name for p in UDC_CLASS.iterdir())
    except FileNotFoundError:
        return []


def resolve(wanted: str) -> str:
    """'auto' -> the only UDC; a name -> that UDC, which must exist."""
    present = list_udcs()
    if wanted != "auto":
        if wanted not in present:
            found = ", ".join(present) or "none"
            raise SetupError(f"UDC {wanted!r} not found in {UDC_CLASS} (present: {found})")
        return wanted
    if not present:
        raise SetupError(NO_UDC_HELP)
    if len(present) > 1:
        raise SetupError(f"several UDCs present ({', '.join(present)}): choose one with --udc")
    return present[0]


def state(udc: str) -> str:
    """The controller's USB state: not attached, powered, default, addressed, configured, ..."""
    return syscalls.read_attr(UDC_CLASS / udc / "state")


def bound(gadget_dir: Path) -> str:
    """The UDC a gadget is bound to, or '' (the kernel empties the file on unbind)."""
    try:
        return syscalls.read_attr(gadget_dir / "UDC")
    except FileNotFoundError:
        return ""


def bind(gadget_dir: Path, udc: str) -> None:
    syscalls.write_attr(gadget_dir / "UDC", udc)


def unbind(gadget_dir: Path) -> str:
    """Unbind the gadget; the UDC it was bound to ("" when it was not)."""
    name = bound(gadget_dir)
    if name:
        syscalls.write_attr(gadget_dir / "UDC", "")
    return name


class UdcWatch:
    """UDC add/remove (uevents, through pyudev) and state changes (no uevent: the `state`
    attribute is polled for POLLPRI), as file descriptors for the supervisor's epoll loop."""

    def __init__(self):
        import pyudev

        self.monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        self.monitor.filter_by(subsystem="udc")
        self.monitor.start()
        self.state_file = None
        self.state_name = None

    def fileno(self) -> int:
        return self.monitor.fileno()

    def events(self) -> list[tuple[str, str]]:
        """Pending (action, udc name) pairs, without blocking."""
        found = []
        while True:
            device = self.monitor.poll(timeout=0)
            if device is None:
                return found
            found.append((device.action, device.sys_name))

    def watch_state(self, name: str | None) -> int | None:
        """Start following `name`'s state attribute; returns its fd for EPOLLPRI (or None)."""
        if self.state_file is not None:
            self.state_file.close()
            self.state_file = None
        self.state_name = name
        if name is None:
            return None
        try:
            self.state_file = open(UDC_CLASS / name / "state", "rb", buffering=0)
        except FileNotFoundError:
            return None
        self.state_file.read()  # sysfs: arm the notification by reading once
        return self.state_file.fileno()

    def read_state(self) -> str:
        self.state_file.seek(0)
        return self.state_file.read().decode(errors="replace").strip()

    def close(self) -> None:
        self.watch_state(None)
