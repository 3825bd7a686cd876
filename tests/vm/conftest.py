"""Tests against the real kernel: run as root inside the VM (`make test` does), where configfs,
dummy_hcd and usb_f_fs are loaded. Deselected by default (`-m vm` selects them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gadgetd import configfs, templates
from gadgetd.host.device import DeviceSelector, wait_for_device
from gadgetd.strategy import GadgetStrategy

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/vm/" in str(item.fspath) and not any(
                item.get_closest_marker(m) for m in ("systemd", "usbip", "regression",
                                                     "composite", "mtp", "exec_shield")):
            item.add_marker(pytest.mark.vm)


def gadgetd(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gadgetd", *map(str, args)],
                          capture_output=True, text=True, timeout=120, **kw)


class RunningDaemon:
    """`gadgetd run TEMPLATE ARGS` started through gadgetd.strategy, its stderr kept."""

    def __init__(self, template_path, *args):
        self.strategy = GadgetStrategy(template_path, tuple(map(str, args)))
        self.spec = self.strategy.spec
        self.proc = self.strategy.start()
        self.selector = DeviceSelector(self.spec.id_vendor, self.spec.id_product)

    def wait_bound(self, timeout=60.0):
        """The device this daemon bound (not one an earlier, killed daemon left enumerated)."""
        deadline = time.monotonic() + timeout
        self.strategy.transition("served", timeout)
        while True:
            try:
                return wait_for_device(self.selector, 1.0)
            except TimeoutError:
                assert time.monotonic() < deadline, "gadget never appeared"

    def stop(self, sig=signal.SIGTERM) -> int:
        self.status = self.strategy.stop(sig)
        self.stderr = self.read_log()
        return self.status

    def read_log(self) -> str:
        return self.strategy.daemon_log()

    def stop_and_log(self) -> str:
        assert self.stop() == 0, self.stderr
        return self.stderr


@pytest.fixture
def loopback_template() -> Path:
    return templates.path("loopback")


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
    if request.node.get_closest_marker("systemd") or {"usbtest_on_gadgetd", "composite"} & set(
            request.fixturenames):
        yield
        return
    assert not list(configfs.GADGETS.iterdir()), "a gadget was left by an earlier test"
    yield
    strays = _kill_stray_daemons()
    left = list(configfs.GADGETS.iterdir())
    for g in left:
        configfs.remove_gadget(g.name)
    assert not strays, f"test left gadgetd processes running: {strays}"
    assert not left, f"test left gadgets behind: {left}"


def _kill_stray_daemons() -> list[str]:
    """SIGKILL every `python -m gadgetd run` (and its workers) still alive, a failed test's, so that
    one failure does not make every later test meet its lock; returns their command lines."""
    strays = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"gadgetd" in argv[1:3] and b"run" in argv and _alive(entry):
            os.kill(int(entry.name), signal.SIGKILL)
            strays[entry] = b" ".join(argv).decode(errors="replace")
    deadline = time.monotonic() + 10
    while any(map(_alive, strays)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return list(strays.values())


def _alive(proc: Path) -> bool:
    """Not gone and not a zombie."""
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def reload_dummy_hcd(*params: str) -> None:
    """Reload dummy_hcd with `params` (no gadget may be bound)."""
    subprocess.run(["rmmod", "dummy_hcd"], check=True)
    subprocess.run(["modprobe", "dummy_hcd", *params], check=True)


def dummy_hcd_params() -> list[str]:
    base = Path("/sys/module/dummy_hcd/parameters")
    return [f"{p.name}={p.read_text().strip()}" for p in base.iterdir() if p.name != "num"]



def save_figures(figures: dict) -> None:
    """One JSON line of a suite's figures, in $GADGETD_RESULTS/faults.jsonl when set."""
    out = os.environ.get("GADGETD_RESULTS")
    line = json.dumps(figures)
    print(f"\nfault figures: {line}")
    if out:
        with open(os.path.join(out, "faults.jsonl"), "a") as f:
            f.write(line + "\n")
