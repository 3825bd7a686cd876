"""A function type from another package: examples/gadgetd-greeting, built into a wheel on the
host (make vm-test), pip-installed here (into a directory of its own: the VM's venv is read-only)
and served through the entry-point registry."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import usb.core

from gadgetd import registry
from tests.vm.conftest import REPO

EXAMPLE = REPO / "examples" / "gadgetd-greeting"
TEMPLATE = EXAMPLE / "greeting.toml"
WHEELS = REPO / "out" / "example-wheels"


def test_greeting_is_not_a_type_without_the_plugin():
    proc = subprocess.run([sys.executable, "-m", "gadgetd", "check", str(TEMPLATE)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "function.greet0.type = 'greeting': no function type 'greeting' is registered" \
        in proc.stderr


@pytest.fixture
def installed(tmp_path, monkeypatch):
    wheels = sorted(WHEELS.glob("gadgetd_greeting-*.whl"))
    if not wheels:
        pytest.fail(f"no example wheel in {WHEELS}: make vm-test builds it (on the host: building "
                    "it under emulation takes minutes)")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--target", str(target), str(wheels[-1])], check=True, timeout=300,
                   cwd=tmp_path)
    # For the daemon's processes, and for this one (the strategy reads the template here too).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(target), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(target))
    registry.get.cache_clear()
    registry._entry_points.cache_clear()
    yield target
    registry.get.cache_clear()
    registry._entry_points.cache_clear()


def test_plugin_type_is_served(installed, daemon):
    check = subprocess.run([sys.executable, "-m", "gadgetd", "check", str(TEMPLATE)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "greet0 (greeting)" in check.stdout
    d = daemon(TEMPLATE)
    dev = d.wait_bound()
    text = bytes(dev.ctrl_transfer(0xC1, 0x01, 0, 0, 64)).decode()
    assert text == "hello from a gadgetd plugin"
    with pytest.raises(usb.core.USBError):  # an unknown request is STALLed by the base class
        dev.ctrl_transfer(0xC1, 0x02, 0, 0, 64)
    log = d.stop_and_log()
    assert "function greet0 served by pid" in log
