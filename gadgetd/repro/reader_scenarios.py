"""The two scenarios about a blocking read(ep0), played by repro's own function (ep0_reader):

- delayed_open, the Pixel's symptom: where read(ep0) holds ffs->mutex while it waits for events
  (kernels without "usb: gadget: f_fs: Prevent deadlock during ep0 read loop") and open() takes
  that mutex (e5bf5ee26663), a blocking open of ep0 waits as long as the reader does: no error,
  just a late open().
- read_after_unbind, that fix's deadlock (CVE-2026-89732): a program's event loop reads ep0
  again right after FUNCTIONFS_UNBIND; where the read holds ffs->mutex over its wait, the
  unbind's functionfs_unbind() waits for the mutex and the reader for an event that never comes.

gadgetd's own worker never does either: it reads ep0 only when poll() said an event is queued
(gadgetd.function), so its reads never wait inside f_fs; and it opens ep0 once per worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gadgetd import udc, wire
from gadgetd.errors import SetupError
from gadgetd.model import BLOCKING
from gadgetd.repro.kernel_log import KernelLog
from gadgetd.repro.report import (
    ABSENT,
    INCONCLUSIVE,
    PRESENT,
    ScenarioResult,
    hang_proven,
    percentiles,
)
from gadgetd.repro.rig import STARTUP_TIMEOUT, Rig, sample_hang
from gadgetd.repro.scenarios import BASELINE_SECONDS, OPEN_DEADLINE, finish
from gadgetd.syscalls import task_state

HOLD_SECONDS = 1.0  # how long the reader holds on in each delayed_open round
HOLD_ROUNDS = 3
DELAY_FACTOR, DELAY_MIN = 10, 0.1  # present: opens wait 10x the baseline and 100 ms or more
READ_FRAME = "ffs_ep0_read"
REREADS_NEEDED = 20  # read_after_unbind's "absent": re-reads inside the unbind's window
UNBIND_CYCLES = 80
SETTLE_SECONDS = 5.0  # a cycle waits this long for the host to configure the device


class OwnFunction:
    """The rig's function instance served by an ep0_reader instead of gadgetd: gadgetd serves it
    once (configfs, mount), then is killed with the gadget unbound (the instance resets); the
    reader writes descriptors and strings, and the gadget is bound again."""

    def __init__(self, rig: Rig):
        self.rig = rig
        self.udc = ""
        self.reader: subprocess.Popen | None = None
        self._tmp = tempfile.TemporaryDirectory()

    def __enter__(self) -> OwnFunction:
        rig = self.rig
        rig.serve(no_disconnect=False, daemon_nonblock=False, wait_host=False)
        self.udc = rig.strategy.bound_udc()
        rig.unbind()
        rig.deactivate()
        blobs = [Path(self._tmp.name) / "descriptors", Path(self._tmp.name) / "strings"]
        blobs[0].write_bytes(wire.descriptors_blob(rig.fn))
        blobs[1].write_bytes(wire.strings_blob(rig.fn))
        self.reader = subprocess.Popen(
            [sys.executable, "-m", "gadgetd.repro.ep0_reader", str(rig.ep0), *map(str, blobs)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            if "active" not in self.answer(STARTUP_TIMEOUT):
                raise SetupError("repro's ep0 reader did not activate the function")
            self.bind()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.reader.poll() is None:
            self.reader.stdin.close()  # the reader closes ep0: the instance resets
            try:
                self.reader.wait(OPEN_DEADLINE)
            except subprocess.TimeoutExpired:
                self.reader.kill()
                self.reader.wait(OPEN_DEADLINE)
        self._tmp.cleanup()

    @property
    def pid(self) -> int:
        return self.reader.pid

    def answer(self, timeout: float) -> dict:
        line = self.rig.read_line(self.reader, timeout)
        if line is None:
            raise SetupError(f"repro's ep0 reader said nothing for {timeout:g} s "
                             f"(state {task_state(self.pid).get('state')})")
        return json.loads(line)

    def send(self, command: str) -> None:
        self.reader.stdin.write(command + "\n")
        self.reader.stdin.flush()

    def bind(self) -> None:
        """Bind the gadget and wait until the host configured it (where one does), so no event
        of the enumeration comes later."""
        udc.bind(self.rig.gadget_dir, self.udc)
        end = time.monotonic() + SETTLE_SECONDS
        while udc.state(self.udc) != "configured" and time.monotonic() < end:
            time.sleep(0.05)

    def lines_ready(self, wait: float = 0.2) -> list[dict]:
        """The reader's lines that came out within `wait` seconds of each other."""
        lines = []
        while (line := self.rig.read_line(self.reader, wait)) is not None:
            lines.append(json.loads(line))
        return lines

    def release(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)

    def in_read(self) -> dict:
        """The reader's task state, with "proven": its stack is inside ffs_ep0_read."""
        state = task_state(self.pid)
        return {**state, "proven": any(READ_FRAME in f for f in state.get("stack", []))}

    def wait_in_read(self, timeout: float = 5.0) -> dict:
        end = time.monotonic() + timeout
        while not (state := self.in_read())["proven"] and time.monotonic() < end:
            time.sleep(0.02)
        return state


