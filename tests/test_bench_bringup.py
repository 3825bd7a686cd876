"""make bench's bring-up breakdown: strace's step syscalls and -X importtime, read back."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "bench_bringup", Path(__file__).resolve().parents[1] / "bench" / "bringup.py")
bringup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bringup)

TRACE = """\
300 99.700000 execve("/bin/env", ["env", "/work/main/.venv/bin/gadgetd"], 0x7ffd /* 9 vars */) = 0
300 100.000000 execve("/work/main/.venv/bin/gadgetd", ["gadgetd", "run", "t.toml"], 0x7ffd /* 9 vars */) = 0
300 100.200000 write(2</tmp/log>, "import time: ...", 40) = 40
300 100.400000 mkdir("/run/gadgetd", 0755) = -1 EEXIST (File exists)
300 100.500000 mkdir("/sys/kernel/config/usb_gadget/gadgetd-sourcesink", 0755) = 0
300 100.550000 mkdir("/sys/kernel/config/usb_gadget/gadgetd-sourcesink/strings/0x409", 0755) = 0
300 100.700000 mount("ss0", "/run/gadgetd/ffs/ss0", "functionfs", 0, "uid=0,gid=0") = 0
301 101.300000 write(5</run/gadgetd/ffs/ss0/ep0>, "\\3\\0\\0\\0l\\0\\0\\0"..., 108 <unfinished ...>
300 101.305000 write(2</tmp/log>, "import time: ...", 40) = 40
301 101.306000 <... write resumed>) = 108
301 101.310000 write(5</run/gadgetd/ffs/ss0/ep0>, "\\2\\0\\0\\0\\30\\0\\0\\0"..., 24) = 24
300 101.500000 write(7</sys/kernel/config/usb_gadget/gadgetd-sourcesink/UDC>, "dummy_udc.0\\n", 12) = 12
300 109.000000 write(7</sys/kernel/config/usb_gadget/gadgetd-sourcesink/UDC>, "\\n", 1) = 1
"""
IMPORTS = """\
import time: self [us] | cumulative | imported package
import time:       237 |        237 |   _io
import time:      3264 |     125214 | gadgetd.cli
import time:       500 |      20000 |   gadgetd.model
import time:      1000 |      30000 | gadgetd.worker
2026-12-05 09:48:21,375 INFO gadgetd.supervisor: bound to dummy_udc.0
import time:      1000 |      10000 | gadgetd.worker
"""


def test_the_step_syscalls_become_phases():
    found = {**bringup.events(TRACE), "configured": 102.0}
    assert found == {"exec": 100.0, "configfs": 100.5, "mount": 100.7, "descriptors": 101.3,
                     "strings": 101.31, "bind": 101.5, "configured": 102.0}
    assert bringup.phases(found) == [
        ("interpreter, imports, template", 0.5), ("configfs", 0.2),
        ("worker: fork, imports, ep0 open", 0.6), ("descriptors and strings", 0.01),
        ("ready to bind", 0.19), ("enumeration", 0.5)]


def test_a_step_not_seen_is_none():
    found = bringup.events("\n".join(TRACE.splitlines()[:5]))
    assert [s for _, s in bringup.phases(found)] == [0.5, None, None, None, None, None]


def test_top_level_imports_of_both_processes_add_up():
    assert bringup.imports(IMPORTS) == [("gadgetd.cli", 0.1252), ("gadgetd.worker", 0.04)]
