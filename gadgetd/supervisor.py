"""`gadgetd run`: the root supervisor.

It owns configfs, the FunctionFS mounts and the UDC; each function is served by a worker child
running as the template's user. Bring-up order (bind too early and the kernel answers ENODEV):
configfs tree, mounts, workers (ep0 opened, descriptors and strings written, ep files open), UDC
bound last. Recovery is one place: a worker that dies or reports an error is replaced after the
UDC is unbound (reopening a deactivated instance that is still bound deadlocks kernels whose
open() takes ffs->mutex), then the UDC is bound again. Teardown mirrors bring-up.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import select
import signal
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path

from gadgetd import configfs, controllers, ffs, runstate, udc, worker
from gadgetd.errors import GadgetdError, SetupError, TemplateError
from gadgetd.model import FunctionSpec, GadgetSpec
from gadgetd.notify import Notifier
from gadgetd.undo import UndoLog

log = logging.getLogger(__name__)
READY_TIMEOUT = 60.0  # seconds a worker may take to open ep0 and its ep files
TICK = 1.0  # supervisor housekeeping interval (status file, watchdog)


@dataclass
class Worker:
    fn: FunctionSpec
    pid: int
    channel: socket.socket
    ready: bool = False
    status: dict | None = None
    last_heard: float = 0.0
    error: str | None = None


class Supervisor:
    def __init__(self, spec: GadgetSpec, replace: bool = False, wait_for_udc: bool = False,
                 reload=None, notifier: Notifier | None = None):
        self.spec, self.replace, self.wait_for_udc = spec, replace, wait_for_udc
        self.reload = reload  # () -> GadgetSpec, for SIGHUP
        self.notifier = notifier or Notifier()
        self.undo = UndoLog()
        self.workers: dict[str, Worker] = {}
        self.gadget_dir = configfs.gadget_dir(spec.name)
        self.udc_name: str | None = None
        self.udc_state = ""
        self.recoveries: list[dict] = []
        self.watch: udc.UdcWatch | None = None
        self._stop = False
        self._reload_requested = False
        self._ready_sent = False
        self._poller: select.epoll | None = None
        self._handlers: dict = {}
        self.started = time.time()

    # --- bring-up ---------------------------------------------------------------------------
    def _status(self, text: str) -> None:
        log.info("%s", text)
        self.notifier.send(status=text)

    def _clean_leftovers(self) -> None:
        previous = runstate.read(self.spec.name)
        if previous and previous.get("pid") != os.getpid() and runstate.alive(previous["pid"]):
            raise SetupError(f"gadget {self.spec.name!r} is served by gadgetd pid "
                             f"{previous['pid']}: stop that one first")
        if not self.gadget_dir.exists():
            return
        if previous is None and not self.replace:
            raise SetupError(f"gadget {self.spec.name!r} already exists in configfs: "
                             f"'gadgetd down {self.spec.name}' or run with --replace")
        bound = udc.bound(self.gadget_dir)
        for fn in self.spec.functions.values():
            mounts = ffs.mountpoints(fn.name)
            if mounts and bound and (mounts[0] / "ep0").exists() and not (mounts[0] / "ep1").exists():
                # A crashed daemon's no_disconnect instance: DEACTIVATED with the gadget bound.
                log.warning("FunctionFS %s is deactivated (its daemon died) while %s stays bound "
                            "to %s: unbinding before anything reopens ep0, since kernels whose "
                            "open() takes ffs->mutex (e5bf5ee26663 without 2005aabe94ea) "
                            "deadlock reopening it bound", fn.name, self.spec.name, bound)
        who = f"gadgetd pid {previous['pid']}" if previous else "an earlier run"
        log.warning("removing gadget %s left by %s", self.spec.name, who)
        start = time.monotonic()
        failures = configfs.remove_gadget(self.spec.name)
        if failures:
            raise SetupError(f"could not remove the leftover gadget: {failures[0]}")
        log.info("leftovers removed in %.0f ms (the reset ran in umount, not in open)",
                 (time.monotonic() - start) * 1e3)

    def _check_budget(self, udc_name: str) -> None:
        problems = controllers.check(self.spec, controllers.controller_of(udc_name))
        if problems:
            raise SetupError(f"UDC {udc_name} cannot serve {self.spec.name}: {problems[0]}")

    def _mount_options(self, fn: FunctionSpec) -> FunctionSpec:
        """FunctionFS files belong to the worker's user unless the template says otherwise."""
        if fn.user is None:
            return fn
        try:
            entry = pwd.getpwnam(fn.user)
        except KeyError:
            raise SetupError(f"function {fn.name}: user {fn.user!r} does not exist") from None
        mount = replace(fn.mount,
                        uid=fn.mount.uid if fn.mount.uid is not None else entry.pw_uid,
                        gid=fn.mount.gid if fn.mount.gid is not None else entry.pw_gid)
        return replace(fn, mount=mount)

    def bring_up(self) -> None:
        try:
            self._bring_up()
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise SetupError(f"bringing up {self.spec.name!r} failed: "
                             f"{exc.strerror or exc}{where}") from exc

    def _bring_up(self) -> None:
        spec = self.spec
        functions = {name: self._mount_options(fn) for name, fn in spec.functions.items()}
        if not self.wait_for_udc:
            self.udc_name = udc.resolve(spec.udc)  # before anything is touched
            self._check_budget(self.udc_name)
        configfs.ensure_configfs()
        self._clean_leftovers()
        for fn in functions.values():
            if ffs.mountpoints(fn.name) or fn.mountpoint.is_mount():
                raise SetupError(f"{fn.mountpoint} or FunctionFS instance {fn.name!r} is already "
                                 "mounted by someone else")
            if fn.mountpoint.is_dir() and any(fn.mountpoint.iterdir()):
                raise SetupError(f"function {fn.name}: mount point {fn.mountpoint} is not empty")
        configfs.GadgetTree(spec, self.undo).build()
        for fn in functions.values():
            ffs.mount(fn, self.undo)
        self.undo.push("stop workers", self._stop_workers)
        for fn in functions.values():
            self._start_worker(fn)
        self._write_state()

    def _start_worker(self, fn: FunctionSpec) -> Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: keep only stdio and its end of the channel
            fd = os.dup2(theirs.fileno(), 3, inheritable=False)
            os.closerange(4, os.sysconf("SC_OPEN_MAX"))
            worker.run(fn, socket.socket(fileno=fd), parent)
        theirs.close()
        w = Worker(fn, pid, ours, last_heard=time.monotonic())
        self.workers[fn.name] = w
        deadline = time.monotonic() + READY_TIMEOUT
        while not w.ready:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._receive(w, remaining):
                raise SetupError(f"function {fn.name}: worker did not get ready"
                                 + (f": {w.error}" if w.error else ""))
        log.info("function %s served by pid %d as %s", fn.name, pid, fn.user or "root")
        if self._poller is not None:
            self._poller.register(w.channel.fileno(), select.EPOLLIN)
            self._handlers[w.channel.fileno()] = lambda w=w: self._on_worker(w)
        return w

    def _receive(self, w: Worker, timeout: float) -> bool:
        """Read one message from a worker; False when it is gone (EOF) or silent for `timeout`."""
        ready, _, _ = select.select([w.channel], [], [], timeout)
        if not ready:
            return False
        data = w.channel.recv(1 << 20)
        if not data:
            return False
        message = json.loads(data)
        w.last_heard = time.monotonic()
        if message["type"] == "ready":
            w.ready = True
        if message["type"] == "error":
            w.error = message["error"]
        if "status" in message:
            w.status = message["status"]
        return True

    def _stop_workers(self) -> None:
        for w in self.workers.values():
            self._end_worker(w, signal.SIGTERM)
        self.workers.clear()

    def _end_worker(self, w: Worker, sig: int) -> int | None:
        if self._poller is not None and w.channel.fileno() in self._handlers:
            self._poller.unregister(w.channel.fileno())
            del self._handlers[w.channel.fileno()]
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass
        status = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid, status = os.waitpid(w.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.02)
        else:
            log.error("worker %d did not stop: killing it", w.pid)
            os.kill(w.pid, signal.SIGKILL)
            _, status = os.waitpid(w.pid, 0)
        w.channel.close()
        return status

    # --- the UDC ----------------------------------------------------------------------------
    def _try_bind(self) -> bool:
        """Bind when every worker is ready and a UDC is there; True once bound."""
        if udc.bound(self.gadget_dir):
            return True
        if not all(w.ready for w in self.workers.values()):
            return False
        try:
            name = udc.resolve(self.spec.udc)
            self._check_budget(name)
        except SetupError as exc:
            self._status(f"waiting for UDC: {exc}")
            return False
        try:
            udc.bind(self.gadget_dir, name)
        except OSError as exc:
            self._status(f"binding {name} failed ({exc.strerror}); waiting for the UDC")
            return False
        self.udc_name = name
        self._follow_udc_state(name)
        self._status(f"bound to {name}")
        if not self._ready_sent:  # READY=1 once the gadget is bound to a UDC
            self.notifier.send(ready=1)
            self._ready_sent = True
        return True

    def _unbind(self) -> None:
        try:
            udc.unbind(self.gadget_dir)
        except OSError as exc:
            log.warning("unbind failed: %s", exc)

    def _follow_udc_state(self, name: str | None) -> None:
        if self.watch is None:
            return
        old = self.watch.state_file.fileno() if self.watch.state_file else None
        if old is not None and self._poller is not None and old in self._handlers:
            self._poller.unregister(old)
            del self._handlers[old]
        fd = self.watch.watch_state(name)
        if fd is not None and self._poller is not None:
            self._poller.register(fd, select.EPOLLPRI | select.EPOLLERR)
            self._handlers[fd] = self._on_udc_state
            self._on_udc_state()

    def _on_udc_state(self) -> None:
        try:
            state = self.watch.read_state()
        except (OSError, AttributeError):
            return
        if state != self.udc_state:
            self.udc_state = state
            self._status(f"{self.udc_name}: {state}")

    def _on_udc_event(self) -> None:
        for action, name in self.watch.events():
            log.info("UDC %s: %s", name, action)
            if action == "remove" and name == self.udc_name:
                self._follow_udc_state(None)
                self.udc_state = "gone"
                self._status(f"UDC {name} removed: waiting for it to come back")
            elif action == "add":
                self._try_bind()

    # --- workers ----------------------------------------------------------------------------
    def _on_worker(self, w: Worker) -> None:
        try:
            alive = self._receive(w, 0)
        except (OSError, ValueError):
            alive = False
        if not alive or w.error:
            self._recover(w, w.error or "worker exited")

    def _recover(self, w: Worker, reason: str) -> None:
        start = time.monotonic()
        status = self._end_worker(w, signal.SIGKILL)
        log.warning("function %s: %s (exit status %s): recovering", w.fn.name, reason, status)
        self.notifier.send(status=f"recovering {w.fn.name}: {reason}")
        # Unbind before the instance is reopened (see the module docstring).
        self._unbind()
        backoff = 0.1
        while not self._stop:
            try:
                self._start_worker(w.fn)
                break
            except (SetupError, OSError) as exc:
                log.error("function %s: restart failed: %s; retrying in %.1f s", w.fn.name, exc,
                          backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)
        bound = self._try_bind()
        took = time.monotonic() - start
        self.recoveries.append({"function": w.fn.name, "reason": reason,
                                "seconds": round(took, 3), "at": time.time()})
        log.info("function %s recovered in %.0f ms%s", w.fn.name, took * 1e3,
                 "" if bound else " (waiting for the UDC)")

    # --- state, watchdog --------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "name": self.spec.name,
            "pid": os.getpid(),
            "template": self.spec.source,
            "started": self.started,
            "udc": self.udc_name,
            "bound": udc.bound(self.gadget_dir) if self.gadget_dir.exists() else "",
            "udc_state": self.udc_state,
            "recoveries": self.recoveries[-20:],
            "recovery_count": len(self.recoveries),
            "functions": {name: {"pid": w.pid, "user": w.fn.user or "root", "ready": w.ready,
                                 **(w.status or {})} for name, w in self.workers.items()},
        }

    def _write_state(self) -> None:
        try:
            runstate.write(self.spec.name, self.state())
        except OSError as exc:
            log.debug("status file: %s", exc)

    def _tick(self) -> None:
        self._write_state()
        interval = self.notifier.watchdog_interval
        fresh = all(time.monotonic() - w.last_heard < (interval or 10) / 2
                    for w in self.workers.values())
        if fresh:  # a worker whose loop is stuck stops the pings; systemd restarts us
            self.notifier.send(watchdog=1)
        else:
            log.warning("a worker's event loop is silent: withholding the watchdog ping")

    # --- the loop ---------------------------------------------------------------------------
    def serve(self) -> None:
        wake_r, wake_w = socket.socketpair()
        for sock in (wake_r, wake_w):
            sock.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        self._poller = select.epoll()
        self._handlers = {wake_r.fileno(): lambda: wake_r.recv(4096)}
        for w in self.workers.values():
            self._handlers[w.channel.fileno()] = lambda w=w: self._on_worker(w)
        try:
            for fd in self._handlers:
                self._poller.register(fd, select.EPOLLIN)
            self._try_bind()
            self._start_watch()
            tick = (self.notifier.watchdog_interval or 2 * TICK) / 2
            next_tick = 0.0
            while not self._stop:
                for fd, _ in self._poller.poll(min(tick, TICK)):
                    handler = self._handlers.get(fd)
                    if handler:
                        handler()
                if self._reload_requested:
                    self._reload_requested = False
                    self._do_reload()
                if time.monotonic() >= next_tick:
                    self._tick()
                    next_tick = time.monotonic() + tick
        finally:
            signal.set_wakeup_fd(old_wakeup)
            self._poller.close()
            self._poller = None
            if self.watch is not None:
                self.watch.close()
            wake_r.close()
            wake_w.close()

    def _start_watch(self) -> None:
        """The UDC watch starts after the first bind attempt, so importing pyudev (0.6 s in the
        VM) overlaps the host's enumeration instead of delaying it. Whatever happened to the UDC
        before the monitor listened is read from sysfs once it does."""
        self.watch = udc.UdcWatch()
        self._poller.register(self.watch.fileno(), select.EPOLLIN)
        self._handlers[self.watch.fileno()] = self._on_udc_event
        if udc.bound(self.gadget_dir):
            self._follow_udc_state(self.udc_name)
        else:  # not there yet, or removed before the monitor listened
            self._try_bind()

    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP:
            self._reload_requested = True
            return
        log.info("%s: stopping", signal.Signals(signum).name)
        self._stop = True

    def _do_reload(self) -> None:
        try:
            new = self.reload() if self.reload else None
        except (TemplateError, GadgetdError) as exc:
            log.error("SIGHUP: keeping the running gadget: %s", exc)
            return
        if new is None:
            return
        log.info("SIGHUP: re-enumerating with %s", new.source)
        self.notifier.send(reloading=1, status="reloading the template")
        self._teardown_quietly()
        self.spec = new
        self.gadget_dir = configfs.gadget_dir(new.name)
        self.workers = {}
        self.bring_up()  # registers the new workers with the running loop
        self._try_bind()
        self.notifier.send(ready=1)

    def _teardown_quietly(self) -> None:
        self._unbind()
        failures = self.undo.unwind()
        runstate.remove(self.spec.name)
        if failures:
            raise SetupError(f"reload: teardown failed: {failures[0]}")

    def tear_down(self) -> list[str]:
        self.notifier.send(stopping=1, status="stopping")
        if self.gadget_dir.exists():
            self._unbind()
        failures = self.undo.unwind()
        runstate.remove(self.spec.name)
        if failures:
            log.error("teardown left %d problems", len(failures))
        else:
            log.info("gadget %s removed", self.spec.name)
        return failures

    def run(self) -> int:
        """Bring up, serve, tear down. Signals only set flags for the whole lifetime, so a
        SIGTERM during bring-up or teardown never leaves a half-built gadget behind."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        status = 0
        try:
            self.bring_up()
            if not self._stop:
                self.serve()
        except Exception as exc:
            if not isinstance(exc, GadgetdError):
                log.exception("gadgetd failed")
            raise
        finally:
            if self.tear_down():
                status = 1
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status


def template_is_safe(path: Path) -> str | None:
    """A problem if the template could have been written by someone other than its reader."""
    st = path.stat()
    if st.st_mode & 0o002:
        return f"{path} is writable by others (mode {st.st_mode & 0o777:o})"
    if st.st_uid not in (0, os.geteuid()):
        return f"{path} belongs to uid {st.st_uid}, not root"
    return None
