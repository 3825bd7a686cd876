"""Shielding a FunctionFS program from the regression (make test-composite boots
debian:6.1.0-57-amd64 for it, whose open() of ep0 takes ffs->mutex as a trylock under O_NDELAY).

A deliberately naive program (one O_NDELAY open of ep0, its descriptors and strings written,
EAGAIN or any error ends it) is an exec function that exits after each start, so gadgetd starts
it again and again, while 4 local processes loop O_NDELAY opens and reads of the same ep0.
Opening ep0 itself it meets EAGAIN at least once in 50 starts; with `open = "gadgetd"` (gadgetd
opens under its retrying policy and hands ep0..epN over as LISTEN_FDS) it never fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.vm.conftest import RunningDaemon
from tests.vm.test_exec import shared_dir

pytestmark = pytest.mark.exec_shield
STARTS = 50
CONTENDERS = 4
NAIVE = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ep0 from gadgetd (LISTEN_FDS: fd 3), or one O_NDELAY open of argv[1] and the blobs argv[2]
   and argv[3] written to it; any error ends it. Serves a moment, then exits. */
static int fail(const char *what)
{
	printf("start failed: %s: %s\n", what, strerror(errno));
	return errno == EAGAIN ? 2 : 1;
}

int main(int argc, char **argv)
{
	char buf[4096];
	int ep0 = 3, i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!getenv("LISTEN_FDS")) {
		ep0 = open(argv[1], O_RDWR | O_NDELAY);
		if (ep0 < 0)
			return fail("open ep0");
		for (i = 2; i <= 3; i++) {
			int blob = open(argv[i], O_RDONLY);
			ssize_t n = read(blob, buf, sizeof(buf));
			close(blob);
			if (write(ep0, buf, n) != n)
				return fail("write descriptors");
		}
	}
	printf("started: ep0 %s\n", ep0 == 3 ? "from gadgetd" : "opened itself");
	usleep(300000);
	return 0;
}
"""
CONTENDER = """
import os, sys, time
end, counts = time.monotonic() + float(sys.argv[2]), {"opens": 0, "failed": 0}
while time.monotonic() < end:
    try:
        fd = os.open(sys.argv[1], os.O_RDWR | os.O_NDELAY)
    except OSError:
        counts["failed"] += 1
        continue
    counts["opens"] += 1
    try:
        os.read(fd, 64)
    except OSError:
        pass
    os.close(fd)
print(counts)
"""


def naive_template(directory: Path, opener: str) -> Path:
    mountpoint = f"/run/gadgetd/ffs/naive-{opener}"
    command = [str(directory / "naive"), f"{mountpoint}/ep0", str(directory / "naive.descriptors"),
               str(directory / "naive.strings")]
    path = directory / f"naive-{opener}.toml"
    path.write_text(f"""
[gadget]
name = "gadgetd-naive"
idVendor = 0x1d6b
idProduct = 0x0104

[[config]]
functions = ["naive"]

[function.naive]
type = "exec"
command = {command!r}
mountpoint = "{mountpoint}"
open = "{opener}"
ep0_open = "nonblock"
ready_timeout = 10

[function.naive.interface]
class = 0xff

[[function.naive.endpoint]]
direction = "out"
transfer = "bulk"

[[function.naive.endpoint]]
direction = "in"
transfer = "bulk"
""".replace("'", '"'))
    return path


@pytest.fixture(scope="module")
def naive_dir():
    directory = shared_dir("gadgetd-naive-")
    (directory / "naive.c").write_text(NAIVE)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", directory / "naive", directory / "naive.c"],
                   check=True)
    template = naive_template(directory, "program")
    subprocess.run([sys.executable, "-m", "gadgetd", "blobs", str(template), "naive", "--out",
                    str(directory)], check=True, capture_output=True)
    for blob in directory.glob("naive.*"):
        blob.chmod(0o644)
    return directory


def starts(log: str) -> tuple[list[str], list[str]]:
    """The program's own lines: (started, failed)."""
    lines = re.findall(r"naive: (start(?:ed|\s+failed): .*)", log)
    return [x for x in lines if x.startswith("started")], [x for x in lines if "failed" in x]


@pytest.mark.parametrize("opener", ["program", "gadgetd"])
def test_naive_program_under_contention(naive_dir, opener):
    d = RunningDaemon(naive_template(naive_dir, opener))
    contenders = []
    try:
        # the first start uncontended (a failing first start ends the run); the program exits
        # after each start, so the host sees the gadget only for moments: its own line counts
        deadline = time.monotonic() + 60
        while not starts(d.read_log())[0]:
            assert d.proc.poll() is None and time.monotonic() < deadline, d.read_log()[-3000:]
            time.sleep(0.2)
        ep0 = d.spec.functions["naive"].mountpoint / "ep0"
        contenders = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(ep0), "600"],
                                       stdout=subprocess.PIPE, text=True)
                      for _ in range(CONTENDERS)]
        deadline = time.monotonic() + 540
        while len(starts(d.read_log())[0]) + len(starts(d.read_log())[1]) < STARTS:
            assert d.proc.poll() is None, d.read_log()[-3000:]
            assert time.monotonic() < deadline, d.read_log()[-3000:]
            time.sleep(0.5)
    finally:
        for c in contenders:
            c.terminate()
            c.wait()
        status = d.stop()
    log = d.stderr
    assert status == 0, log[-3000:]
    started, failed = starts(log)
    print(f"open = {opener}: {len(started)} started, {len(failed)} failed: "
          f"{sorted(set(failed))}")
    if opener == "program":
        assert any("Resource temporarily unavailable" in f for f in failed), (started, failed)
    else:
        assert failed == [] and all("from gadgetd" in s for s in started), failed
        assert "gadgetd: cannot start" not in log, log[-3000:]
