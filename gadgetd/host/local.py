"""Serve a template on this machine and run the HIL suite against it (dummy_hcd, or a board
that is its own host), then check that the daemon's teardown left nothing behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from gadgetd import configfs, template
from gadgetd.host.device import DeviceSelector, wait_for_device

HIL_DIR = Path(__file__).resolve().parents[2] / "hil"


def serve_and_test(template_path: str, pytest_args: list[str], daemon_args: list[str],
                   appear_timeout: float = 60.0) -> int:
    spec = template.load(template_path)
    selector = DeviceSelector(spec.id_vendor, spec.id_product)
    daemon = subprocess.Popen([sys.executable, "-m", "gadgetd", "run", template_path,
                               *daemon_args])
    status = 1
    try:
        deadline = time.monotonic() + appear_timeout
        while True:
            if daemon.poll() is not None:
                print(f"gadgetd-hil local: gadgetd exited {daemon.returncode} before the device "
                      "appeared", file=sys.stderr)
                return 1
            try:
                wait_for_device(selector, 1.0)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    print(f"gadgetd-hil local: {selector} did not appear", file=sys.stderr)
                    return 1
        status = subprocess.run([sys.executable, "-m", "pytest", str(HIL_DIR),
                                 "--template", template_path, *pytest_args]).returncode
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            daemon_status = daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon_status = daemon.wait()
    if daemon_status != 0:
        print(f"gadgetd-hil local: gadgetd exited {daemon_status}", file=sys.stderr)
        status = status or 1
    left = configfs.leftovers(spec)
    if left:
        print("gadgetd-hil local: left behind: " + "; ".join(left), file=sys.stderr)
        status = status or 1
    return status
