"""Repro results: per-scenario outcomes, the verdict logic, rendering, consistency checks. Pure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from gadgetd.model import BLOCKING, NONBLOCK
from gadgetd.repro import SCENARIOS

PRESENT, ABSENT, INCONCLUSIVE = "present", "absent", "inconclusive"
EXIT_STATUS = {ABSENT: 0, PRESENT: 1, INCONCLUSIVE: 125}
# The verdict is about the open() regression and the ep0 read that holds ffs->mutex; the other
# two probe older races beside them.
VERDICT_SCENARIOS = ("contended_open", "delayed_open", "deactivated_reopen", "read_after_unbind")
# These can leave a task stuck in the kernel for good: the matrix gives each a boot of its own.
HANG_CAPABLE = ("deactivated_reopen", "read_after_unbind")
# A hang is proven by HANG_SAMPLES samples of the task, HANG_INTERVAL s apart, each in state D
# (uninterruptible) with an f_fs or mutex frame on its kernel stack.
HANG_SAMPLES, HANG_INTERVAL = 3, 1.0
HANG_FRAME = re.compile(r"ffs_|f_fs|functionfs|mutex")
# "absent" needs proof that the mutex was contended: this many contended opens, host requests
# the device answered and SETUPs the daemon handled (contended_open's counts).
MIN_CONTENTION = {"attempts": 200, "host_served": 100, "daemon_setups": 50}
# A blocking open that missed its deadline counts only if the deadline is this many times the
# p99 of uncontended opens measured in the same run (a slow machine is not a slow kernel).
SLOW_FACTOR = 20
BLOCKING_DEADLINE = 2.0  # seconds a contended blocking open may wait before it counts as missed


@dataclass
class ScenarioResult:
    name: str
    verdict: str = INCONCLUSIVE
    attempts: int = 0
    counts: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)  # p50/p99/max per phase
    kernel_log: list[str] = field(default_factory=list)  # WARNING / BUG / hung task lines
    notes: list[str] = field(default_factory=list)
    hang: dict | None = None  # {"pid", "state", "wchan", "stack"} when a task got stuck
    completed: bool = False  # ran to its end (not cut short by an error or a stuck task)
    gadgetd_failures: list[str] = field(default_factory=list)  # `gadgetd run` exiting non-zero
    seconds: float = 0.0  # wall time the scenario took
    host: dict | None = None  # a remote host's own counts over the scenario (host_report)
    finding: str = ""  # why it is present, in one line (where the counts do not say it)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "name"}


def percentiles(samples: list[float]) -> dict:
    """p50/p99/max in milliseconds from samples in seconds (nearest-rank)."""
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def rank(p):
        return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))]

    return {"n": len(ordered), "p50": round(rank(50) * 1e3, 3), "p99": round(rank(99) * 1e3, 3),
            "max": round(ordered[-1] * 1e3, 3)}


def hang_proven(hang: dict | None) -> bool:
    """Whether a task's samples prove it stuck in f_fs: HANG_SAMPLES of them, HANG_INTERVAL s
    apart or more, each in state D with an f_fs or mutex frame."""
    samples = (hang or {}).get("samples", [])
    times = [s.get("t", 0.0) for s in samples]
    return (len(samples) >= HANG_SAMPLES
            and all(b - a >= HANG_INTERVAL for a, b in zip(times, times[1:], strict=False))
            and all(s.get("state") == "D" and any(map(HANG_FRAME.search, s.get("stack", [])))
                    for s in samples))


def slow_baseline(contended: ScenarioResult) -> bool:
    """True when uncontended opens were too slow (or not measured) for BLOCKING_DEADLINE to
    tell an open that waited."""
    p99 = contended.latency_ms.get("baseline", {}).get("p99")
    return p99 is None or p99 * SLOW_FACTOR > BLOCKING_DEADLINE * 1e3


def contention_shortfall(contended: ScenarioResult) -> str | None:
    """What contended_open lacked to show ffs->mutex contended (None: enough of everything).
    Host requests are counted where the host is this machine or reports its counts
    (host_served recorded)."""
    have = {"attempts": contended.attempts, **contended.counts}
    short = [f"{have.get(key, 0)} {key.replace('_', ' ')} (needs {need})"
             for key, need in MIN_CONTENTION.items()
             if (key in have or key != "host_served") and have.get(key, 0) < need]
    return ", ".join(short) or None


def overall_verdict(results: dict[str, ScenarioResult], nonblock: bool,
                    asked: tuple[str, ...] | list[str] = SCENARIOS) -> tuple[str, str]:
    """(verdict, reason) over the verdict scenarios that were asked for (or, where none was, the
    scenarios asked for). Present: an O_NDELAY open saw EAGAIN in contended_open, a blocking open
    there waited past its deadline (against a fast enough baseline), deactivated_reopen hung
    (proven), or delayed_open or read_after_unbind is present. Absent: each ran fully, with
    proof of contention where it needs it, and is absent. Otherwise inconclusive."""
    judged = [n for n in VERDICT_SCENARIOS if n in asked] or list(asked)
    contended = results.get("contended_open") if "contended_open" in judged else None
    if contended and contended.counts.get("eagain_no_retry", 0) > 0:
        return PRESENT, (f"O_NDELAY open of ep0/epN failed with EAGAIN "
                         f"{contended.counts['eagain_no_retry']} times while ffs->mutex was busy")
    missed = contended.counts.get("deadline_missed", 0) if contended else 0
    if missed and not slow_baseline(contended):
        return PRESENT, (f"{missed} blocking opens waited past their {BLOCKING_DEADLINE:g} s deadline "
                         f"(uncontended p99 {contended.latency_ms['baseline']['p99']} ms)")
    for name in judged:
        r = results.get(name)
        if r is None or name == "contended_open":
            continue
        if name == "deactivated_reopen" and hang_proven(r.hang):
            return PRESENT, (f"reopening a deactivated, bound instance hung "
                             f"({len(r.hang['samples'])} samples in state D inside f_fs)")
        if r.verdict == PRESENT and (r.hang is None or hang_proven(r.hang)):
            return PRESENT, f"{name}: " + (r.finding or "; ".join(r.notes) or "present")
    if missed:
        return INCONCLUSIVE, (f"{missed} blocking opens missed their deadline, but uncontended "
                              "opens were too slow to tell")
    missing = [n for n in judged if not (results.get(n) and results[n].completed
                                         and results[n].attempts > 0)]
    if missing:
        return INCONCLUSIVE, f"not run to completion: {', '.join(missing)}"
    if contended and (shortfall := contention_shortfall(contended)):
        return INCONCLUSIVE, f"too little contention to call it absent: {shortfall}"
    unsure = [n for n in judged if n != "contended_open" and results[n].verdict != ABSENT]
    if unsure:
        return INCONCLUSIVE, f"not shown absent: {', '.join(unsure)}"
    mode = "O_NDELAY" if nonblock else "blocking"
    return ABSENT, ", ".join(f"{n} absent" for n in judged) + (
        f" ({contended.attempts} contended {mode} opens)" if contended else "")


def build_report(kernel: str, nonblock: bool, results: dict[str, ScenarioResult],
                 error: str | None = None, host: str = "not chosen",
                 asked: tuple[str, ...] | list[str] = SCENARIOS) -> dict:
    verdict, reason = overall_verdict(results, nonblock, asked)
    if error:
        verdict, reason = INCONCLUSIVE, error
    return {
        "kernel": kernel,
        "mode": NONBLOCK if nonblock else BLOCKING,
        "verdict": verdict,
        "reason": reason,
        "host": host,
        "asked": list(asked),
        "scenarios": {name: r.as_dict() for name, r in results.items()},
    }


def boots(names: list[str] | tuple[str, ...]) -> list[list[str]]:
    """The scenarios in groups, one boot each: those that cannot leave a task stuck together,
    then each hang-capable one alone, so a hang in one never hides another."""
    safe = [n for n in names if n not in HANG_CAPABLE]
    return ([safe] if safe else []) + [[n] for n in names if n in HANG_CAPABLE]


def merge(reports: list[dict]) -> dict:
    """One report from those of several boots on one kernel, each of its own scenarios: the
    verdict is worked out again over all of them, as if one run had asked for all. A boot that
    could not run makes it inconclusive, unless another boot proved the bug present."""
    results = {name: ScenarioResult(name, **s) for r in reports
               for name, s in r.get("scenarios", {}).items()}
    asked = [n for n in SCENARIOS if any(n in r.get("asked", SCENARIOS) for r in reports)]
    nonblock = reports[0]["mode"] == NONBLOCK
    errors = [r["reason"] for r in reports if r["verdict"] == INCONCLUSIVE
              and not set(r.get("asked", SCENARIOS)) <= set(r.get("scenarios", {}))]
    merged = build_report(reports[0]["kernel"], nonblock, results, None,
                          reports[0].get("host", "not chosen"), asked)
    if errors and merged["verdict"] != PRESENT:
        merged["verdict"], merged["reason"] = INCONCLUSIVE, "; ".join(errors)
    merged["boots"] = len(reports)
    return merged


def render_table(report: dict) -> str:
    lines = [f"kernel {report['kernel']}, {report['mode']} opens",
             f"host {report.get('host', 'not chosen')}", "",
             f"{'scenario':<22} {'verdict':<13} {'attempts':>8}  {'time':>7}  details"]
    for name, s in report["scenarios"].items():
        details = ", ".join(f"{k}={v}" for k, v in s["counts"].items())
        for phase, lat in s["latency_ms"].items():
            if lat.get("n"):
                details += f"; {phase} p50/p99/max {lat['p50']}/{lat['p99']}/{lat['max']} ms"
        if s["hang"]:
            details += f"; HANG: task {s['hang'].get('pid')} state {s['hang'].get('state')}"
        lines.append(f"{name:<22} {s['verdict']:<13} {s['attempts']:>8}  {s['seconds']:>5.1f} s  "
                     f"{details}")
        if s.get("host"):
            h = s["host"]
            lines.append(f"{'':<22} host saw: {h['requests']} requests, {h['served']} answered, "
                         f"{h['stalls']} STALLs, {h['disconnects']} disconnects")
        if s.get("finding"):
            lines.append(f"{'':<22} finding: {s['finding']}")
        for note in s["notes"]:
            lines.append(f"{'':<22} note: {note}")
        for failure in s.get("gadgetd_failures", []):
            lines.append(f"{'':<22} GADGETD FAILED: {failure}")
        for line in s["kernel_log"][:6]:
            lines.append(f"{'':<22} kernel: {line}")
        if s["hang"]:
            for frame in s["hang"].get("stack", [])[:12]:
                lines.append(f"{'':<22} stack: {frame}")
    lines += ["", f"verdict: {report['verdict']} ({report['reason']})"]
    return "\n".join(lines)


def problems(report: dict, exit_status: int, expect: str | None = None,
             expect_scenarios: dict[str, str] | None = None) -> list[str]:
    """Why a report is not complete, consistent and as expected (`make repro-test`, the matrix):
    also gadgetd's own failures in it, its retry policy missing a deadline or `gadgetd run`
    exiting non-zero, whatever the verdict."""
    found = []
    if report.get("verdict") not in EXIT_STATUS:
        return [f"unknown verdict {report.get('verdict')!r}"]
    if expect is not None and report["verdict"] != expect:
        found.append(f"verdict is {report['verdict']}, expected {expect}")
    for name, wanted in (expect_scenarios or {}).items():
        got = report.get("scenarios", {}).get(name, {}).get("verdict", "not run")
        if got != wanted:
            found.append(f"scenario {name} is {got}, expected {wanted}")
    if EXIT_STATUS[report["verdict"]] != exit_status:
        found.append(f"exit status {exit_status} does not match verdict {report['verdict']}")
    if not report.get("kernel"):
        found.append("no kernel release")
    for name in report.get("asked", SCENARIOS):
        s = report.get("scenarios", {}).get(name)
        if s is None:
            found.append(f"scenario {name} missing")
        elif s.get("attempts", 0) <= 0:
            found.append(f"scenario {name} made no attempts")
        elif s.get("verdict") not in EXIT_STATUS:
            found.append(f"scenario {name} has verdict {s.get('verdict')!r}")
        if s and s.get("hang") and not hang_proven(s["hang"]):
            found.append(f"scenario {name}: a hang without proof (needs {HANG_SAMPLES} samples "
                         f"{HANG_INTERVAL:g} s apart in state D inside f_fs)")
        for key, value in (s or {}).get("counts", {}).items():
            if key.endswith("_policy_deadline_failures") and value:
                found.append(f"scenario {name}: gadgetd's retry policy missed its deadline "
                             f"{value} times")
        found += [f"scenario {name}: {f}" for f in (s or {}).get("gadgetd_failures", [])]
    if report["verdict"] == INCONCLUSIVE:
        found.append(f"verdict is inconclusive: {report.get('reason')}")
    return found


def dumps(report: dict) -> str:
    return json.dumps(report, indent=1, sort_keys=False)
