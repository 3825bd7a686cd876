"""A kprobe group of its own and a tracefs instance to read it from, both removed on exit.

Probe definitions are global (kprobe_events); the instance (instances/NAME) has its own ring
buffer, clock and enable switches, so nothing another tracer set up is touched. The clock is
`mono` (CLOCK_MONOTONIC): timestamps compare with time.monotonic().
"""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path

from gadgetd import syscalls

TRACEFS = Path("/sys/kernel/tracing")
# Static tracepoints enabled in the instance beside the probes: who exec'd what, and forks
# (a process gone before its line is read is still named).
TRACEPOINTS = ("sched/sched_process_exec", "sched/sched_process_fork")
BUFFER_KB = 8192  # per CPU: a second of contended opens (thousands a second) fits


class TraceError(Exception):
    pass


def _error_log() -> str:
    """The kernel's reason for the last refused probe (tracing/error_log), if it gave one."""
    try:
        lines = (TRACEFS / "error_log").read_text().strip().splitlines()
    except OSError:
        return ""
    return lines[-2].split(": ", 1)[-1].strip() if len(lines) >= 2 else ""


def ensure_tracefs() -> bool:
    """Mount tracefs when it is not; True when this call mounted it (to unmount at the end)."""
    if (TRACEFS / "kprobe_events").exists():
        return False
    if not TRACEFS.is_dir():
        raise TraceError(f"{TRACEFS} does not exist: this kernel has no tracefs")
    try:
        syscalls.mount("nodev", TRACEFS, "tracefs")
    except OSError as exc:
        raise TraceError(f"cannot mount tracefs on {TRACEFS}: {exc.strerror}") from None
    if not (TRACEFS / "kprobe_events").exists():
        syscalls.umount(TRACEFS)
        raise TraceError(f"{TRACEFS}/kprobe_events missing: this kernel has no kprobe events "
                         "(CONFIG_KPROBE_EVENTS)")
    return True


class ProbeGroup:
    """`probes`: kprobe_events lines without the group, e.g. "p:open usb_f_fs:ffs_ep0_open
    flags=+64(%si):x32"; defined in group `name`, read from instance `name`."""

    def __init__(self, name: str, probes: list[str]):
        self.name, self.probes = name, probes
        self.instance = TRACEFS / "instances" / name
        self.defined: list[str] = []
        self.mounted = False
        self.pipe: int | None = None

    def __enter__(self) -> ProbeGroup:
        try:
            self.mounted = ensure_tracefs()
            self._define()
            self.instance.mkdir()
            syscalls.write_attr(self.instance / "trace_clock", "mono")
            syscalls.write_attr(self.instance / "buffer_size_kb", BUFFER_KB)
            for point in TRACEPOINTS:
                syscalls.write_attr(self.instance / "events" / point / "enable", 1)
            syscalls.write_attr(self.instance / "events" / self.name / "enable", 1)
            self.pipe = os.open(self.instance / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _define(self) -> None:
        for probe in self.probes:
            kind, rest = probe.split(":", 1)
            event, definition = rest.split(" ", 1)
            try:
                syscalls.write_attr(TRACEFS / "kprobe_events",
                                    f"{kind}:{self.name}/{event} {definition}")
            except OSError as exc:
                why = _error_log() or exc.strerror
                raise TraceError(f"kprobe {definition.split()[0]} refused: {why} (is the "
                                 "module loaded and the symbol in /proc/kallsyms?)") from None
            self.defined.append(event)

    def read(self, timeout: float) -> str:
        """What the instance's buffer holds, waiting at most `timeout` s for something."""
        ready, _, _ = select.select([self.pipe], [], [], max(timeout, 0))
        chunks = []
        while ready:
            try:
                chunk = os.read(self.pipe, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def missed(self) -> dict[str, int]:
        """Probe hits not recorded (a return probe's instances all in use), per event."""
        found = {}
        try:
            for line in (TRACEFS / "kprobe_profile").read_text().splitlines():
                event, _, misses = line.split()
                if event in self.defined and int(misses):
                    found[event] = int(misses)
        except (OSError, ValueError):
            pass
        return found

    def lost(self) -> int:
        """Events the ring buffer dropped before they were read (per_cpu/cpuN/stats overrun)."""
        total = 0
        for stats in self.instance.glob("per_cpu/cpu*/stats"):
            for line in stats.read_text().splitlines():
                if line.startswith("overrun:"):
                    total += int(line.split()[1])
        return total

    def __exit__(self, *exc) -> None:
        if self.pipe is not None:
            os.close(self.pipe)
            self.pipe = None
        if self.instance.exists():
            # An instance with enabled events cannot go; the probes cannot while enabled.
            for events in [self.name, *TRACEPOINTS]:
                enable = self.instance / "events" / events / "enable"
                if enable.exists():
                    syscalls.write_attr(enable, 0)
            self.instance.rmdir()
        for event in reversed(self.defined):
            try:
                syscalls.write_attr(TRACEFS / "kprobe_events", f"-:{self.name}/{event}")
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        self.defined.clear()
        if self.mounted:
            syscalls.umount(TRACEFS)
            self.mounted = False
