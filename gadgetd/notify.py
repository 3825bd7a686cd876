"""sd_notify(3) for Type=notify services: READY=1, STATUS=, WATCHDOG=1, STOPPING=1.

Written here rather than taken from a library: `sdnotify` (PyPI) is unmaintained since 2017, and
`systemd-python` needs a C toolchain and libsystemd headers on the board. The protocol is one
datagram to $NOTIFY_SOCKET.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, environ=os.environ):
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self.address = address or None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 1e6 if watched else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields) -> None:
        """notify(ready=1, status="...") -> 'READY=1\\nSTATUS=...'."""
        if not self.address:
            return
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(message, self.address)
            except OSError:
                pass  # systemd went away: nothing to tell
