"""`gadgetd trace`: the probes, the reading loop, the report."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from gadgetd.trace import btf, events
from gadgetd.trace.tracefs import ProbeGroup

FUNCTIONS = {"ep0_open": "ffs_ep0_open", "epfile_open": "ffs_epfile_open",
             "ep0_read": "ffs_ep0_read", "ep0_write": "ffs_ep0_write"}
MAXACTIVE = 64  # return probes in flight at once (blocked opens each hold one)


def probes(layout: btf.Btf) -> list[str]:
    """kprobe_events lines (group left out). The open's flags and the file's name are read
    from struct file at offsets this kernel's BTF gives; $argN works on 6.1 as on 7.x."""
    dentry = layout.offset("file", "f_path") + layout.offset("path", "dentry")
    name = layout.offset("dentry", "d_name") + layout.offset("qstr", "name")
    flags = layout.offset("file", "f_flags")

    def file_name(arg: str) -> str:
        return f"file=+0(+{name}(+{dentry}({arg}))):string"

    lines = []
    for event, function in FUNCTIONS.items():
        arg = "$arg2" if event.endswith("open") else "$arg1"  # (inode, file) or (file, ...)
        lines.append(f"p:{event} usb_f_fs:{function} {file_name(arg)} flags=+{flags}({arg}):x32")
        size = "s32" if event.endswith("open") else "s64"  # int or ssize_t
        lines.append(f"r{MAXACTIVE}:{event}_ret usb_f_fs:{function} ret=$retval:{size}")
    return lines


def _proc(pid: int, name: str) -> str:
    try:
        if name == "exe":
            return os.readlink(f"/proc/{pid}/exe")
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _name_living(tracker: events.Tracker) -> None:
    """Executable and command line of processes seen alive, once after each exec."""
    for pid, p in tracker.processes.items():
        if not p.named:
            p.named = True
            p.exe = p.exe if p.exe != "?" else _proc(pid, "exe") or "?"
            p.cmdline = _proc(pid, "cmdline") or p.cmdline


def trace(duration: float | None, clock=time.monotonic) -> dict:
    """Trace until `duration` s have passed or SIGINT/SIGTERM (Ctrl-C, even where the shell
    started it with SIGINT ignored); the report as a dict."""
    tracker = events.Tracker()
    stop: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    start = clock()
    try:
        with ProbeGroup(f"gadgetd_{os.getpid()}", probes(btf.kernel())) as group:
            partial = ""
            while not stop and (duration is None or clock() - start < duration):
                wait = 1.0 if duration is None else min(1.0, duration - (clock() - start))
                *lines, partial = (partial + group.read(wait)).split("\n")
                for line in lines:
                    tracker.feed(line)
                _name_living(tracker)
            missed, lost = group.missed(), group.lost()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    seconds = clock() - start
    calls = [c for p in tracker.processes.values() for c in p.calls]
    return {"kernel": os.uname().release, "seconds": round(seconds, 1),
            "processes": events.summary(tracker),
            "opens": [c.as_dict() for c in sorted(calls, key=lambda c: c.start)
                      if c.kind == "open"],
            "missed": missed, "lost": lost}


def render(report: dict) -> str:
    lines = [f"gadgetd trace: {report['seconds']} s on {report['kernel']}; f_fs functions "
             f"probed: {', '.join(FUNCTIONS.values())}", ""]
    head = (f"{'pid':>7} {'command':<16} {'opens':>6} {'O_NDELAY':>8} {'EAGAIN':>6} "
            f"{'longest open ms':>15} {'after EAGAIN':<12} {'ep0 I/O':>7} {'longest I/O ms':>14}"
            "  executable / other errors")
    lines += [head, "-" * len(head)]
    for p in report["processes"]:
        other = {k: v for k, v in p["errors"].items() if k != "EAGAIN"}
        lines.append(
            f"{p['pid']:>7} {p['comm'][:16]:<16} {p['opens']:>6} {p['nonblock_opens']:>8} "
            f"{p['eagain']:>6} {p['longest_open_ms'] if p['longest_open_ms'] is not None else '-':>15} "
            f"{p['after_eagain']:<12} {p['ep0_io']:>7} "
            f"{p['longest_ep0_io_ms'] if p['longest_ep0_io_ms'] is not None else '-':>14}  "
            f"{p['exe']}" + (f"  {other}" if other else ""))
        if p["cmdline"]:
            lines.append(f"{'':>8} {p['cmdline'][:100]}")
    if not report["processes"]:
        lines.append("(no process opened or used a FunctionFS file)")
    if report["lost"]:
        lines.append(f"lost: {report['lost']} events dropped by the ring buffer before they "
                     "were read (the table is short of them)")
    if report["missed"]:
        lines.append(f"missed by the probes (too many calls in flight): {report['missed']}")
    return "\n".join(lines)


def main(duration: float | None, as_json: bool) -> str:
    report = trace(duration)
    return json.dumps(report, indent=1) if as_json else render(report)
