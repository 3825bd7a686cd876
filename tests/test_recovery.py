"""The supervisor's state machine without fork: a fake loop and clock, stand-in workers."""

from __future__ import annotations

import errno
import heapq
import itertools
from pathlib import Path

import pytest

from gadgetd import recovery, udc
from gadgetd.eventloop import Timer
from gadgetd.model import FunctionSpec, Interface
from gadgetd.recovery import DEAD, READY, STARTING, Recovery
from gadgetd.supervisor import SILENT_TIMEOUT, Supervisor
from gadgetd.template import parse


class FakeLoop:
    def __init__(self):
        self.now = 0.0
        self.timers = []
        self.order = itertools.count()
        self.stopped = False

    def clock(self):
        return self.now

    def call_at(self, when, callback):
        timer = Timer(when, callback)
        heapq.heappush(self.timers, (when, next(self.order), timer))
        return timer

    def call_later(self, delay, callback):
        return self.call_at(self.now + delay, callback)

    def every(self, interval, callback):
        def tick():
            callback()
            self.call_later(interval, tick)
        self.call_later(0, tick)

    def advance(self, seconds):
        end = self.now + seconds
        while self.timers and self.timers[0][0] <= end:
            when, _, timer = heapq.heappop(self.timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback()
        self.now = end

    def stop(self):
        self.stopped = True


class FakeWorker:
    pids = itertools.count(100)
    heartbeats = True

    def __init__(self, fn, on_ready, on_gone):
        self.fn, self.on_ready, self.on_gone = fn, on_ready, on_gone
        self.pid, self.ready, self.status, self.last_heard = next(self.pids), False, None, 0.0
        self.stuck, self.failure = None, None

    def become_ready(self, now=0.0):
        self.ready, self.last_heard = True, now
        self.on_ready(self)

    def die(self, reason="worker exited"):
        self.ready = False
        self.on_gone(self, reason, -9)

    def fail(self, reason):  # SIGKILL: the exit is reported at once
        self.failure = self.failure or reason
        self.die(reason)


class Rig:
    def __init__(self, names=("a", "b"), fail_spawns=0):
        self.loop = FakeLoop()
        self.spawned, self.calls, self.fatal = [], [], None
        self.fail_spawns = fail_spawns
        self.recovery = Recovery(self.loop, self.spawn, lambda: self.calls.append("unbind"),
                                 lambda: self.calls.append("bind"), self.set_fatal)
        self.recovery.start({n: _fn(n) for n in names})

    def spawn(self, fn, on_ready, on_gone):
        worker = FakeWorker(fn, on_ready, on_gone)
        worker.started = self.loop.now
        self.spawned.append(worker)
        if self.fail_spawns:  # a worker that fails at once (ep0 open refused, say)
            self.fail_spawns -= 1
            self.loop.call_later(0, worker.die)
        return worker

    def set_fatal(self, message):
        self.fatal = message

    def state(self, name):
        return self.recovery.slots[name].state


def _fn(name) -> FunctionSpec:
    return FunctionSpec(name=name, type="loopback", mountpoint=Path(f"/run/t/{name}"),
                        interface=Interface(), endpoints=())


def test_a_gadget_of_kernel_functions_only_binds_at_once():
    rig = Rig(names=())
    assert rig.calls == ["bind"] and rig.recovery.all_ready and rig.spawned == []


def test_bind_only_once_every_worker_is_ready():
    rig = Rig()
    assert [rig.state("a"), rig.state("b")] == [STARTING, STARTING]
    rig.spawned[0].become_ready()
    assert rig.calls == [] and not rig.recovery.all_ready
    rig.spawned[1].become_ready()
    assert rig.calls == ["bind"] and rig.recovery.all_ready


def test_a_worker_failing_before_first_ready_is_fatal():
    rig = Rig()
    rig.spawned[0].die("OSError: [Errno 13] Permission denied")
    assert rig.fatal == "function a: worker did not get ready: OSError: [Errno 13] Permission denied"
    assert "bind" not in rig.calls


def test_dead_worker_unbinds_restarts_at_once_and_rebinds():
    rig = Rig()
    for w in rig.spawned[:]:
        w.become_ready()
    rig.loop.advance(5)
    rig.spawned[0].die()
    assert rig.calls == ["bind", "unbind"] and rig.state("a") == DEAD
    rig.loop.advance(0)  # the first restart is not delayed
    assert len(rig.spawned) == 3 and rig.state("a") == STARTING and rig.state("b") == READY
    rig.loop.advance(1.5)
    rig.spawned[2].become_ready()
    assert rig.calls == ["bind", "unbind", "bind"]
    (record,) = rig.recovery.recoveries
    assert (record["function"], record["reason"], record["seconds"]) == ("a", "worker exited", 1.5)


def test_repeated_failures_back_off_exponentially_up_to_the_cap():
    rig = Rig(names=("a",))
    rig.spawned[0].become_ready()
    rig.fail_spawns = 1000
    rig.spawned[0].die()
    rig.loop.advance(60)
    starts = [w.started for w in rig.spawned[1:]]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(starts)]
    assert starts[0] == 0.0  # the first restart at once
    assert gaps[:7] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    assert set(gaps[7:]) == {recovery.MAX_BACKOFF}
    assert rig.fatal is None and rig.calls.count("bind") == 1


