"""Tests against the real kernel: run as root inside the VM (`make test` does), where configfs,
dummy_hcd and usb_f_fs are loaded. Deselected by default (`-m vm` selects them)."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gadgetd import configfs, runstate, template
from gadgetd.host.device import DeviceSelector, wait_for_device

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/vm/" in str(item.fspath) and not item.get_closest_marker("systemd"):
            item.add_marker(pytest.mark.vm)


def gadgetd(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gadgetd", *map(str, args)],
                          capture_output=True, text=True, timeout=120, **kw)


class RunningDaemon:
    def __init__(self, template_path, *args):
        self.template_path = str(template_path)
        self.spec = template.load(self.template_path)
        self.log = tempfile.TemporaryFile("w+")  # a pipe nobody reads would block the daemon
        self.proc = subprocess.Popen([sys.executable, "-m", "gadgetd", "run", self.template_path,
                                      *map(str, args)], stderr=self.log, text=True)
        self.selector = DeviceSelector(self.spec.id_vendor, self.spec.id_product)

    def wait_bound(self, timeout=60.0):
        """The device this daemon bound (not one an earlier, killed daemon left enumerated)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"gadgetd exited: {self.read_log()}"
            state = runstate.read(self.spec.name) or {}
            if state.get("pid") != self.proc.pid or not state.get("bound"):
                time.sleep(0.1)
                continue
            try:
                return wait_for_device(self.selector, 1.0)
            except TimeoutError:
                pass
        raise TimeoutError("gadget never appeared")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.status = self.proc.wait(60)
        self.stderr = self.read_log()
        return self.status

    def read_log(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop_and_log(self) -> str:
        assert self.stop() == 0, self.stderr
        return self.stderr


@pytest.fixture
def loopback_template() -> Path:
    return REPO / "configfs_templates" / "loopback.toml"


@pytest.fixture
def daemon(loopback_template):
    started = []

    def start(template_path=loopback_template, *args):
        d = RunningDaemon(template_path, *args)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)
        configfs.remove_gadget(d.spec.name)


@pytest.fixture(autouse=True)
def clean_configfs(request):
    """Every VM test starts and must end with no gadget in configfs (tests that share one gadget
    across a module check its teardown themselves)."""
    if request.node.get_closest_marker("systemd") or "usbtest_on_gadgetd" in request.fixturenames:
        yield
        return
    assert not list(configfs.GADGETS.iterdir()), "a gadget was left by an earlier test"
    yield
    left = list(configfs.GADGETS.iterdir())
    for g in left:
        configfs.remove_gadget(g.name)
    assert not left, f"test left gadgets behind: {left}"


def reload_dummy_hcd(*params: str) -> None:
    """Reload dummy_hcd with `params` (no gadget may be bound)."""
    subprocess.run(["rmmod", "dummy_hcd"], check=True)
    subprocess.run(["modprobe", "dummy_hcd", *params], check=True)


def dummy_hcd_params() -> list[str]:
    base = Path("/sys/module/dummy_hcd/parameters")
    return [f"{p.name}={p.read_text().strip()}" for p in base.iterdir() if p.name != "num"]

