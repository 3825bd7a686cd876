"""A function worker: a child of the root supervisor, running as the template's unprivileged user
(`gadgetd` unless the template names another).

It opens ep0 under the open policy, writes descriptors and strings, opens the endpoint files and
serves events and data in gadgetd.eventloop. It tells the supervisor over its channel
(gadgetd.channel): `ready` once the ep files are open (the supervisor binds the UDC only then),
`status` every second from its event loop (the supervisor's watchdog depends on them). Any
error ends the worker; the supervisor's recovery (unbind, respawn, rebind) handles it.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import socket
import sys

from gadgetd import channel, ffs, registry, syscalls
from gadgetd.errors import SetupError
from gadgetd.eventloop import EventLoop
from gadgetd.model import DEFAULT_USER, FunctionSpec
from gadgetd.open_policy import Ep0OpenPolicy, RetryStats
from gadgetd.service import SYSUSERS_FILE

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
STATUS_INTERVAL = 1.0


def user_entry(fn: FunctionSpec) -> pwd.struct_passwd:
    """The worker's user from the user database: it must exist, and uid 0 needs allow_root."""
    try:
        entry = pwd.getpwnam(fn.user)
    except KeyError:
        how = ""
        if fn.user == DEFAULT_USER:
            how = (f": create it with `systemd-sysusers {SYSUSERS_FILE}` as root (`make setup` "
                   "in a checkout and `gadgetd install-service` do it)")
        raise SetupError(f"function {fn.name}: user {fn.user!r} does not exist{how}") from None
    if entry.pw_uid == 0 and not fn.allow_root:
        raise SetupError(f"function {fn.name}: user {fn.user!r} has uid 0: the worker would run "
                         f"as root (set allow_root = true in [function.{fn.name}] if it must)")
    return entry


def drop_privileges(fn: FunctionSpec) -> None:
    if os.geteuid() != 0:
        return
    entry = user_entry(fn)
    os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def _no_new_privileges() -> None:
    """Nothing the worker executes can gain privileges (setuid binaries, file capabilities),
    under systemd (NoNewPrivileges=) or not."""
    syscalls.prctl(PR_SET_NO_NEW_PRIVS, 1)


def _die_with_parent(parent: int) -> None:
    # After setuid: credential changes clear the parent-death signal.
    syscalls.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def serve(fn: FunctionSpec, cls, sock: socket.socket) -> int:
    policy = Ep0OpenPolicy(fn.ep0_open)
    stats = RetryStats()
    ep0 = ffs.Ep0(fn.mountpoint, policy, stats)
    endpoints = []
    try:
        ep0.write_descriptors(fn, cls.ffs_flags)
        endpoints = ffs.open_endpoints(fn, policy, stats)
        server = cls(fn, ep0, endpoints)
    except BaseException:
        for f in endpoints:
            f.close()
        ep0.close()
        raise
    loop = EventLoop(max_wait=STATUS_INTERVAL)
    signal.signal(signal.SIGTERM, lambda signum, frame: loop.stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    loop.wake_on_signals()
    try:
        for fd, handler in server.handlers().items():
            loop.add_reader(fd, handler)
        channel.send(sock, channel.Ready(server.status()))
        loop.every(STATUS_INTERVAL, lambda: channel.send(sock, channel.Status(server.status())))
        loop.run()
    finally:
        loop.close()
        server.close()
    return 0


def run(fn: FunctionSpec, sock: socket.socket, parent: int) -> None:
    """Entry point in the forked child; never returns."""
    status = 1
    try:
        # Everything the worker imports is imported while still root: the unprivileged user
        # may not be able to read the interpreter's own library directory.
        cls = registry.server_class(registry.get(fn.type))
        _no_new_privileges()
        drop_privileges(fn)
        _die_with_parent(parent)
        status = serve(fn, cls, sock)
    except ffs.SetupCancelled:
        status = 1
    except BaseException as exc:
        if not isinstance(exc, SystemExit):
            log.exception("worker %s failed", fn.name)
            try:
                channel.send(sock, channel.Error(f"{type(exc).__name__}: {exc}"))
            except OSError:
                pass
    finally:
        logging.shutdown()
        sys.stderr.flush()
        os._exit(status)
