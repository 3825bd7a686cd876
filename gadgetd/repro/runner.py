"""`gadgetd repro`: run the scenarios in a safe order and report one verdict.

A scenario that leaves a task stuck in the kernel ends the run: later scenarios are reported as
inconclusive (never absent), and the stuck gadget is left alone (touching its configfs tree would
block on the same locks). Exit status: 0 absent, 1 present, 125 inconclusive or repro's own
error. Any exception is repro's own error (a subprocess.TimeoutExpired from a daemon stuck in
the kernel included): it makes the scenario, or the run, inconclusive and never exits 1, which
`git bisect run` would read as "bad".
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from gadgetd.errors import GadgetdError
from gadgetd.repro import reader_scenarios as readers
from gadgetd.repro import report as rep
from gadgetd.repro import scenarios
from gadgetd.repro.host_report import HostReport, summary
from gadgetd.repro.rig import Rig, environment_problem

# Run order: the ones that can leave a task stuck in the kernel go last.
ALL = {
    "contended_open": scenarios.contended_open,
    "deactivated_set_alt": scenarios.deactivated_set_alt,
    "open_race": scenarios.open_race,
    "delayed_open": readers.delayed_open,
    "deactivated_reopen": scenarios.deactivated_reopen,
    "read_after_unbind": readers.read_after_unbind,
}

SCENARIO_ATTEMPTS = 3


def run(nonblock: bool, names: list[str], duration: float, as_json: bool,
        record: Path | None, template: Path | None = None, out=sys.stdout,
        host: str = "auto", host_report: Path | None = None) -> int:
    kernel = os.uname().release
    results: dict[str, rep.ScenarioResult] = {}
    error = environment_problem()
    stuck = False

    def write_record(obj):
        if record:
            with open(record, "a") as f:
                f.write(json.dumps(obj) + "\n")
                f.flush()
                os.fsync(f.fileno())

    rig = None
    if error is None:
        try:
            rig = Rig(template) if template else Rig()
            reported = HostReport(host_report) if host_report else None
            rig.choose_host(host, reported)
            for name in [n for n in ALL if n in names]:
                if stuck:
                    results[name] = rep.ScenarioResult(name, notes=[
                        "not run: an earlier scenario left a task stuck in the kernel"])
                else:
                    print(f"repro: {name} ...", file=sys.stderr, flush=True)
                    start, mark = time.monotonic(), reported.mark() if reported else None
                    results[name] = _run_scenario(rig, name, nonblock, duration)
                    results[name].seconds = round(time.monotonic() - start, 1)
                    if reported and not rig.host.observable:
                        results[name].host = summary(reported.since(mark))
                    # A stuck task that was let go (read_after_unbind kills its reader) is
                    # evidence, not a reason to stop.
                    stuck = bool(results[name].hang) and not results[name].hang.get("released")
                    print(f"repro: {name}: {results[name].verdict}", file=sys.stderr, flush=True)
                write_record({"scenario": name, **results[name].as_dict()})
        except Exception as exc:
            error = f"repro could not run: {_describe(exc)}"
        finally:
            if rig is not None and not stuck:
                rig.cleanup()
    report = rep.build_report(kernel, nonblock, results, error, _host_line(rig, host_report),
                              asked=[n for n in ALL if n in names])
    write_record({"report": report})
    out.write((rep.dumps(report) if as_json else rep.render_table(report)) + "\n")
    out.flush()
    return rep.EXIT_STATUS[report["verdict"]]


def _run_scenario(rig: Rig, name: str, nonblock: bool, duration: float) -> rep.ScenarioResult:
    """The scenario, tried again (up to SCENARIO_ATTEMPTS) while it ends inconclusive without a
    stuck task: a setup hiccup (a slow enumeration, a host that needs a second look) is not the
    kernel's answer. Earlier attempts stay in the notes, and gadgetd's failures in any of them
    in gadgetd_failures."""
    notes, failures = [], []
    for attempt in range(1, SCENARIO_ATTEMPTS + 1):
        try:
            result = ALL[name](rig, nonblock, duration)
        except Exception as exc:  # this scenario is inconclusive; the others count
            result = rep.ScenarioResult(name, notes=[f"repro failed: {_describe(exc)}"])
            rig.cleanup()
        result.gadgetd_failures += rig.daemon_failures
        rig.daemon_failures.clear()
        if result.hang is not None or result.verdict != rep.INCONCLUSIVE:
            break
        if attempt < SCENARIO_ATTEMPTS:
            notes.append(f"attempt {attempt} inconclusive, tried again: "
                         + ("; ".join(result.notes) or "no reason given"))
            failures += result.gadgetd_failures
            rig.cleanup()
    result.notes = notes + result.notes
    result.gadgetd_failures = failures + result.gadgetd_failures + rig.daemon_failures
    rig.daemon_failures.clear()
    return result


def _host_line(rig: Rig | None, host_report: Path | None) -> str:
    if rig is None:
        return "not chosen"
    if rig.host.observable:
        return "local: this machine's host controller (its counts are in each scenario's)"
    if host_report:
        return f"remote: gadgetd-hil drive's counts merged from {host_report}"
    return ("remote: the host's observations (STALLs, disconnects) are NOT in this report "
            "(no --host-report)")


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, GadgetdError) else f"{type(exc).__name__}: {exc}"
