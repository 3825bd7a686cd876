"""Worker channel messages and the event loop, on real sockets and a real epoll (no root)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from gadgetd import channel
from gadgetd.eventloop import EventLoop


def test_messages_round_trip_over_a_seqpacket_pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        for message in (channel.Ready({"enabled": False}), channel.Status({"counters": {}}),
                        channel.Error("OSError: [Errno 5] Input/output error")):
            channel.send(a, message)
            assert channel.receive(b) == message
        a.close()
        assert channel.receive(b) is None  # EOF


@pytest.mark.parametrize("data, problem", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "unknown message"),
    (b'{"type": "hello"}', "unknown message"),
    (b'{"type": "ready"}', "malformed ready"),
    (b'{"type": "status", "status": "fine"}', "malformed status"),
    (b'{"type": "error", "error": 5}', "malformed error"),
    (b'{"type": "ready", "status": {}, "extra": 1}', "malformed ready"),
    (b"\xff\xfe", "not JSON"),
])
def test_malformed_messages_are_refused(data, problem):
    with pytest.raises(channel.ChannelError, match=problem):
        channel.decode(data)


def test_timers_run_in_order_and_cancelled_ones_do_not():
    loop = EventLoop(max_wait=0.05)
    ran = []
    try:
        loop.call_later(0.02, lambda: ran.append("second"))
        loop.call_later(0.01, lambda: ran.append("first"))
        loop.call_later(0.015, lambda: ran.append("never")).cancel()
        loop.call_later(0.03, loop.stop)
        loop.run()
    finally:
        loop.close()
    assert ran == ["first", "second"]


def test_reader_runs_when_readable_and_can_be_removed():
    loop = EventLoop(max_wait=0.05)
    r, w = socket.socketpair()
    got = []

    def on_read():
        got.append(r.recv(10))
        loop.remove_reader(r.fileno())
        loop.call_later(0.02, loop.stop)

    try:
        loop.add_reader(r.fileno(), on_read)
        w.send(b"x")
        loop.run()
        w.send(b"y")  # no reader any more: the loop does not read it
        loop.stopped = False
        loop.call_later(0.05, loop.stop)
        loop.run()
    finally:
        loop.close()
        r.close()
        w.close()
    assert got == [b"x"]


def test_a_signal_ends_the_wait_at_once():
    loop = EventLoop(max_wait=30.0)
    flag = []
    old = signal.signal(signal.SIGUSR1, lambda *a: flag.append(1))
    try:
        loop.wake_on_signals()
        # From another process while the loop waits in epoll (Python retries an interrupted
        # poll after running the handler: only the wake-up fd ends the wait).
        killer = subprocess.Popen(["sh", "-c", f"sleep 0.3; kill -USR1 {os.getpid()}"])
        start = time.monotonic()
        loop.run(until=lambda: bool(flag))
        assert time.monotonic() - start < 5, "the 30 s wait was not interrupted"
        killer.wait()
    finally:
        loop.close()
        signal.signal(signal.SIGUSR1, old)
