"""`gadgetd run`: bring the gadget up, serve its functions, tear everything down in reverse.

Bring-up order (bind too early and the kernel answers ENODEV): configfs tree, FunctionFS mounts,
ep0 opened and descriptors + strings written (ep files appear), ep files opened, UDC bound last.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import sys

from gadgetd import configfs, ffs, udc
from gadgetd.errors import GadgetdError, SetupError
from gadgetd.functions import server_class
from gadgetd.open_policy import Ep0OpenPolicy, RetryStats
from gadgetd.template import GadgetSpec
from gadgetd.undo import UndoLog

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, spec: GadgetSpec, replace: bool = False):
        self.spec, self.replace = spec, replace
        self.undo = UndoLog()
        self.servers = []
        self.retry_stats = RetryStats()
        self.udc = None
        self.gadget_dir = configfs.gadget_dir(spec.name)
        self._stop = False

    def bring_up(self) -> None:
        try:
            self._bring_up()
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise SetupError(f"bringing up {self.spec.name!r} failed: "
                             f"{exc.strerror or exc}{where}"
                             ) from exc

    def _bring_up(self) -> None:
        spec = self.spec
        self.udc = udc.resolve(spec.udc)  # before anything is touched
        configfs.ensure_configfs()
        if self.gadget_dir.exists():
            if not self.replace:
                raise SetupError(f"gadget {spec.name!r} already exists in configfs: "
                                 f"'gadgetd down {spec.name}' or run with --replace")
            failures = configfs.remove_gadget(spec.name)
            if failures:
                raise SetupError(f"--replace could not remove {spec.name!r}: {failures[0]}")
        for fn in spec.functions.values():
            if ffs.mountpoints(fn.name) or fn.mountpoint.is_mount():
                raise SetupError(f"{fn.mountpoint} or FunctionFS instance {fn.name!r} is already "
                                 "mounted by someone else")
        configfs.GadgetTree(spec, self.undo).build()
        for fn in spec.functions.values():
            ffs.mount(fn, self.undo)
            policy = Ep0OpenPolicy(nonblock=fn.ep0_open == "nonblock")
            cls = server_class(fn.type)
            ep0 = ffs.Ep0(fn.mountpoint, policy, self.retry_stats)
            endpoints = []
            try:
                ep0.write_descriptors(fn, cls.ffs_flags)
                endpoints = ffs.open_endpoints(fn, policy, self.retry_stats)
                server = cls(fn, ep0, endpoints)
            except BaseException:
                for f in endpoints:
                    f.close()
                ep0.close()
                raise
            self.undo.push(f"close {fn.name}", server.close)
            self.servers.append(server)
        udc.bind(self.gadget_dir, self.udc)
        self.undo.push(f"unbind {self.udc}", lambda: udc.unbind(self.gadget_dir))
        log.info("gadget %s bound to %s (%s)", spec.name, self.udc,
                 ", ".join(f"{f.type} {f.name} at {f.mountpoint}" for f in spec.functions.values()))

    def serve(self) -> None:
        handlers = {self._wake_r.fileno(): lambda: self._wake_r.recv(64)}
        for server in self.servers:
            handlers.update(server.handlers())
        with select.epoll() as poller:
            for fd in handlers:
                poller.register(fd, select.EPOLLIN)
            while not self._stop:
                for fd, _ in poller.poll():
                    handlers[fd]()

    def _on_signal(self, signum, frame):
        log.info("%s: stopping", signal.Signals(signum).name)
        self._stop = True

    def tear_down(self) -> list[str]:
        failures = self.undo.unwind()
        if failures:
            log.error("teardown left %d problems", len(failures))
        else:
            log.info("gadget %s removed", self.spec.name)
        return failures

    def run(self) -> int:
        """Bring up, serve, tear down. Signals only set a flag for the whole lifetime, so a
        SIGTERM during bring-up or teardown never leaves a half-built gadget behind."""
        self._wake_r, wake_w = socket.socketpair()
        for sock in (self._wake_r, wake_w):
            sock.setblocking(False)
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        status = 0
        try:
            self.bring_up()
            self.serve()
        except Exception:
            if not isinstance(sys.exc_info()[1], GadgetdError):
                log.exception("gadgetd failed")
            raise
        finally:
            if self.tear_down():
                status = 1
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._wake_r.close()
            wake_w.close()
        return status
