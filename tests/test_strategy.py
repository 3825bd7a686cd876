"""The daemon's log as GadgetStrategy reads it while the daemon is still writing."""

import sys
import time

from gadgetd import templates
from gadgetd.strategy import GadgetStrategy

# Stands in for `gadgetd run`: its first line, then lines as fast as it can for 2 s, written
# through the stderr it was given (the file whose offset the reader shares).
WRITER = """
import os, time
os.write(2, b"first line\\n")
end = time.monotonic() + 2
while time.monotonic() < end:
    os.write(2, b"x" * 79 + b"\\n")
"""


def test_reading_the_log_while_the_daemon_writes_loses_nothing():
    strategy = GadgetStrategy(templates.path("loopback"), command=(sys.executable, "-c", WRITER))
    daemon = strategy.start()
    reads = []
    while daemon.poll() is None:
        reads.append(strategy.daemon_log())
        time.sleep(0.001)
    final = strategy.daemon_log()
    assert final.startswith("first line\n")
    assert set(final.splitlines()[1:]) == {"x" * 79}
    assert all(r.startswith("first line\n") or "first line\n".startswith(r) for r in reads)