def test_backoff_resets_after_a_successful_restart():
    rig = Rig(names=("a",), fail_spawns=0)
    rig.spawned[0].become_ready()
    rig.fail_spawns = 3
    rig.spawned[0].die()
    rig.loop.advance(2)  # 0 + 0.1 + 0.2 + 0.4: the fourth start succeeds
    rig.spawned[-1].become_ready()
    assert rig.recovery.slots["a"].backoff == recovery.FIRST_BACKOFF
    rig.spawned[-1].die()
    before = len(rig.spawned)
    rig.loop.advance(0)
    assert len(rig.spawned) == before + 1


def test_callbacks_of_a_replaced_worker_are_ignored():
    rig = Rig(names=("a",))
    old = rig.spawned[0]
    old.become_ready()
    old.die()
    rig.loop.advance(0)
    old.die("late duplicate")  # a stale report must not start a second replacement
    rig.loop.advance(0)
    assert len(rig.spawned) == 2 and rig.recovery.slots["a"].last_error == "worker exited"


def test_nothing_restarts_while_stopping():
    rig = Rig(names=("a",))
    rig.spawned[0].become_ready()
    rig.recovery.stopping = True
    rig.spawned[0].die()
    rig.loop.advance(30)
    assert len(rig.spawned) == 1 and rig.calls == ["bind"]


class FakeNotifier:
    watchdog_interval = 10.0  # WatchdogSec=10, as the unit has

    def __init__(self, loop):
        self.loop, self.pings = loop, []

    def send(self, **fields):
        if fields.get("watchdog"):
            self.pings.append(self.loop.now)


