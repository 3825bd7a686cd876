"""A signal between fork and the worker's own set-up never runs the supervisor's handler in the
worker (WorkerProcess.start blocks signals across fork). A storm of SIGHUP at the process group
while workers are forked: every handler run must be the parent's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

STORM = r"""
import os, signal, threading, time
from gadgetd.eventloop import EventLoop
from gadgetd.worker_process import WorkerProcess
from tests.test_recovery import _fn

os.setpgid(0, 0)  # the storm hits this process group only
ran_in = []
r, w = os.pipe()
signal.signal(signal.SIGHUP, lambda signum, frame: os.write(w, b"%d\n" % os.getpid()))
loop = EventLoop()
loop.wake_on_signals()
done = threading.Event()

def storm():
    while not done.is_set():
        os.killpg(0, signal.SIGHUP)
        time.sleep(0.0001)

threading.Thread(target=storm, daemon=True).start()
children = []
for _ in range(150):
    worker = WorkerProcess(_fn("a"), loop, lambda w: None, lambda *a: None).start(60)
    os.waitpid(worker.pid, 0)
    children.append(worker.pid)
done.set()
os.close(w)
pids = {int(p) for p in os.read(r, 1 << 20).split()}
print(len(children), sorted(pids - {os.getpid()}))
"""


def test_no_supervisor_handler_runs_in_a_forked_worker():
    proc = subprocess.run([sys.executable, "-c", STORM], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    forked, in_children = proc.stdout.split(maxsplit=1)
    assert forked == "150"
    assert in_children.strip() == "[]", f"the supervisor's handler ran in workers {in_children}"
