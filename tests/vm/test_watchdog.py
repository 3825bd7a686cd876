"""The supervisor keeps feeding systemd's watchdog while a function's restart keeps failing:
recovery is a state of the event loop, not a sleep inside it. The fault comes from outside:
strace attached to the daemon makes every new worker's open() of ep0 fail with EACCES."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from gadgetd import runstate
from tests.vm.conftest import save_figures

WATCHDOG_SEC = 10  # as the unit's WatchdogSec
FAILING_FOR = 30.0


def _tracer_attached(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return line.split()[1] != "0"
    return False


def test_watchdog_pings_continue_while_restarts_fail(daemon, loopback_template, tmp_path,
                                                     monkeypatch):
    address = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.5)
    pings, stop = [], threading.Event()

    def listen():
        while not stop.is_set():
            try:
                data = listener.recv(4096)
            except TimeoutError:
                continue
            if b"WATCHDOG=1" in data.split(b"\n"):
                pings.append(time.monotonic())

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_SEC * 1_000_000))
    d = daemon(loopback_template)
    d.wait_bound()
    ep0 = d.spec.functions["loop0"].mountpoint / "ep0"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-p", str(d.proc.pid),
                               "-P", str(ep0), "-e", "trace=openat",
                               "-e", "inject=openat:error=EACCES"])
    try:
        deadline = time.monotonic() + 20
        while not _tracer_attached(d.proc.pid):
            assert time.monotonic() < deadline, "strace did not attach"
            time.sleep(0.1)
        worker = runstate.read(d.spec.name)["functions"]["loop0"]["pid"]
        os.kill(worker, signal.SIGKILL)
        start = time.monotonic()
        time.sleep(FAILING_FOR)
        window = [t for t in pings if t >= start]
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches from every traced process
        tracer.wait(30)
    log = d.read_log()
    failed_restarts = log.count("restart failed; retrying")
    assert failed_restarts >= 5, log[-3000:]
    assert "Permission denied" in log
    gaps = [b - a for a, b in zip([start, *window], [*window, start + FAILING_FOR], strict=True)]
    assert max(gaps) <= WATCHDOG_SEC / 2, f"watchdog gaps {gaps}"
    # Once the fault is gone the function comes back by itself (backoff is at most 10 s).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = runstate.read(d.spec.name)
        if state["functions"]["loop0"]["ready"] and state["bound"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"not recovered: {runstate.read(d.spec.name)}")
    assert runstate.read(d.spec.name)["recovery_count"] == 1
    assert d.stop() == 0, d.stderr
    stop.set()
    thread.join(5)
    listener.close()
    save_figures({"suite": "watchdog_during_failing_restarts", "kernel": os.uname().release,
                  "failing_s": FAILING_FOR, "pings": len(window), "failed_restarts": failed_restarts,
                  "longest_gap_s": round(max(gaps), 2)})
