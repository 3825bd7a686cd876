"""Trace lines -> opens and ep0 I/O per process -> a summary (pure: no tracefs, no /proc).

A task makes one syscall at a time, so each entry event pairs with the next return event of
the same pid and kind. An open that failed with EAGAIN was retried when the same pid opened the
same file again within RETRY_WINDOW s and succeeded; it was given up when that window passed
without one (an EAGAIN in the trace's last second is neither).
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field

O_NONBLOCK = 0o4000
RETRY_WINDOW = 1.0
# comm-pid [cpu] flags timestamp: event: (location) args; comm may hold spaces and dashes, the
# flags column is absent when the irq-info option is off.
LINE = re.compile(r"^\s*(?P<comm>.*)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
                  r"(?:\S{4,5}\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s+(?P<rest>.*)$")
ARG = re.compile(r'(\w+)=("[^"]*"|\S+)')
# Entry events (their returns are NAME_ret) and what each is.
KINDS = {"ep0_open": "open", "epfile_open": "open", "ep0_read": "read", "ep0_write": "write"}


@dataclass
class Call:
    pid: int
    kind: str  # open, read, write
    file: str  # ep0, ep1, ...
    start: float
    flags: int = 0
    end: float | None = None
    result: int | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start

    @property
    def nonblock(self) -> bool:
        return bool(self.flags & O_NONBLOCK)

    @property
    def error(self) -> str | None:
        if self.result is None or self.result >= 0:
            return None
        return errno.errorcode.get(-self.result, str(self.result))

    def as_dict(self) -> dict:
        return {"pid": self.pid, "kind": self.kind, "file": self.file, "t": round(self.start, 6),
                "ms": None if self.seconds is None else round(self.seconds * 1000, 3),
                "nonblock": self.nonblock, "flags": f"{self.flags:#o}", "result": self.result,
                "error": self.error}


@dataclass
class Process:
    pid: int
    comm: str
    exe: str = "?"
    cmdline: str = ""
    parent: int | None = None
    calls: list[Call] = field(default_factory=list)
    named: bool = False  # exe and cmdline looked up in /proc since its last exec


def parse_line(line: str) -> dict | None:
    m = LINE.match(line)
    if not m:
        return None
    rest = m["rest"]
    if rest.startswith("("):  # a probe's location: (sym+off/size [mod]) or (caller <- sym)
        rest = rest[rest.find(")") + 1:]
    args = {k: v.strip('"') for k, v in ARG.findall(rest)}
    return {"comm": m["comm"].strip(), "pid": int(m["pid"]), "t": float(m["ts"]),
            "event": m["event"], "args": args}


class Tracker:
    """Feeds on parsed lines (events named KIND for an entry, KIND_ret for its return, as the
    probes of gadgetd.trace.runner are), keeps processes and their calls."""

    def __init__(self):
        self.processes: dict[int, Process] = {}
        self._pending: dict[tuple[int, str], Call] = {}
        self.last_t = 0.0

    def process(self, pid: int, comm: str) -> Process:
        if pid not in self.processes:
            self.processes[pid] = Process(pid, comm)
        return self.processes[pid]

    def feed(self, line: str) -> None:
        event = parse_line(line)
        if event is None:
            return
        self.last_t = max(self.last_t, event["t"])
        name, args, pid = event["event"], event["args"], event["pid"]
        if name == "sched_process_exec":
            p = self.process(pid, event["comm"])
            p.exe = args.get("filename", p.exe)
            # "<...>": the comm cache had no entry for the pid when the line was written
            p.comm = event["comm"] if event["comm"] != "<...>" else p.exe.rsplit("/", 1)[-1]
            p.cmdline, p.named = "", False  # a new program: the parent's line is not its own
            return
        if name == "sched_process_fork":
            parent = self.process(int(args["pid"]), args.get("comm", event["comm"]))
            child = self.process(int(args["child_pid"]), args.get("child_comm", parent.comm))
            child.exe, child.cmdline, child.parent = parent.exe, parent.cmdline, parent.pid
            return
        entry, ret, _ = name.partition("_ret")
        if entry not in KINDS:
            return
        if not ret:
            call = Call(pid, KINDS[entry], args.get("file", "?"), event["t"],
                        int(args.get("flags", "0"), 0))
            self._pending[(pid, entry)] = call
            self.process(pid, event["comm"]).calls.append(call)
        elif (call := self._pending.pop((pid, entry), None)) is not None:
            call.end, call.result = event["t"], int(args.get("ret", "0"), 0)


def retry_outcome(opens: list[Call], end: float) -> tuple[int, int]:
    """(retried, gave up) over one process's EAGAIN opens."""
    retried = gave_up = 0
    for i, call in enumerate(opens):
        if call.result != -errno.EAGAIN:
            continue
        later = [c for c in opens[i + 1:] if c.file == call.file
                 and c.start - call.start <= RETRY_WINDOW]
        if any(c.result is not None and c.result >= 0 for c in later):
            retried += 1
        elif end - call.start > RETRY_WINDOW:
            gave_up += 1
    return retried, gave_up


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def summary(tracker: Tracker) -> list[dict]:
    """One entry per process that opened or did I/O on a FunctionFS file."""
    rows = []
    for p in sorted(tracker.processes.values(), key=lambda p: p.pid):
        opens = [c for c in p.calls if c.kind == "open"]
        io = [c for c in p.calls if c.kind != "open"]
        if not opens and not io:
            continue
        retried, gave_up = retry_outcome(opens, tracker.last_t)
        errors: dict[str, int] = {}
        for c in opens:
            if c.error:
                errors[c.error] = errors.get(c.error, 0) + 1
        verdict = "gave up" if gave_up else "retried" if retried else "-"
        rows.append({
            "pid": p.pid, "comm": p.comm, "exe": p.exe, "cmdline": p.cmdline,
            "opens": len(opens), "nonblock_opens": sum(c.nonblock for c in opens),
            "errors": errors, "eagain": errors.get("EAGAIN", 0),
            "longest_open_ms": _ms(max((c.seconds for c in opens if c.seconds is not None),
                                       default=None)),
            "retried": retried, "gave_up": gave_up, "after_eagain": verdict,
            "ep0_io": len(io),
            "longest_ep0_io_ms": _ms(max((c.seconds for c in io if c.seconds is not None),
                                         default=None)),
        })
    return rows
