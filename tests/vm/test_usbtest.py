"""The kernel's own host-side test driver against gadgetd: usbtest (in Debian's kernel image)
binds to the sourcesink gadget (Gadget Zero's 0525:a4a0) and testusb (tools/usb, built by
bench/build.sh into out/bench-build, never committed) runs its bulk and control cases."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from gadgetd import templates
from tests.vm.conftest import RunningDaemon

pytestmark = pytest.mark.vm
ROOT = Path(__file__).resolve().parents[2]
TESTUSB = ROOT / "out" / "bench-build" / "testusb"
# case: testusb arguments (counts kept small; each case's own checks are the kernel's)
CASES = {
    1: "-c 1000 -s 2048", 2: "-c 1000 -s 2048", 3: "-c 1000 -s 2048 -v 421",
    4: "-c 1000 -s 2048 -v 512", 5: "-c 500 -s 2048 -g 32", 6: "-c 500 -s 2048 -g 32",
    7: "-c 500 -s 2048 -v 512 -g 32", 8: "-c 500 -s 2048 -v 512 -g 32", 9: "-c 1000",
    10: "-c 1000 -g 32", 14: "-c 1000 -s 4096 -v 511",
}


@pytest.fixture(scope="module")
def usbtest_on_gadgetd():
    if not TESTUSB.exists():
        pytest.fail(f"{TESTUSB} missing: run 'sh bench/build.sh out/bench-build' (make does)")
    d = RunningDaemon(templates.path("sourcesink"))
    d.wait_bound()
    subprocess.run(["modprobe", "usbtest", "pattern=0"], check=True)  # the template's pattern
    deadline = time.monotonic() + 30
    while not list(Path("/sys/bus/usb/drivers/usbtest").glob("*:*")):
        assert time.monotonic() < deadline, "usbtest did not bind to the gadget"
        time.sleep(0.2)
    yield d
    subprocess.run(["rmmod", "usbtest"], check=False)
    assert d.stop() == 0, d.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_testusb_case(usbtest_on_gadgetd, case):
    proc = subprocess.run([str(TESTUSB), "-a", "-t", str(case), *CASES[case].split()],
                          capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    print(output.strip())
    # testusb always exits 0: the verdict is its "test N, X secs" or "test N --> errno" line
    assert re.search(rf"test {case},\s+[\d.]+ secs", output), output
    assert "-->" not in output, output
