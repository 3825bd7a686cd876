"""Where gadgetd's bring-up time goes: one run of `gadgetd run` under strace (only the syscalls
that mark a step, through seccomp-bpf, so the rest runs at full speed) with Python's import
timing on, read back into phases from exec to the host reading bConfigurationValue.

    exec                 the execve of the console script
    configfs             the first mkdir under /sys/kernel/config
    mount                mount(2) of the FunctionFS instance
    descriptors          the first write to an ep0 (the worker has forked, imported, opened ep0)
    strings              the second write to it (the function is active: ep files appear)
    bind                 the write of the UDC's name to the gadget's UDC file
    configured           the bench's one watcher (guest.wait_configured), in the same clock
"""

from __future__ import annotations

import re
from collections import Counter

STRACE = ("strace", "-f", "-ttt", "-qq", "--seccomp-bpf", "-y",
          "-e", "trace=execve,mkdir,mount,write")
PHASES = (  # (name, from event, to event)
    ("interpreter, imports, template", "exec", "configfs"),
    ("configfs", "configfs", "mount"),
    ("worker: fork, imports, ep0 open", "mount", "descriptors"),
    ("descriptors and strings", "descriptors", "strings"),
    ("ready to bind", "strings", "bind"),
    ("enumeration", "bind", "configured"),
)
# A call's line, finished ("= N") or cut by another process's ("<unfinished ...>": its start
# time counts, the result comes on a "<... resumed>" line of its own)
_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(\w+)\((.*?)(?:\)\s+=\s+(-?\d+)|\s*<unfinished \.\.\.>)")
_IMPORT = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


def events(trace: str) -> dict[str, float]:
    """The first time of each step in strace -f -ttt -y output (failed calls ignored)."""
    found: dict[str, float] = {}
    ep0_writes = 0

    def first(name: str, when: float) -> None:
        found.setdefault(name, when)

    for line in trace.splitlines():
        m = _LINE.match(line)
        if not m or (m.group(5) is not None and int(m.group(5)) < 0):
            continue
        when, call, args = float(m.group(2)), m.group(3), m.group(4)
        if call == "execve" and re.match(r'"[^"]*/gadgetd"', args):  # not strace's env
            first("exec", when)
        elif call == "mkdir" and args.startswith('"/sys/kernel/config/'):
            first("configfs", when)
        elif call == "mount" and '"functionfs"' in args:
            first("mount", when)
        elif call == "write" and re.match(r"\d+</[^>]*/ep0>", args):
            ep0_writes += 1
            first("descriptors" if ep0_writes == 1 else "strings", when)
        elif call == "write" and re.match(r'\d+</sys/kernel/config/[^>]*/UDC>, "[^"\\]', args):
            first("bind", when)
    return found


def phases(found: dict[str, float]) -> list[tuple[str, float | None]]:
    """Seconds per phase, None where a bound is missing."""
    return [(name, round(found[b] - found[a], 4) if a in found and b in found else None)
            for name, a, b in PHASES]


def imports(stderr: str, top: int = 8) -> list[tuple[str, float]]:
    """The slowest top-level imports (-X importtime; supervisor and worker together), seconds."""
    cumulative: Counter = Counter()
    for line in stderr.splitlines():
        m = _IMPORT.match(line)
        if m and len(m.group(3)) == 1:  # one space: imported by the program itself
            cumulative[m.group(4)] += int(m.group(2))
    return [(name, round(us / 1e6, 4)) for name, us in cumulative.most_common(top)]
