"""Runs inside the VM as root: load a USB stack, run CMD, report its status.

USB stacks (`--usb`):
    dummy           dummy_hcd: the UDC and the host controller in this kernel (the default)
    usbip-loopback  usbip-vudc and vhci-hcd in this kernel, joined over loopback TCP
    usbip-board     usbip-vudc only, exported by usbipd over the lab link (no host controller)
    usbip-host      vhci-hcd only (no UDC), attached to the board at --attach over the lab link
The USB/IP stacks keep their helpers (usbipd, the Attacher) running while CMD runs; their logs
go to --results.

The host watches the result directory (shared read-write over 9p): `booted` once the guest is up,
`status` as soon as CMD ends (written and synced before any shutdown is attempted, so a guest that
cannot power off because a task is stuck in the kernel still reports CMD's exit status).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

from gadgetd import configfs
from gadgetd.host import usbip

SPEED_OPTIONS = {
    "full": ["is_high_speed=0", "is_super_speed=0"],
    "high": ["is_high_speed=1", "is_super_speed=0"],
    "super": ["is_high_speed=1", "is_super_speed=1"],
}


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


GADGET_MODULES = ("libcomposite", "usb_f_fs")
USB_STACKS = {
    "dummy": ("dummy_hcd", *GADGET_MODULES),
    "usbip-loopback": ("usbip-vudc", "vhci-hcd", *GADGET_MODULES),
    "usbip-board": ("usbip-vudc", *GADGET_MODULES),
    "usbip-host": ("vhci-hcd",),
}


def _modprobe(module: str, *options: str) -> None:
    subprocess.run(["modprobe", module, *options], check=True)


def _link_up(address: str | None) -> None:
    """Loopback up; with `address` (CIDR), the lab's NIC (the only virtio one) gets it."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if address is None:
        return
    _modprobe("virtio_net")
    nics = [p.name for p in Path("/sys/class/net").iterdir() if (p / "device").exists()]
    if len(nics) != 1:
        raise subprocess.CalledProcessError(1, f"lab link: expected one NIC, found {nics}")
    subprocess.run(["ip", "addr", "add", address, "dev", nics[0]], check=True)
    subprocess.run(["ip", "link", "set", nics[0], "up"], check=True)


def start_sshd(config: Path, log) -> subprocess.Popen:
    """The lab board's sshd (gadgetd.host.lab.ssh_configs wrote its configuration)."""
    os.makedirs("/run/sshd", exist_ok=True)  # its privilege separation directory
    return subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=log)


@contextlib.contextmanager
def usb_stack(stack: str, speed: str, logs: Path, address: str | None, attach: str | None,
              lab: Path | None = None):
    """Load `stack`'s modules and run its helpers until the block ends."""
    for module in USB_STACKS[stack]:
        _modprobe(module, *(SPEED_OPTIONS[speed] if module == "dummy_hcd" else ()))
    if stack != "usbip-host":
        configfs.ensure_configfs()
    if stack == "dummy":
        yield
        return
    _link_up(address)
    helpers = contextlib.ExitStack()
    with helpers:
        if stack != "usbip-host":
            usbipd_log = helpers.enter_context(open(logs / "usbipd.log", "w"))
            usbipd = usbip.start_usbipd(usbipd_log)
            helpers.callback(usbipd.kill)
        if stack == "usbip-board" and lab and (lab / "ssh" / "sshd_config").exists():
            sshd_log = helpers.enter_context(open(logs / "sshd.log", "w"))
            helpers.callback(start_sshd(lab / "ssh" / "sshd_config", sshd_log).kill)
        if stack != "usbip-board":
            attach_log = helpers.enter_context(open(logs / "attach.log", "w", buffering=1))
            attacher = usbip.Attacher(attach or "127.0.0.1", log=attach_log)
            thread = threading.Thread(target=attacher.run, daemon=True)
            thread.start()
            helpers.callback(thread.join, 5)
            helpers.callback(attacher.stop)
        yield


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gadgetd-guest")
    parser.add_argument("--speed", choices=SPEED_OPTIONS, default="high")
    parser.add_argument("--usb", choices=USB_STACKS, default="dummy")
    parser.add_argument("--address", help="CIDR address of the lab link (usbip-board/-host)")
    parser.add_argument("--attach", help="the board's address (usbip-host)")
    parser.add_argument("--lab", type=Path,
                        help="the lab's directory, shared by both VMs ($GADGETD_LAB)")
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--results", type=Path, help="host directory for the command's files")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    _write(args.result / "booted", os.uname().release + "\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "GADGETD_VM": "1",
           "GADGETD_USB": args.usb}
    if args.results:
        env["GADGETD_RESULTS"] = str(args.results)
    if args.lab:
        env["GADGETD_LAB"] = str(args.lab)
    logs = args.results or args.result
    with contextlib.ExitStack() as stack:
        # Followed, not read at the end: a lab's board VM is stopped, not left to finish.
        dmesg = subprocess.Popen(["dmesg", "--follow"], stdout=stack.enter_context(
            open(logs / "dmesg.txt", "w")))
        stack.callback(dmesg.wait, 5)
        stack.callback(dmesg.terminate)
        try:
            stack.enter_context(usb_stack(args.usb, args.speed, logs, args.address, args.attach,
                                          args.lab))
        except (subprocess.CalledProcessError, OSError) as exc:
            print(f"gadgetd-guest: cannot set up the USB stack {args.usb}: {exc}",
                  file=sys.stderr)
            _write(args.result / "setup-failed", str(exc))
            return 125
        try:
            status = subprocess.run(command, env=env).returncode
        except OSError as exc:  # as a shell reports it: 127 not found, 126 not executable
            print(f"gadgetd-guest: {command[0]}: {exc.strerror}", file=sys.stderr)
            status = 127 if isinstance(exc, FileNotFoundError) else 126
    if status < 0:  # killed by a signal: report it the way a shell does
        status = 128 - status
    _write(args.result / "status", f"{status}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
