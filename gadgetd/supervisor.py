"""`gadgetd run`: the root supervisor.

Reading order: gadgetd.cli (`run`) -> this module -> gadgetd.recovery (each function's worker as a
state of the loop) -> gadgetd.worker_process (fork, ready, end) -> gadgetd.worker (the child) ->
gadgetd.function and gadgetd.functions.* (serving one FunctionFS instance).

The supervisor owns configfs, the FunctionFS mounts and the UDC; each function is served by a
worker child running as the template's user. Bring-up order (bind too early and the kernel
answers ENODEV): configfs tree, mounts, workers (ep0 opened, descriptors and strings written, ep
files open), UDC bound last, once every worker said it is ready. Everything after bring-up runs in
one event loop (gadgetd.eventloop): worker channels and exits, UDC add/remove and state, the
status file and the watchdog. Teardown is one path, used by stop and by reload: unbind, then the
undo log in reverse.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from dataclasses import replace

from gadgetd import configfs, controllers, ffs, leftovers, ownership, registry, runstate, udc, worker
from gadgetd.errors import GadgetdError, SetupError, TemplateError
from gadgetd.eventloop import EventLoop
from gadgetd.model import FunctionSpec, GadgetSpec
from gadgetd.notify import Notifier
from gadgetd.ownership import Claim
from gadgetd.recovery import READY_TIMEOUT, Recovery
from gadgetd.undo import UndoLog
from gadgetd.worker_process import WorkerProcess

log = logging.getLogger(__name__)
TICK = 1.0  # supervisor housekeeping interval (status file, watchdog)
STOP_TIMEOUT = 30.0  # seconds a worker may take to stop on SIGTERM at teardown
SILENT_TIMEOUT = 10.0  # a ready worker that sent nothing for this long is killed and restarted
BIND_BACKOFF, MAX_BIND_BACKOFF = 0.5, 30.0  # retrying a bind that failed or found no UDC


class Supervisor:
    def __init__(self, spec: GadgetSpec, replace: bool = False, wait_for_udc: bool = False,
                 reload=None, notifier: Notifier | None = None, loop: EventLoop | None = None):
        self.spec, self.replace, self.wait_for_udc = spec, replace, wait_for_udc
        self.reload = reload  # () -> GadgetSpec, for SIGHUP
        self.notifier = notifier or Notifier()
        self.loop = loop or EventLoop(max_wait=TICK)
        self.undo = UndoLog()
        self.recovery: Recovery | None = None
        self.gadget_dir = configfs.gadget_dir(spec.name)
        self.udc_name: str | None = None
        self.udc_state = ""
        self.watch: udc.UdcWatch | None = None
        self.failure: GadgetdError | None = None
        self.claim: Claim | None = None
        self._reloading_from: tuple[GadgetSpec, Claim | None] | None = None
        self._bind_backoff = BIND_BACKOFF
        self._bind_timer = None
        self._state_fd: int | None = None
        self._stop = False
        self._reload_requested = False
        self._ready_sent = False
        self.started = 0.0

    # --- bring-up ---------------------------------------------------------------------------
    def _status(self, text: str) -> None:
        log.info("%s", text)
        self.notifier.send(status=text)

    def _check_budget(self, udc_name: str) -> None:
        problems = controllers.check(self.spec, controllers.controller_of(udc_name))
        if problems:
            raise SetupError(f"UDC {udc_name} cannot serve {self.spec.name}: {problems[0]}")

    def _mount_options(self, fn: FunctionSpec) -> FunctionSpec:
        """FunctionFS files belong to the worker's user unless the template says otherwise."""
        entry = worker.user_entry(fn)  # before anything is touched: a missing user, a uid 0 one
        mount = replace(fn.mount,
                        uid=fn.mount.uid if fn.mount.uid is not None else entry.pw_uid,
                        gid=fn.mount.gid if fn.mount.gid is not None else entry.pw_gid)
        return replace(fn, mount=mount)

    def bring_up(self) -> None:
        """Build the tree, mount, start the workers; the loop binds once they are ready."""
        try:
            self._bring_up()
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise SetupError(f"bringing up {self.spec.name!r} failed: "
                             f"{exc.strerror or exc}{where}") from exc

    def _bring_up(self) -> None:
        spec = self.spec
        functions = {name: self._mount_options(fn) for name, fn in spec.ffs_functions.items()}
        if not self.wait_for_udc:
            self.udc_name = udc.resolve(spec.udc)  # before anything is touched
            self._check_budget(self.udc_name)
        configfs.ensure_configfs()
        leftovers.clean(spec, self.replace, self.claim.previous)
        for fn in functions.values():
            if ffs.mountpoints(fn.name) or fn.mountpoint.is_mount():
                raise SetupError(f"{fn.mountpoint} or FunctionFS instance {fn.name!r} is already "
                                 "mounted by someone else")
            if fn.mountpoint.is_dir() and any(fn.mountpoint.iterdir()):
                raise SetupError(f"function {fn.name}: mount point {fn.mountpoint} is not empty")
        configfs.GadgetTree(spec, self.undo).build()
        for fn in functions.values():
            ffs.mount(fn, self.undo)
        self.recovery = Recovery(self.loop, self._spawn, self._unbind, self._on_all_ready,
                                 self._fatal)
        self.undo.push("stop workers", self._stop_workers)
        self.recovery.start(functions)
        self._write_state()

    def _spawn(self, fn: FunctionSpec, on_ready, on_gone) -> WorkerProcess:
        kind = WorkerProcess
        if registry.get(fn.type).kind == "exec":  # imported only when a template has one
            from gadgetd.exec_process import ExecProcess as kind
        return kind(fn, self.loop, on_ready, on_gone).start(READY_TIMEOUT)

    def _fatal(self, message: str) -> None:
        if self._reloading_from is not None:  # the new template did not come up
            self._restore(message)
            return
        self.failure = SetupError(message)
        self.loop.stop()

    def _stop_workers(self) -> None:
        self.recovery.stopping = True
        workers = self.recovery.workers()
        for w in workers:
            w.signal(signal.SIGTERM)
        unreaped = [w for w in workers if not w.end(signal.SIGTERM, STOP_TIMEOUT)]
        if unreaped:
            raise OSError("could not reap " + ", ".join(
                f"worker {w.pid} ({w.fn.name}, stuck in the kernel)" for w in unreaped))

    # --- the UDC ----------------------------------------------------------------------------
    def _on_all_ready(self) -> None:
        if self._reloading_from is not None:
            _, old_claim = self._reloading_from
            self._reloading_from = None
            if old_claim is not None:  # the reload renamed the gadget
                old_claim.release()
        self._try_bind()
        if self.watch is None:
            self._start_watch()

    def _try_bind(self) -> bool:
        """Bind when every worker is ready and a UDC is there; True once bound."""
        if udc.bound(self.gadget_dir):
            return True
        if self.recovery is None or not self.recovery.all_ready:
            return False
        try:
            name = udc.resolve(self.spec.udc)
            self._check_budget(name)
            udc.bind(self.gadget_dir, name)
        except SetupError as exc:
            self._bind_later(f"waiting for UDC: {exc}")
            return False
        except OSError as exc:
            self._bind_later(f"binding {name} failed ({exc.strerror}); waiting for the UDC")
            return False
        self._bind_backoff = BIND_BACKOFF
        self.udc_name = name
        self._follow_udc_state(name)
        self._write_state()  # whoever waits for the bind reads it here
        self._status(f"bound to {name}")
        if not self._ready_sent:  # READY=1 once the gadget is bound to a UDC
            self.notifier.send(ready=1)
            self._ready_sent = True
        return True

    def _bind_later(self, why: str) -> None:
        """Retry on a timer (0.5 s doubling to 30 s) as well as on the next UDC uevent; until
        the first bind, systemd's start timeout is extended past the next try."""
        if self._bind_timer is not None:
            return  # a retry is already due
        delay = self._bind_backoff
        self._bind_backoff = min(delay * 2, MAX_BIND_BACKOFF)
        self._status(f"{why}; retrying in {delay:g} s")
        if not self._ready_sent:
            self.notifier.send(extend_timeout_usec=int((delay + 10) * 1e6))

        def retry():
            self._bind_timer = None
            self._try_bind()

        self._bind_timer = self.loop.call_later(delay, retry)

    def _cancel_bind_retry(self) -> None:
        if self._bind_timer is not None:
            self._bind_timer.cancel()
            self._bind_timer = None

    def _unbind(self) -> None:
        try:
            if name := udc.unbind(self.gadget_dir):
                log.info("unbound from %s", name)
            else:  # e.g. by FunctionFS, when an instance without no_disconnect lost its ep0
                log.info("unbound already")
        except OSError as exc:
            log.warning("unbind failed: %s", exc)

    def _start_watch(self) -> None:
        """The UDC watch starts after the first bind attempt, so importing pyudev (0.6 s in the
        VM) overlaps the host's enumeration instead of delaying it. Whatever happened to the UDC
        before the monitor listened is read from sysfs once it does."""
        self.watch = udc.UdcWatch()
        self.loop.add_reader(self.watch.fileno(), self._on_udc_event)
        if udc.bound(self.gadget_dir):
            self._follow_udc_state(self.udc_name)
        elif self.udc_name and self.udc_name in udc.list_udcs():
            # Bound, and unbound by someone else while the UDC stayed: theirs, as it is once
            # the watch runs (binding again here made their own bind fail with EBUSY).
            self._status(f"unbound from {self.udc_name} by someone else: left unbound")
        else:  # not there yet, or removed before the monitor listened
            self._try_bind()

    def _follow_udc_state(self, name: str | None) -> None:
        if self.watch is None:
            return
        if self._state_fd is not None:
            self.loop.remove_reader(self._state_fd)
            self._state_fd = None
        fd = self.watch.watch_state(name)
        if fd is not None:
            self._state_fd = fd
            self.loop.add_reader(fd, self._on_udc_state, select.EPOLLPRI | select.EPOLLERR)
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
            elif action == "add":  # a new UDC: bind now, and back off afresh if that fails
                self._cancel_bind_retry()
                self._bind_backoff = BIND_BACKOFF
                self._try_bind()

    # --- state, watchdog --------------------------------------------------------------------
    def state(self) -> dict:
        slots = self.recovery.slots if self.recovery else {}
        functions = {name: slot.status() for name, slot in slots.items()}
        recoveries = self.recovery.recoveries if self.recovery else []
        return {
            "name": self.spec.name,
            "pid": os.getpid(),
            "template": self.spec.source,
            "started": self.started,
            "udc": self.udc_name,
            "bound": udc.bound(self.gadget_dir) if self.gadget_dir.exists() else "",
            "udc_state": self.udc_state,
            "recoveries": recoveries[-20:],
            "recovery_count": len(recoveries),
            "functions": functions,
        }

    def _write_state(self) -> None:
        try:
            runstate.write(self.spec.name, self.state())
        except OSError as exc:
            log.debug("status file: %s", exc)

    def _tick(self) -> None:
        """Status file, watchdog ping, and silent workers: a ready worker whose loop stopped
        (its status messages stopped) is the supervisor's to recover, with or without systemd's
        watchdog, which keeps being fed as long as this loop runs. An exec program sends none:
        only its exit or its deadline ends it."""
        now = self.loop.clock()
        for w in self.recovery.workers() if self.recovery else []:
            if w.heartbeats and w.ready and now - w.last_heard >= SILENT_TIMEOUT:
                w.fail(f"silent for {now - w.last_heard:.0f} s (its event loop is stuck)")
        self._write_state()
        self.notifier.send(watchdog=1)

    # --- signals, reload --------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        if signum == signal.SIGHUP:
            self._reload_requested = True
            return
        log.info("%s: stopping", signal.Signals(signum).name)
        self._stop = True

    def _should_stop(self) -> bool:
        if self._reload_requested and not self._stop:
            self._reload_requested = False
            self._reload()
        return self._stop

    def _reload(self) -> None:
        """SIGHUP: tear down, bring the new template up; if it does not come up (refused, or a
        worker failing before it was ready), the running template is restored."""
        try:
            new = self.reload() if self.reload else None
            new_claim = ownership.claim(new.name) if new and new.name != self.spec.name else None
        except (TemplateError, GadgetdError) as exc:
            log.error("SIGHUP: keeping the running gadget: %s", exc)
            return
        if new is None:
            return
        log.info("SIGHUP: re-enumerating with %s", new.source)
        self.notifier.send(reloading=1, status="reloading the template")
        old = self.spec
        self._switch_to(new, new_claim)
        self._reloading_from = (old, self.claim if new_claim else None)
        if new_claim:
            self.claim = new_claim
        try:
            self.bring_up()
        except GadgetdError as exc:
            self._restore(str(exc))

    def _switch_to(self, spec: GadgetSpec, claim: Claim | None) -> None:
        failures = self.tear_down()
        if failures:
            if claim:
                claim.release()
            raise SetupError(f"reload: teardown failed: {failures[0]}")
        self.spec = spec
        self.gadget_dir = configfs.gadget_dir(spec.name)
        self._ready_sent = False  # READY=1 again once the gadget is bound
        self.udc_state = ""

    def _restore(self, why: str) -> None:
        (old, old_claim), self._reloading_from = self._reloading_from, None
        log.error("SIGHUP: %s did not come up (%s): restoring %s", self.spec.source, why,
                  old.source)
        new_claim = self.claim if old_claim else None
        self._switch_to(old, None)
        if new_claim:
            new_claim.release()
            self.claim = old_claim
        self.bring_up()

    def tear_down(self) -> list[str]:
        """The one teardown path: unbind, then undo every bring-up step in reverse. A bring-up
        refused before its first step touches nothing (not someone else's gadget or state)."""
        if not self.undo:
            return []
        self._cancel_bind_retry()
        if self.gadget_dir.exists():
            self._unbind()
        failures = self.undo.unwind()
        runstate.remove(self.spec.name)
        return failures

    # --- the run ----------------------------------------------------------------------------
    def run(self) -> int:
        """Bring up, serve, tear down. Signals only set flags for the whole lifetime, so a
        SIGTERM during bring-up or teardown never leaves a half-built gadget behind."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        self.loop.wake_on_signals()
        self.started = time.time()
        status = 0
        try:
            self.claim = ownership.claim(self.spec.name)  # before anything is touched; held to the end
            self.bring_up()
            tick = (self.notifier.watchdog_interval or 2 * TICK) / 2
            self.loop.every(min(tick, TICK), self._tick)
            self.loop.run(until=self._should_stop)
            if self.failure is not None:
                raise self.failure
        except Exception as exc:
            if not isinstance(exc, GadgetdError):
                log.exception("gadgetd failed")
            raise
        finally:
            self.notifier.send(stopping=1, status="stopping")
            built = bool(self.undo)
            failures = self.tear_down()
            if failures:
                log.error("teardown left %d problems", len(failures))
                status = 1
            elif built:
                log.info("gadget %s removed", self.spec.name)
            if self.claim is not None and not failures:
                self.claim.release()  # a record left behind says: clean up after me
            if self.watch is not None:
                self.watch.close()
            self.loop.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status
