"""Serve a template on this machine (dummy_hcd, or a board that is its own host) and drive it:
the HIL suite (`gadgetd-hil local`) or a short human-readable demo (`gadgetd-hil demo`).
Both check afterwards that the daemon's teardown left nothing behind."""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import usb.util

from gadgetd import templates
from gadgetd.errors import SetupError
from gadgetd.host.device import SPEED_NAMES, DeviceSelector, LoopbackDriver, wait_for_device
from gadgetd.strategy import GadgetStrategy


class ServeError(Exception):
    pass


@contextlib.contextmanager
def served(template_path: str, daemon_args: list[str], appear_timeout: float = 60.0):
    """Serve TEMPLATE (gadgetd.strategy) and yield (spec, device) once the host sees the device.

    On exit the daemon gets SIGTERM; a non-zero exit or any leftover raises ServeError.
    """
    strategy = GadgetStrategy(templates.resolve(template_path), tuple(daemon_args),
                              log_file=sys.stderr)
    spec = strategy.spec
    selector = DeviceSelector(spec.id_vendor, spec.id_product)
    problems = []
    try:
        try:
            strategy.transition("served", appear_timeout)
            device = wait_for_device(selector, appear_timeout)
        except (SetupError, TimeoutError) as exc:
            raise ServeError(str(exc)) from None
        yield spec, device
    finally:
        status = strategy.stop()
        if status:
            problems.append(f"gadgetd exited {status}")
        problems += [f"left behind: {item}" for item in strategy.leftovers()]
    if problems:
        raise ServeError("; ".join(problems))


def serve_and_test(template_path: str, pytest_args: list[str], daemon_args: list[str]) -> int:
    """The HIL suite against TEMPLATE served here; with $GADGETD_RESULTS (`gadgetd-hil vm
    --results`), its JUnit XML lands there as hil-NAME.xml for CI systems to read."""
    results = os.environ.get("GADGETD_RESULTS")
    if results and not any(a.startswith("--junit") for a in pytest_args):
        name = Path(template_path).stem
        pytest_args = [*pytest_args, f"--junitxml={Path(results) / f'hil-{name}.xml'}"]
    try:
        with served(template_path, daemon_args):
            status = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "gadgetd.hil",
                                     "--template", template_path, *pytest_args]).returncode
    except ServeError as exc:
        print(f"gadgetd-hil local: {exc}", file=sys.stderr)
        return 1
    return status


def demo(template_path: str, daemon_args: list[str]) -> int:
    say = functools.partial(print, flush=True)
    try:
        with served(template_path, daemon_args) as (spec, dev):
            say(f"\n== host sees {dev.idVendor:04x}:{dev.idProduct:04x} on bus {dev.bus} "
                f"address {dev.address}, {SPEED_NAMES.get(dev.speed)} speed")
            say(f"   {usb.util.get_string(dev, dev.iManufacturer)} / "
                f"{usb.util.get_string(dev, dev.iProduct)} / "
                f"serial {usb.util.get_string(dev, dev.iSerialNumber)}")
            lb = LoopbackDriver(dev)
            say(f"   interface {lb.interface_number}: class 0x{lb.intf.bInterfaceClass:02x}, "
                f"bulk OUT 0x{lb.ep_out.bEndpointAddress:02x} / IN 0x{lb.ep_in.bEndpointAddress:02x}"
                f", wMaxPacketSize {lb.max_packet}")
            for size in (0, 1, lb.max_packet, 64 << 10, 1 << 20):
                data = os.urandom(size)
                start = time.monotonic()
                echoed = lb.loopback(data)
                took = time.monotonic() - start
                say(f"== loopback {size:>8} bytes: "
                    f"{'identical' if echoed == data else 'DIFFERENT'} ({took * 1000:.1f} ms)")
                if echoed != data:
                    return 1
            say(f"== control echo: {lb.echo(b'hello from the host')!r}")
            status = lb.status()
            say(f"== device counters: events {status['events']}, "
                f"bytes looped {status['counters'].get('bytes_looped', 0)}, "
                f"transfers {status['counters'].get('transfers', 0)}")
        say(f"== gadget {spec.name} torn down, nothing left in configfs")
    except ServeError as exc:
        print(f"gadgetd-hil demo: {exc}", file=sys.stderr)
        return 1
    return 0
