"""Shielding a FunctionFS program from the regression (make test-composite boots
debian:6.1.0-57-amd64 for it, whose open() of ep0 takes ffs->mutex as a trylock under O_NDELAY).

A deliberately naive program (one O_NDELAY open of ep0, its descriptors and strings written,
EAGAIN or any error ends it) is an exec function the test ends after each start, so gadgetd
starts it again and again, while 4 local processes loop O_NDELAY opens and reads of the same
ep0. Opening ep0 itself it meets EAGAIN at least once in 50 starts; with `open = "gadgetd"`
(gadgetd opens under its retrying policy and hands ep0..epN over as LISTEN_FDS) it never fails.

The contenders pause (their ep0 closed) while the test ends the program, and go on once it is
gone. On this kernel an open() of ep0 racing the last close of a bound instance deadlocks it
(no_disconnect=0): the close resets the instance, whose ffs_closed() unregisters the gadget
(gi->lock held, then functionfs_unbind() waits for ffs->mutex), while the open holds ffs->mutex,
meets FFS_CLOSING and runs the same reset, waiting for gi->lock. Here the program holds ep0
whenever the gadget is bound, so no contender's close is the last one then.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gadgetd import runstate
from gadgetd.errors import SetupError
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
   and argv[3] written to it; any error ends it. Serves until a signal ends it. */
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
	pause();
	return 0;
}
"""
# Loops O_NDELAY opens and reads of ep0 (argv[1]); "pause" on stdin: answers "paused" with ep0
# closed and waits for "go"; end of stdin: prints its counts and exits.
CONTENDER = """
import os, select, sys
counts = {"opens": 0, "failed": 0}
while True:
    if select.select([sys.stdin], [], [], 0)[0]:
        line = sys.stdin.readline()
        if not line:
            break
        print("paused", flush=True)
        if not sys.stdin.readline():
            break
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
print(counts, flush=True)
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


def program_pid(d: RunningDaemon) -> int | None:
    fn = (runstate.read(d.spec.name) or {}).get("functions", {}).get("naive", {})
    return fn.get("pid") if fn.get("ready") else None


def pause(contenders: list[subprocess.Popen]) -> None:
    for c in contenders:
        c.stdin.write("pause\n")
        c.stdin.flush()
    for c in contenders:
        assert c.stdout.readline().strip() == "paused"


def go(contenders: list[subprocess.Popen]) -> None:
    for c in contenders:
        c.stdin.write("go\n")
        c.stdin.flush()


def end_served_program(d: RunningDaemon, deadline: float, ended: set[int]) -> None:
    """The program that started (ready: ep0 open, gadget bound) ended by SIGTERM; returns once
    it is gone. ENDED: the pids ended before (the status file may name one for a moment)."""
    while (pid := program_pid(d)) is None or pid in ended:
        assert d.proc.poll() is None and time.monotonic() < deadline, d.read_log()[-3000:]
        time.sleep(0.05)
    ended.add(pid)
    os.kill(pid, signal.SIGTERM)
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, f"program {pid} did not end"
        time.sleep(0.02)


@pytest.mark.parametrize("opener", ["program", "gadgetd"])
def test_naive_program_under_contention(naive_dir, opener):
    d = RunningDaemon(naive_template(naive_dir, opener))
    contenders, ended = [], set()
    try:
        # the first start uncontended (a failing first start ends the run)
        try:
            d.wait_bound()
        except SetupError as exc:
            raise AssertionError(f"{exc}\n{d.read_log()[-4000:]}") from None
        deadline = time.monotonic() + 600
        end_served_program(d, deadline, ended)
        ep0 = d.spec.functions["naive"].mountpoint / "ep0"
        contenders = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(ep0)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for _ in range(CONTENDERS)]
        while (seen := sum(map(len, starts(d.read_log())))) < STARTS:
            while sum(map(len, starts(d.read_log()))) == seen:  # the next start, contended
                assert d.proc.poll() is None and time.monotonic() < deadline, \
                    d.read_log()[-3000:]
                time.sleep(0.05)
            last = re.findall(r"naive: (start(?:ed|\s+failed)): ", d.read_log())[-1]
            if last == "started":  # a failed start ends by itself, and gadgetd starts it again
                pause(contenders)
                end_served_program(d, deadline, ended)
                go(contenders)
    finally:
        for c in contenders:
            c.stdin.close()
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