def _delayed_round(rig: Rig, fn: OwnFunction) -> dict:
    """One blocking open of ep0 while the reader waits in read(ep0) for HOLD_SECONDS."""
    fn.send("drain")
    fn.answer(OPEN_DEADLINE)
    fn.send("hold")
    fn.answer(OPEN_DEADLINE)  # {"holding"}
    before = fn.wait_in_read()
    proc = rig.run_opener("once", BLOCKING, rig.ep0)
    line = rig.read_line(proc, STARTUP_TIMEOUT)
    if line is None or not json.loads(line).get("opening"):
        proc.kill()
        raise SetupError("the delayed_open opener did not start")
    time.sleep(HOLD_SECONDS)
    during = fn.in_read()
    fn.release()
    held = fn.answer(OPEN_DEADLINE)
    out, hang = _result_or_hang(rig, proc, OPEN_DEADLINE)
    return {"open": out, "hang": hang, "holder_proven": before["proven"] and during["proven"]
            and "released" in held, "holder_stack": during.get("stack", [])[:6]}


def delayed_open(rig: Rig, nonblock: bool, duration: float) -> ScenarioResult:
    """Blocking opens of ep0 while another fd waits in a blocking read(ep0), against uncontended
    opens measured in the same run. The holder's stack proves it was inside f_fs."""
    result, log = ScenarioResult("delayed_open"), KernelLog()
    with rig.host.quiet() as quiet, OwnFunction(rig) as fn:
        if not quiet:
            result.notes.append("the host could not be asked to stay quiet: its requests may "
                                "end the reader's waits early")
        proc = rig.run_opener("loop", BLOCKING, BASELINE_SECONDS, rig.ep0)
        out, hang = rig.wait_opener(proc, BASELINE_SECONDS + OPEN_DEADLINE)
        if hang:
            result.hang = hang
            result.notes.append("an uncontended baseline opener stopped returning")
            return finish(result, log, rig)
        baseline = out["latencies"]
        waits, spoiled = [], 0
        for _ in range(HOLD_ROUNDS):
            r = _delayed_round(rig, fn)
            if r["hang"]:
                result.hang = r["hang"]
                result.notes.append("an opener stopped returning after the reader let go")
                return finish(result, log, rig)
            result.attempts += 1
            if not r["holder_proven"] or r["open"]["result"] not in ("ok", "deadline"):
                spoiled += 1  # an event ended the wait early, or the open failed
                result.counts[f"open:{r['open']['result']}"] = \
                    result.counts.get(f"open:{r['open']['result']}", 0) + 1
                continue
            waits.append(r["open"]["seconds"] if r["open"]["result"] == "ok" else OPEN_DEADLINE)
            stack = " <- ".join(r["holder_stack"])
            if stack and not any(n.startswith("reader's stack") for n in result.notes):
                result.notes.append(f"reader's stack while an open waited: {stack}")
    result.latency_ms = {"baseline": percentiles(baseline), "while_reading": percentiles(waits)}
    threshold = max(DELAY_FACTOR * max(baseline, default=0), DELAY_MIN)
    delayed = sum(w >= threshold for w in waits)
    result.counts.update({"rounds_proven": len(waits), "rounds_spoiled": spoiled,
                          "opens_delayed": delayed})
    result.notes.append(f"threshold {threshold * 1e3:.0f} ms: {DELAY_FACTOR}x the slowest "
                        f"uncontended open and at least {DELAY_MIN * 1e3:.0f} ms; the reader "
                        f"waited {HOLD_SECONDS:g} s each round")
    result.completed = len(waits) >= (HOLD_ROUNDS + 1) // 2
    result.verdict = (INCONCLUSIVE if not result.completed or not baseline
                      else PRESENT if delayed > len(waits) // 2
                      else ABSENT if delayed == 0 else INCONCLUSIVE)
    if result.verdict == PRESENT:
        result.finding = (f"{delayed} of {len(waits)} blocking opens of ep0 waited for a "
                          f"blocking read(ep0) (p50 {result.latency_ms['while_reading']['p50']} "
                          f"ms, uncontended max {result.latency_ms['baseline']['max']} ms)")
    rig.cleanup()
    return finish(result, log, rig)


