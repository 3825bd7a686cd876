"""HIL fixtures: which device (resource), how to talk to it (driver), device-side control (board).

A pytest plugin (entry point `gadgetd.hil`; `-p gadgetd.hil` where plugin autoloading is off).
Run on any host that sees the gadget: `pytest --pyargs gadgetd.hil --device VID:PID [--serial S]`.
Expected values come from the template the gadget was built from (`--template`, a file or a
packaged template's name; default loopback).

On a labgrid place instead (gadgetd[labgrid], `--lg-env ENV.yaml` with a GadgetdStrategy, the
place acquired): the strategy serves the gadget for the session and turns the board off after,
the device is the place's USB resource, the board is the place's command driver
(gadgetd.host.labgrid_place).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import usb.util

from gadgetd import template as template_mod
from gadgetd import templates
from gadgetd.configfs import GADGETS
from gadgetd.host.board import LocalBoard, SshBoard
from gadgetd.host.device import DeviceSelector, LoopbackDriver, wait_for_device


def pytest_addoption(parser):
    group = parser.getgroup("gadgetd HIL")
    group.addoption("--template", default="loopback",
                    help="template the gadget under test was built from (expected descriptors)")
    group.addoption("--device", default=None,
                    help="VID:PID of the gadget (default: the template's idVendor:idProduct)")
    group.addoption("--serial", default=None, help="serial number, when several match")
    group.addoption("--appear-timeout", type=float, default=30.0,
                    help="seconds the device may take to appear")
    group.addoption("--board", default=None,
                    help="ssh://USER@HOST[:PORT]: control the board over SSH for the reconnect "
                         "and restart tests (default: this machine, if it serves the gadget)")
    group.addoption("--board-identity", default=None, help="SSH private key for --board")
    group.addoption("--board-ssh-config", default=None,
                    help="ssh_config file for --board (host keys, jump hosts, ...)")


@pytest.fixture(scope="session")
def spec(pytestconfig):
    return template_mod.load(templates.resolve(pytestconfig.getoption("--template")))


def _on_a_place(config) -> bool:
    """labgrid's plugin is loaded and an environment is given (--lg-env or LG_ENV)."""
    return config.pluginmanager.hasplugin("labgrid") and bool(
        config.getoption("lg_env", None) or os.environ.get("LG_ENV"))


@pytest.fixture(scope="session")
def place(request, spec):
    """The labgrid strategy with the gadget served for the session (None off a place)."""
    if not _on_a_place(request.config):
        yield None
        return
    if request.config.getoption("--device") or request.config.getoption("--board"):
        raise pytest.UsageError("--lg-env names the device and the board: no --device/--board")
    strategy = request.getfixturevalue("strategy")
    if strategy.gadget != spec.name:
        raise pytest.UsageError(f"the strategy serves {strategy.gadget!r}, the template "
                                f"{spec.name!r}: pass --template for the place's gadget")
    strategy.transition("served")
    yield strategy
    strategy.transition("off")


@pytest.fixture(scope="session")
def selector(pytestconfig, spec, place) -> DeviceSelector:
    device = pytestconfig.getoption("--device")
    serial = pytestconfig.getoption("--serial")
    if place is not None:
        from gadgetd.host.labgrid_place import usb_identity

        return DeviceSelector(*usb_identity(place.usb), serial)
    if device:
        try:
            return DeviceSelector.parse(device, serial)
        except ValueError as exc:
            raise pytest.UsageError(f"--device: {exc}") from None
    return DeviceSelector(spec.id_vendor, spec.id_product, serial)


@pytest.fixture(scope="session")
def appear_timeout(pytestconfig) -> float:
    return pytestconfig.getoption("--appear-timeout")


@pytest.fixture
def device(selector, appear_timeout):
    dev = wait_for_device(selector, appear_timeout)
    yield dev
    usb.util.dispose_resources(dev)  # release the claimed interface for the next test


@pytest.fixture
def loopback(device) -> LoopbackDriver:
    return LoopbackDriver(device)


@pytest.fixture
def board(spec, pytestconfig, place):
    if place is not None:
        from gadgetd.host.labgrid_place import PlaceBoard

        return PlaceBoard(spec.name, place.shell)
    url = pytestconfig.getoption("--board")
    if url:
        return SshBoard(spec.name, url, pytestconfig.getoption("--board-identity"),
                        pytestconfig.getoption("--board-ssh-config"))
    if (GADGETS / spec.name / "UDC").exists():
        return LocalBoard(spec.name, gadgetd=str(Path(sys.executable).parent / "gadgetd"))
    pytest.skip(f"no device-side control: gadget {spec.name!r} is not served on this machine; "
                "pass --board ssh://USER@HOST")
