"""Repro results: per-scenario outcomes, the verdict logic, rendering, consistency checks. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gadgetd.model import BLOCKING, NONBLOCK

PRESENT, ABSENT, INCONCLUSIVE = "present", "absent", "inconclusive"
EXIT_STATUS = {ABSENT: 0, PRESENT: 1, INCONCLUSIVE: 125}
SCENARIOS = ("contended_open", "deactivated_set_alt", "open_race", "deactivated_reopen")
# The verdict is about the open() regression; the other two probe older races beside it.
VERDICT_SCENARIOS = ("contended_open", "deactivated_reopen")


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


def overall_verdict(results: dict[str, ScenarioResult], nonblock: bool) -> tuple[str, str]:
    """(verdict, reason). Present: an O_NDELAY open saw EAGAIN in contended_open, a blocking open
    there waited past its deadline, or deactivated_reopen hung. Absent: both ran fully and saw
    neither. Otherwise inconclusive."""
    contended = results.get("contended_open")
    reopen = results.get("deactivated_reopen")
    if contended and contended.counts.get("eagain_no_retry", 0) > 0:
        return PRESENT, (f"O_NDELAY open of ep0/epN failed with EAGAIN "
                         f"{contended.counts['eagain_no_retry']} times while ffs->mutex was busy")
    if contended and contended.counts.get("deadline_missed", 0) > 0:
        return PRESENT, (f"{contended.counts['deadline_missed']} blocking opens waited past "
                         "their deadline")
    if reopen and reopen.hang:
        return PRESENT, (f"reopening a deactivated, bound instance hung "
                         f"(task state {reopen.hang.get('state')})")
    ran_fully = all(results.get(n) and results[n].completed and results[n].attempts > 0
                    for n in VERDICT_SCENARIOS)
    if ran_fully:
        mode = "O_NDELAY" if nonblock else "blocking"
        return ABSENT, (f"{contended.attempts} contended {mode} opens without the regression's "
                        "symptom and a clean reopen of a deactivated instance")
    missing = [n for n in VERDICT_SCENARIOS if not (results.get(n) and results[n].completed)]
    return INCONCLUSIVE, f"not run to completion: {', '.join(missing) or 'none'}"


def build_report(kernel: str, nonblock: bool, results: dict[str, ScenarioResult],
                 error: str | None = None) -> dict:
    verdict, reason = overall_verdict(results, nonblock)
    if error:
        verdict, reason = INCONCLUSIVE, error
    return {
        "kernel": kernel,
        "mode": NONBLOCK if nonblock else BLOCKING,
        "verdict": verdict,
        "reason": reason,
        "scenarios": {name: r.as_dict() for name, r in results.items()},
    }


def render_table(report: dict) -> str:
    lines = [f"kernel {report['kernel']}, {report['mode']} opens", "",
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


def problems(report: dict, exit_status: int, expect: str | None = None) -> list[str]:
    """Why a report is not complete, consistent and as expected (`make repro-test`, the matrix):
    also gadgetd's own failures in it, its retry policy missing a deadline or `gadgetd run`
    exiting non-zero, whatever the verdict."""
    found = []
    if report.get("verdict") not in EXIT_STATUS:
        return [f"unknown verdict {report.get('verdict')!r}"]
    if expect is not None and report["verdict"] != expect:
        found.append(f"verdict is {report['verdict']}, expected {expect}")
    if EXIT_STATUS[report["verdict"]] != exit_status:
        found.append(f"exit status {exit_status} does not match verdict {report['verdict']}")
    if not report.get("kernel"):
        found.append("no kernel release")
    for name in SCENARIOS:
        s = report.get("scenarios", {}).get(name)
        if s is None:
            found.append(f"scenario {name} missing")
        elif s.get("attempts", 0) <= 0:
            found.append(f"scenario {name} made no attempts")
        elif s.get("verdict") not in EXIT_STATUS:
            found.append(f"scenario {name} has verdict {s.get('verdict')!r}")
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