class Unbinder:
    """A child that unbinds the gadget on request ({"start", "end"} in ns around the configfs
    write), so an unbind stuck in the kernel takes only the child."""

    def __init__(self, rig: Rig, fn: OwnFunction):
        self.rig, self.fn = rig, fn
        self.proc = subprocess.Popen([sys.executable, "-m", "gadgetd.repro.openers", "unbinder",
                                      "-", str(rig.gadget_dir)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if rig.read_line(self.proc, STARTUP_TIMEOUT) is None:
            raise SetupError("repro's unbinder did not start")

    def unbind(self) -> tuple[dict | None, dict | None]:
        """(the write's start and end, None), or (None, evidence) when it is stuck in the kernel.
        Then the reader is killed, which ends its read and may let the unbind finish
        (evidence["released"])."""
        self.proc.stdin.write("unbind\n")
        self.proc.stdin.flush()
        line = self.rig.read_line(self.proc, OPEN_DEADLINE)
        if line is not None:
            return json.loads(line), None
        evidence = sample_hang(self.proc.pid)
        if not hang_proven(evidence):
            raise SetupError(f"the unbind did not return in {OPEN_DEADLINE:g} s "
                             f"(state {evidence.get('state')}, {evidence.get('wchan', '?')})")
        evidence["reader"] = self.fn.in_read()
        self.fn.reader.kill()
        if self.rig.read_line(self.proc, OPEN_DEADLINE) is not None:
            evidence["released"] = "the unbind returned once the reader was killed"
        return None, evidence

    def close(self) -> None:
        if self.proc.poll() is None and task_state(self.proc.pid).get("state") != "D":
            self.proc.kill()
            self.proc.wait()


def _result_or_hang(rig: Rig, proc: subprocess.Popen, timeout: float):
    """An opener's result line, or (None, evidence) when it is proven stuck in the kernel."""
    line = rig.read_line(proc, timeout)
    if line is not None:
        proc.wait()
        return json.loads(line), None
    evidence = sample_hang(proc.pid)
    if hang_proven(evidence):
        return None, evidence
    proc.kill()
    raise SetupError(f"an opener did not return in {timeout:g} s (state {evidence.get('state')})")


def rereads_in_window(windows: list[dict], reads: list[dict]) -> tuple[int, list[int]]:
    """How many reads of ep0 were issued after a read returned FUNCTIONFS_UNBIND and before that
    unbind's configfs write returned; and, per unbind, how late the re-read came (ns, negative
    when inside). `reads` are the reader's lines in order; `windows` the unbinds' start/end."""
    count, gaps = 0, []
    for window in windows:
        i = next((k for k, r in enumerate(reads) if r.get("returned", 0) >= window["start"]
                  and "UNBIND" in r.get("events", [])), None)
        if i is None or i + 1 >= len(reads):
            continue
        issued = reads[i + 1]["issued"]
        gaps.append(issued - window["end"])
        count += issued < window["end"]
    return count, gaps


def read_after_unbind(rig: Rig, nonblock: bool, duration: float) -> ScenarioResult:
    """Unbind and bind the gadget again and again while repro's reader loops on blocking reads
    of ep0; each unbind from a child, with a deadline and the stack of a stuck one."""
    result, log = ScenarioResult("read_after_unbind"), KernelLog()
    windows: list[dict] = []
    reads: list[dict] = []
    with rig.host.quiet(), OwnFunction(rig) as fn:
        unbinder = Unbinder(rig, fn)
        try:
            fn.send("loop")
            for _ in range(UNBIND_CYCLES):
                window, hang = unbinder.unbind()
                result.attempts += 1
                if hang:
                    result.hang = hang
                    result.verdict, result.completed = PRESENT, True
                    result.finding = ("a read(ep0) issued right after FUNCTIONFS_UNBIND held "
                                      "ffs->mutex; the unbind waiting for it never returned")
                    reader = " <- ".join(hang["reader"].get("stack", [])[:3])
                    result.notes.append(f"the reader meanwhile (state "
                                        f"{hang['reader'].get('state')}): {reader}")
                    result.notes.append(hang.get("released", "the unbind stayed stuck after "
                                                 "the reader was killed"))
                    return finish(result, log, rig)
                windows.append(window)
                fn.bind()  # the re-read after UNBIND returns with the BIND event
                reads += fn.lines_ready()
                if rereads_in_window(windows, reads)[0] >= REREADS_NEEDED:
                    break
        finally:
            unbinder.close()
        fn.release()
        with contextlib.suppress(SetupError):
            while True:
                reads.append(line := fn.answer(OPEN_DEADLINE))
                if "loop_end" in line:
                    break
    inside, gaps = rereads_in_window(windows, reads)
    result.counts = {"unbinds": len(windows), "rereads_in_window": inside,
                     "unbind_events_read": sum("UNBIND" in r.get("events", []) for r in reads)}
    result.latency_ms = {"reread_after_unbind_end": percentiles([g / 1e9 for g in gaps])}
    result.notes.append(f"absent needs {REREADS_NEEDED} re-reads of ep0 issued between an UNBIND "
                        "event and the unbind's return (latencies below 0: inside)")
    result.completed = bool(windows)
    result.verdict = ABSENT if inside >= REREADS_NEEDED else INCONCLUSIVE
    rig.cleanup()
    return finish(result, log, rig)