@pytest.fixture
def supervisor(loopback_text, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    loop = FakeLoop()
    notifier = FakeNotifier(loop)
    sup = Supervisor(parse(loopback_text, "t.toml"), notifier=notifier, loop=loop)
    return sup, loop, notifier


def test_watchdog_keeps_coming_while_a_restart_fails_for_30_s(supervisor):
    sup, loop, notifier = supervisor
    rig_spawns = []

    def spawn(fn, on_ready, on_gone):
        w = FakeWorker(fn, on_ready, on_gone)
        rig_spawns.append(w)
        if len(rig_spawns) > 1:
            loop.call_later(0, w.die)  # every restart fails
        return w

    sup.recovery = Recovery(loop, spawn, lambda: None, lambda: None, sup._fatal)
    sup.recovery.start(sup.spec.functions)
    rig_spawns[0].become_ready()
    loop.every(notifier.watchdog_interval / 2, sup._tick)
    loop.advance(1)
    rig_spawns[0].die()
    loop.advance(30)
    assert len(rig_spawns) > 8, "restarts kept being tried"
    pings = [t for t in notifier.pings if t >= 1]
    gaps = [b - a for a, b in itertools.pairwise([1.0, *pings, loop.now])]
    assert max(gaps) <= notifier.watchdog_interval / 2


def test_a_silent_worker_is_restarted_by_the_supervisor_and_the_watchdog_goes_on(supervisor):
    """No systemd needed: a ready worker whose status messages stopped is killed and restarted
    once silent for SILENT_TIMEOUT, and the supervisor keeps pinging the watchdog."""
    sup, loop, notifier = supervisor
    workers, calls = [], []
    sup.recovery = Recovery(loop, lambda fn, r, g: workers.append(FakeWorker(fn, r, g)) or
                            workers[-1], lambda: calls.append("unbind"),
                            lambda: calls.append("bind"), sup._fatal)
    sup.recovery.start(sup.spec.functions)
    workers[0].become_ready(now=0.0)
    loop.every(1.0, sup._tick)
    loop.advance(SILENT_TIMEOUT - 1.5)
    assert len(workers) == 1
    loop.advance(2)
    assert len(workers) == 2 and workers[0].failure.startswith("silent for 10 s")
    assert calls == ["bind", "unbind"]
    workers[1].become_ready(now=loop.now)
    assert calls[-1] == "bind"
    assert len(notifier.pings) == int(loop.now) + 1  # one per tick, none withheld


def test_an_exec_program_is_not_killed_for_silence(supervisor):
    """An exec program (umtprd, adbd) has no channel to send status on: quiet for minutes is
    normal for it. (umtprd was SIGKILLed as 'silent for 11 s' in the middle of a transfer.)"""
    sup, loop, _ = supervisor
    workers = []

    def spawn(fn, on_ready, on_gone):
        workers.append(FakeWorker(fn, on_ready, on_gone))
        workers[-1].heartbeats = False
        return workers[-1]

    sup.recovery = Recovery(loop, spawn, lambda: None, lambda: None, sup._fatal)
    sup.recovery.start(sup.spec.functions)
    workers[0].become_ready(now=0.0)
    loop.every(1.0, sup._tick)
    loop.advance(SILENT_TIMEOUT * 10)
    assert len(workers) == 1 and workers[0].failure is None


def test_a_worker_cannot_override_the_supervisors_fields():
    worker = FakeWorker(_fn("a"), None, None)
    worker.status = {"pid": 1, "user": "root", "state": "ready", "ready": True,
                     "counters": {"setups": 3}}
    slot = recovery.Slot(_fn("a"), worker=worker, state=STARTING)
    state = slot.status()
    assert state["pid"] == worker.pid and state["state"] == STARTING and state["ready"] is False
    assert state["user"] == "gadgetd" and state["counters"] == {"setups": 3}


def test_a_failed_bind_is_retried_on_a_timer_with_backoff(supervisor, monkeypatch):
    """EBUSY at boot: retried at 0.5, 1, 2 ... 30 s (not only on a UDC uevent), each wait
    announced to systemd as EXTEND_TIMEOUT_USEC until the first bind."""
    sup, loop, notifier = supervisor
    tries, extends = [], []
    monkeypatch.setattr(udc, "bound", lambda gadget_dir: "")
    monkeypatch.setattr(udc, "resolve", lambda name: "dummy_udc.0")
    monkeypatch.setattr(sup, "_check_budget", lambda name: None)

    def bind(gadget_dir, name):
        tries.append(loop.now)
        if len(tries) <= 9:
            raise OSError(errno.EBUSY, "busy")

    monkeypatch.setattr(udc, "bind", bind)
    notifier.send = lambda **f: extends.append(f["extend_timeout_usec"]) \
        if "extend_timeout_usec" in f else None
    sup.recovery = Recovery(loop, lambda fn, r, g: FakeWorker(fn, r, g), lambda: None,
                            lambda: None, sup._fatal)
    sup.recovery.start(sup.spec.functions)
    for slot in sup.recovery.slots.values():
        slot.state = READY
    sup._try_bind()
    loop.advance(200)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(tries)]
    assert gaps == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert extends == [int((g + 10) * 1e6) for g in gaps]
    assert sup.udc_name == "dummy_udc.0"
