"""The host's own account of a repro run on a board: `gadgetd-hil drive --report FILE` appends one
JSON line a second, {"seq": N, "t": wall time, "counts": cumulative {"action:outcome": n},
"quiet": bool}, and repro reads FILE while it runs (the lab shares it between the VMs; a board
reads it over NFS or sshfs). A window's counts are the difference of two lines: the newest
before the window and the first written after it ends, so the two machines' clocks never have
to agree.

The same directory carries one request back: while FILE.quiet exists, drive sends nothing (and
its lines say "quiet": true). deactivated_reopen needs that: a host request to a DEACTIVATED
instance schedules the reset that the reopen would otherwise run itself."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from pathlib import Path

LINE_WAIT = 5.0  # seconds to wait for a line after a window (drive writes one a second)


class HostReport:
    def __init__(self, path: Path):
        self.path = path

    def lines(self) -> list[dict]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                break
        return found

    def mark(self) -> tuple[int, dict]:
        """(lines so far, the newest cumulative counts) at the start of a window."""
        lines = self.lines()
        return len(lines), (lines[-1]["counts"] if lines else {})

    def since(self, mark: tuple[int, dict], wait: float = LINE_WAIT) -> dict | None:
        """Counts between `mark` and a line written after now; None when no line came."""
        wanted = max(mark[0], len(self.lines())) + 1
        end = time.monotonic() + wait
        while len(lines := self.lines()) < wanted:
            if time.monotonic() > end:
                return None
            time.sleep(0.2)
        delta = Counter(lines[-1]["counts"])
        delta.subtract(mark[1])
        return {k: v for k, v in delta.items() if v}

    @property
    def quiet_file(self) -> Path:
        return self.path.with_name(self.path.name + ".quiet")

    @contextlib.contextmanager
    def quiet(self, wait: float = LINE_WAIT):
        """The host sends nothing inside the block; yields whether it said so in time."""
        self.quiet_file.touch()
        try:
            start, end = len(self.lines()), time.monotonic() + wait
            while not (confirmed := any(line.get("quiet") for line in self.lines()[start:])) \
                    and time.monotonic() < end:
                time.sleep(0.2)
            yield confirmed
        finally:
            self.quiet_file.unlink(missing_ok=True)


class ReportedStorm:
    """contended_open's storm where the host is remote: the storm runs there anyway; stop()
    gives what the host counted meanwhile, as a local Storm's stop() does ({} without a line)."""

    def __init__(self, report: HostReport):
        self.report, self.start = report, report.mark()

    def stop(self) -> dict:
        return self.report.since(self.start) or {}


def summary(counts: dict | None) -> dict | None:
    """The host's requests, answers, STALLs and disconnects from drive's outcome counts."""
    if counts is None:
        return None
    requests = {k: v for k, v in counts.items() if ":" in k}
    return {"requests": sum(requests.values()),
            "served": sum(v for k, v in requests.items() if k.endswith(":ok")),
            "stalls": sum(v for k, v in requests.items() if k.endswith(":EPIPE")),
            "disconnects": counts.get("disconnects", 0), "outcomes": counts}
