"""Four repro scenarios (the two about a blocking read(ep0) are in reader_scenarios). Each
returns a ScenarioResult with counts, latencies, kernel log lines and its own verdict; a task
stuck in the kernel is reported with its stack, never waited on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from gadgetd import wire
from gadgetd.errors import SetupError
from gadgetd.model import BLOCKING, NONBLOCK, NONBLOCK_ONCE
from gadgetd.repro.kernel_log import KernelLog
from gadgetd.repro.report import (
    ABSENT,
    INCONCLUSIVE,
    PRESENT,
    ScenarioResult,
    contention_shortfall,
    hang_proven,
    percentiles,
    slow_baseline,
)
from gadgetd.repro.rig import STARTUP_TIMEOUT, Rig, sample_hang

OPEN_DEADLINE = 10.0  # seconds before a single open counts as hung
BASELINE_SECONDS = 1.0  # uncontended blocking opens measured before each contended phase
RACERS, RACE_ROUNDS = 6, 2


def finish(result: ScenarioResult, log: KernelLog, rig: Rig) -> ScenarioResult:
    result.kernel_log = log.interesting()
    result.gadgetd_failures += rig.daemon_failures  # reported, never hidden
    rig.daemon_failures.clear()
    return result


def _opener_hung(result: ScenarioResult, log: KernelLog, rig: Rig, hang: dict,
                 which: str) -> ScenarioResult:
    result.hang = hang
    result.notes.append(f"the {which} opener stopped returning")
    return finish(result, log, rig)


def contended_open(rig: Rig, nonblock: bool, duration: float) -> ScenarioResult:
    """A second opener opens ep0 and epN over and over while gadgetd serves and the host keeps
    ep0 busy; run once under a blocking-reading daemon and once under an O_NDELAY one."""
    result, log = ScenarioResult("contended_open"), KernelLog()
    phases = (NONBLOCK_ONCE, NONBLOCK) if nonblock else (BLOCKING,)
    slot = duration / (2 * len(phases))
    counts: Counter = Counter()
    latencies: dict[str, list[float]] = {p: [] for p in phases} | {"baseline": []}
    for daemon_nonblock in (False, True):
        rig.serve(no_disconnect=False, daemon_nonblock=daemon_nonblock)
        if not nonblock:  # what a blocking open costs here with no host traffic
            proc = rig.run_opener("loop", BLOCKING, BASELINE_SECONDS, rig.ep0, *rig.ep_files)
            out, hang = rig.wait_opener(proc, BASELINE_SECONDS + OPEN_DEADLINE)
            if hang:  # uncontended, and still stuck in f_fs: as much a verdict as a contended hang
                return _opener_hung(result, log, rig, hang, "uncontended baseline")
            latencies["baseline"] += out["latencies"]
        storm = rig.host.storm()
        try:
            for phase in phases:
                proc = rig.run_opener("loop", phase, slot, rig.ep0, *rig.ep_files)
                out, hang = rig.wait_opener(proc, slot + OPEN_DEADLINE)
                if hang:
                    return _opener_hung(result, log, rig, hang, phase)
                for key, value in out["counts"].items():
                    counts[f"{phase}_{key}"] += value
                latencies[phase] += out["latencies"]
                if out["retries"]:
                    counts["policy_retries"] += out["retries"]["retries_total"]
        finally:
            if storm is not None:
                host = storm.stop()
                counts["host_requests"] += sum(host.values())
                counts["host_served"] += sum(v for k, v in host.items() if k.endswith(":ok"))
                counts["host_stalls"] += sum(v for k, v in host.items() if k.endswith("EPIPE"))
        time.sleep(1.2)  # the daemon's status, written once a second, catches up
        counts["daemon_setups"] += rig.daemon_setups()
        rig.stop()
    result.attempts = sum(counts[f"{p}_attempts"] for p in phases)
    result.latency_ms = {p: percentiles(v) for p, v in latencies.items() if v}
    if nonblock:
        counts["eagain_no_retry"] = counts[f"{NONBLOCK_ONCE}_EAGAIN"]
        failures = counts[f"{NONBLOCK}_policy_deadline_failures"]
        result.notes.append(
            f"gadgetd's retry policy: {counts[NONBLOCK + '_ok']} of {counts[NONBLOCK + '_attempts']} opens "
            f"succeeded after {counts['policy_retries']} retries"
            + (f"; POLICY FAILURE: {failures} opens missed its deadline" if failures else ""))
        present = counts["eagain_no_retry"] > 0
    else:
        counts["deadline_missed"] = counts["blocking_deadline_missed"]
        present = counts["deadline_missed"] > 0 and not slow_baseline(result)
    result.counts = {k: v for k, v in counts.items() if v}
    if rig.host.counted:
        result.counts.setdefault("host_served", 0)  # counted, so held to its minimum
    result.completed = result.attempts > 0
    result.verdict = (PRESENT if present else INCONCLUSIVE if not result.completed
                      or contention_shortfall(result) else ABSENT)
    return finish(result, log, rig)


def _wait_unbound(rig: Rig, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while rig.bound() and time.monotonic() < end:
        time.sleep(0.05)
    return not rig.bound()


def _deactivated_and_bound(rig: Rig, result: ScenarioResult) -> bool:
    """A no_disconnect=1 instance whose daemon died: DEACTIVATED, the gadget still bound."""
    rig.serve(no_disconnect=True, daemon_nonblock=False)
    rig.deactivate()
    if not rig.bound():
        result.notes.append("the gadget did not stay bound after the daemon died")
        return False
    return True


def deactivated_set_alt(rig: Rig, nonblock: bool, duration: float) -> ScenarioResult:
    """Host SET_INTERFACE/SET_CONFIGURATION to a DEACTIVATED instance (documented: STALL), then a
    device-side open right after (EBUSY while the scheduled reset runs, or success)."""
    result, log = ScenarioResult("deactivated_set_alt"), KernelLog()
    if not _deactivated_and_bound(rig, result):
        return finish(result, log, rig)
    anomalies = []
    for request, send in (("set_interface", lambda: rig.host.set_interface(0)),
                          ("set_configuration", lambda: rig.host.set_configuration(1))):
        outcome = send()
        result.counts[f"{request}:{outcome}"] = 1
        result.attempts += 1
        # Documented: STALL while DEACTIVATED; once the reset it schedules has unbound the
        # gadget, the host sees the device go (ENODEV, EIO, ... depending on the moment).
        # Accepting the request, or never answering it, is what would be wrong.
        if rig.host.observable and outcome in ("ok", "timeout"):
            anomalies.append(f"{request} answered {outcome}, not STALL")
    # The host's request schedules the instance's reset, which unbinds the gadget.
    if not _wait_unbound(rig, 5 if rig.host.observable else 30):
        result.notes.append("the instance never left DEACTIVATED (no host request reached it); "
                            "an open now would be the deactivated_reopen hazard: not opened")
        return finish(result, log, rig)
    result.counts["host_saw_disconnect"] = int(rig.host.wait_gone(5))
    proc = rig.run_opener("once", NONBLOCK_ONCE if nonblock else BLOCKING, rig.ep0)
    out, hang = rig.wait_opener(proc, OPEN_DEADLINE)
    result.attempts += 1
    if hang:
        result.hang = hang
        result.verdict = PRESENT
        return finish(result, log, rig)
    result.counts[f"open:{out['result']}"] = 1
    if out["result"] not in ("ok", "EBUSY"):
        anomalies.append(f"open right after returned {out['result']}")
    result = finish(result, log, rig)
    if any("WARNING" in line or "BUG" in line for line in result.kernel_log):
        anomalies.append("the kernel logged a WARNING/BUG")
    result.notes += anomalies
    result.completed = True
    result.verdict = PRESENT if anomalies else ABSENT
    rig.cleanup()
    return result


def _race_round(rig: Rig, mode: str, blobs: tuple[Path, Path]) -> dict:
    """Release RACERS openers together on a DEACTIVATED, unbound instance."""
    release_r, release_w = os.pipe()
    racers = [subprocess.Popen([sys.executable, "-m", "gadgetd.repro.openers", "race", mode,
                                str(rig.ep0), str(release_r)], pass_fds=(release_r,),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
              for _ in range(RACERS)]
    os.close(release_r)
    try:
        for r in racers:  # "ready": polling the release pipe
            if rig.read_line(r, STARTUP_TIMEOUT) is None:
                raise SetupError("a racer did not start")
        os.close(release_w)  # everyone wakes up at once
        release_w = None
        results = []
        for r in racers:
            line = rig.read_line(r, OPEN_DEADLINE)
            if line is None:
                evidence = sample_hang(r.pid)
                if hang_proven(evidence):
                    return {"hang": evidence}
                raise SetupError(f"a racer did not report (state {evidence.get('state')})")
            results.append(json.loads(line))
        out = {"results": results, "vanished": False, "wrote": None}
        winners = [i for i, res in enumerate(results) if res["result"] == "ok"]
        if winners:
            first = racers[winners[0]]
            for blob in blobs:  # descriptors, then strings: ep files appear
                first.stdin.write(f"write {blob}\n")
                first.stdin.flush()
                line = rig.read_line(first, OPEN_DEADLINE)
                out["wrote"] = json.loads(line)["write"] if line else "no answer"
            present_now = all(p.exists() for p in rig.ep_files)
            time.sleep(0.2)
            out["vanished"] = present_now and not all(p.exists() for p in rig.ep_files)
            out["ep_files_appeared"] = present_now
        return out
    finally:
        if release_w is not None:
            os.close(release_w)
        for r in racers:
            if r.poll() is None and r.stdin:
                try:
                    r.stdin.write("close\n")
                    r.stdin.close()
                except BrokenPipeError:
                    pass
        for r in racers:
            try:
                r.wait(OPEN_DEADLINE)
            except subprocess.TimeoutExpired:
                r.kill()


def open_race(rig: Rig, nonblock: bool, duration: float) -> ScenarioResult:
    """N openers released together on a DEACTIVATED instance (unbound, so the reset their open
    runs cannot deadlock against unbind): who wins, who gets EBUSY, ordering, vanishing files."""
    result, log = ScenarioResult("open_race"), KernelLog()
    mode = NONBLOCK_ONCE if nonblock else BLOCKING
    counts: Counter = Counter()
    anomalies = []
    with tempfile.TemporaryDirectory() as tmp:
        blobs = (Path(tmp) / "descriptors", Path(tmp) / "strings")
        blobs[0].write_bytes(wire.descriptors_blob(rig.fn))
        blobs[1].write_bytes(wire.strings_blob(rig.fn))
        for round_no in range(RACE_ROUNDS):
            rig.serve(no_disconnect=True, daemon_nonblock=False)
            rig.unbind()
            rig.deactivate()
            out = _race_round(rig, mode, blobs)
            if "hang" in out:
                result.hang = out["hang"]
                result.verdict = PRESENT
                return finish(result, log, rig)
            results = out["results"]
            result.attempts += len(results)
            for res in results:
                counts[f"open:{res['result']}"] += 1
            successes = [r for r in results if r["result"] == "ok"]
            first_ok_end = min((r["end_ns"] for r in successes), default=None)
            late_busy = [r for r in results if r["result"] == "EBUSY" and first_ok_end is not None
                         and r["start_ns"] > first_ok_end]
            if late_busy:
                anomalies.append(f"round {round_no}: {len(late_busy)} EBUSY after an open had "
                                 "already succeeded")
            if not successes:
                anomalies.append(f"round {round_no}: no opener succeeded")
            elif out["wrote"] != "ok" or not out.get("ep_files_appeared"):
                anomalies.append(f"round {round_no}: winner could not activate the instance "
                                 f"({out['wrote']})")
            if out["vanished"]:
                anomalies.append(f"round {round_no}: ep files vanished while ep0 was open")
            rig.cleanup()
    result = finish(result, log, rig)
    if any("WARNING" in line or "BUG" in line for line in result.kernel_log):
        anomalies.append("the kernel logged a WARNING/BUG")
    result.counts = dict(counts)
    result.notes += anomalies
    result.completed = True
    result.verdict = PRESENT if anomalies else ABSENT
    return result


def deactivated_reopen(rig: Rig, nonblock: bool, duration: float) -> ScenarioResult:
    """Reopen ep0 of a DEACTIVATED instance whose gadget is still bound. Where open() takes
    ffs->mutex, the reset it runs unbinds the gadget and the unbind wants the same mutex."""
    result, log = ScenarioResult("deactivated_reopen"), KernelLog()
    with rig.host.quiet() as quiet:  # a host request would run the reset before the reopen
        if not quiet:
            result.notes.append("the host could not be asked to stay quiet: a request of its "
                                "to the DEACTIVATED instance may run the reset before the reopen")
        if not _deactivated_and_bound(rig, result):
            return finish(result, log, rig)
        proc = rig.run_opener("once", NONBLOCK_ONCE if nonblock else BLOCKING, rig.ep0)
        out, hang = rig.wait_opener(proc, OPEN_DEADLINE)
    result.attempts = 1
    if hang:
        result.hang = hang
        result.verdict = PRESENT
        result.completed = True
        result.notes.append(f"open() did not return within {OPEN_DEADLINE:g} s")
        return finish(result, log, rig)
    result.counts = {f"open:{out['result']}": 1,
                     "udc_unbound_after": int(_wait_unbound(rig, 5)),
                     "host_saw_disconnect": int(rig.host.wait_gone(5))}
    result.latency_ms = {"open": percentiles([out["seconds"]])}
    result.completed = True
    result.verdict = ABSENT
    rig.cleanup()
    return finish(result, log, rig)
