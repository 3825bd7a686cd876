"""sd_notify datagrams, received on a real socket as systemd would."""

import os
import socket

from gadgetd.notify import Notifier


def _listen(address):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_ready_status_watchdog_reach_the_socket(tmp_path):
    path = str(tmp_path / "notify")
    with _listen(path) as sock:
        n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
        n.send(ready=1, status="bound to dummy_udc.0")
        n.send(watchdog=1)
        assert sock.recv(4096) == b"READY=1\nSTATUS=bound to dummy_udc.0"
        assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.watchdog_interval == 10.0


def test_abstract_namespace_socket():
    name = f"gadgetd-test-{os.getpid()}"
    with _listen("\0" + name) as sock:
        Notifier({"NOTIFY_SOCKET": "@" + name}).send(stopping=1)
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_systemd_nothing_is_sent_and_no_watchdog():
    n = Notifier({})
    assert not n.enabled and n.watchdog_interval is None
    n.send(ready=1)  # no socket: a no-op


def test_watchdog_for_another_pid_is_not_ours():
    n = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval is None
