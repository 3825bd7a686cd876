"""`gadgetd trace` on the regression kernel (make repro-test boots debian:6.1.0-57-amd64 for
these): while gadgetd serves and keeps ep0 busy for its host (repro's contended_open: the
daemon answering the host's control transfers holds ffs->mutex, openers using gadgetd's open
policy contend), a deliberately naive program opens ep0 once with O_NDELAY and gives up on
EAGAIN. The trace must name it as giving up and gadgetd's openers as retrying, and leave no
probe behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gadgetd import template, templates
from gadgetd.trace.tracefs import TRACEFS

pytestmark = pytest.mark.regression
NAIVE = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
/* One O_NDELAY open of ep0; EAGAIN ends it (exit 2): no retry. */
int main(int argc, char **argv)
{
	int fd = open(argv[1], O_RDWR | O_NDELAY);
	if (fd < 0) {
		int err = errno;
		perror(argv[1]);
		return err == EAGAIN ? 2 : 1;
	}
	close(fd);
	return 0;
}
"""
# where repro serves the loopback template
EP0 = template.load(templates.path("loopback")).functions["loop0"].mountpoint / "ep0"


@pytest.fixture
def naive(tmp_path) -> Path:
    (tmp_path / "naive.c").write_text(NAIVE)
    subprocess.run(["gcc", "-O2", "-o", tmp_path / "naive", tmp_path / "naive.c"], check=True)
    return tmp_path / "naive"


def test_a_naive_opener_is_named_giving_up_and_gadgetd_retrying(naive):
    trace = subprocess.Popen([sys.executable, "-m", "gadgetd", "trace", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not list((TRACEFS / "instances").glob("gadgetd_*")):  # the probes are in place
        assert trace.poll() is None, trace.communicate()
        assert time.monotonic() < deadline, "the trace never set up its instance"
        time.sleep(0.2)
    repro = subprocess.Popen([sys.executable, "-m", "gadgetd", "repro", "--nonblock",
                              "--scenario", "contended_open", "--duration", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    gave_up = []
    while repro.poll() is None and len(gave_up) < 3:
        if not EP0.exists():
            time.sleep(0.2)
            continue
        run = subprocess.run([naive, EP0], capture_output=True, text=True)
        if run.returncode == 2:
            gave_up.append(run)
    repro_out = repro.communicate(timeout=300)[0]
    trace.send_signal(signal.SIGINT)  # Ctrl-C: the report, then the probes removed
    out, err = trace.communicate(timeout=120)
    assert trace.returncode == 0, err
    assert gave_up, f"the naive program never met EAGAIN\n{repro_out[-2000:]}"
    report = json.loads(out)
    rows = report["processes"]
    naive_rows = [r for r in rows if r["exe"] == str(naive)]
    assert naive_rows and all(r["opens"] == 1 and r["nonblock_opens"] == 1 for r in naive_rows)
    assert [r for r in naive_rows if r["eagain"] == 1 and r["after_eagain"] == "gave up"], rows
    ours = [r for r in rows if "gadgetd" in r["cmdline"] and r["after_eagain"] == "retried"]
    assert ours, [r for r in rows if r["exe"] != str(naive)]
    assert any(r["ep0_io"] and r["longest_ep0_io_ms"] for r in rows), "no ep0 I/O traced"
    assert report["lost"] == 0 and report["missed"] == {}, report
    assert not list((TRACEFS / "instances").glob("gadgetd_*"))
    assert "gadgetd_" not in (TRACEFS / "kprobe_events").read_text()
    if os.environ.get("GADGETD_RESULTS"):
        Path(os.environ["GADGETD_RESULTS"], "trace.json").write_text(out)


def test_sigint_removes_the_probes():
    trace = subprocess.Popen([sys.executable, "-m", "gadgetd", "trace"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while "gadgetd_" not in (TRACEFS / "kprobe_events").read_text():
        assert trace.poll() is None and time.monotonic() < deadline, trace.communicate()
        time.sleep(0.2)
    trace.send_signal(signal.SIGINT)
    out, err = trace.communicate(timeout=60)
    assert trace.returncode == 0, err
    assert "gadgetd trace:" in out and "no process opened" in out
    assert "gadgetd_" not in (TRACEFS / "kprobe_events").read_text()
    assert not list((TRACEFS / "instances").glob("gadgetd_*"))
