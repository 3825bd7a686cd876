"""Openers that run in child processes, so a task stuck in the kernel never takes repro with it.

    python -m gadgetd.repro.openers loop MODE DURATION PATH...   -> one JSON summary line
    python -m gadgetd.repro.openers once MODE PATH               -> one JSON result line
    python -m gadgetd.repro.openers race MODE PATH RELEASE_FD    -> result line, then obeys
                                                                    'write FILE' / 'close' on stdin
    python -m gadgetd.repro.openers unbinder - GADGET_DIR        -> 'ready' line, then for each
                                       'unbind' on stdin: the UDC file emptied, {"start", "end"} ns
MODE (the vocabulary of gadgetd.model): nonblock-once (O_NDELAY, no retry), nonblock (O_NDELAY
with gadgetd's retry policy), blocking (blocking open with a deadline).
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import select
import sys
import time
from collections import Counter
from pathlib import Path

from gadgetd.model import BLOCKING, NONBLOCK, NONBLOCK_ONCE
from gadgetd.open_policy import DeadlineExceeded, Ep0OpenPolicy, RetryStats
from gadgetd.repro.report import BLOCKING_DEADLINE

POLICY = Ep0OpenPolicy(NONBLOCK)


def _errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def open_once(path: Path, mode: str, stats: RetryStats) -> int:
    """Open (and return the fd) the way MODE says; raises OSError/DeadlineExceeded."""
    if mode == NONBLOCK_ONCE:
        return os.open(path, os.O_RDWR | os.O_NDELAY | os.O_CLOEXEC)
    from gadgetd.ffs import open_bounded, open_file  # already imported by main()

    if mode == NONBLOCK:
        return open_file(path, POLICY, stats, nonblock=True)
    return open_bounded(path, os.O_RDWR | os.O_CLOEXEC, BLOCKING_DEADLINE)


def loop(mode: str, duration: float, paths: list[Path]) -> dict:
    counts: Counter = Counter()
    stats = RetryStats()
    latencies = []
    end = time.monotonic() + duration
    for path in itertools.cycle(paths):
        if time.monotonic() >= end:
            break
        start = time.monotonic()
        try:
            fd = open_once(path, mode, stats)
        except DeadlineExceeded:
            counts["deadline_missed" if mode == BLOCKING else "policy_deadline_failures"] += 1
        except OSError as exc:
            counts[_errno_name(exc.errno)] += 1
        else:
            latencies.append(time.monotonic() - start)
            os.close(fd)
            counts["ok"] += 1
        counts["attempts"] += 1
    return {"counts": dict(counts), "latencies": latencies,
            "retries": stats.as_dict() if mode == NONBLOCK else None}


def once(mode: str, path: Path) -> dict:
    _emit({"opening": True})  # the parent's deadline starts here, not at interpreter start-up
    start = time.monotonic()
    try:
        fd = open_once(path, mode, RetryStats())
    except DeadlineExceeded:
        return {"result": "deadline", "seconds": time.monotonic() - start}
    except OSError as exc:
        return {"result": _errno_name(exc.errno), "seconds": time.monotonic() - start}
    os.close(fd)
    return {"result": "ok", "seconds": time.monotonic() - start}


def race(mode: str, path: Path, release_fd: int) -> None:
    # Released together: every racer polls the same pipe; the parent closes its write end.
    _emit({"ready": True})
    select.select([release_fd], [], [])
    start = time.monotonic_ns()
    try:
        fd, result = open_once(path, mode, RetryStats()), "ok"
    except DeadlineExceeded:
        fd, result = None, "deadline"
    except OSError as exc:
        fd, result = None, _errno_name(exc.errno)
    _emit({"result": result, "start_ns": start, "end_ns": time.monotonic_ns()})
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "write" and fd is not None:
            try:
                os.write(fd, Path(arg).read_bytes())
                _emit({"write": "ok"})
            except OSError as exc:
                _emit({"write": _errno_name(exc.errno)})
        elif command == "close":
            break
    if fd is not None:
        os.close(fd)


def unbinder(gadget_dir: Path) -> None:
    """Unbinds on request; a child, because an unbind can get stuck in the kernel."""
    from gadgetd import udc

    _emit({"ready": True})
    for line in sys.stdin:
        if line.strip() == "unbind":
            start = time.monotonic_ns()
            udc.unbind(gadget_dir)
            _emit({"start": start, "end": time.monotonic_ns()})


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    kind, mode = argv[0], argv[1]
    if mode not in (NONBLOCK_ONCE, "-"):
        # Loaded before anything is timed; nonblock-once openers (the racers) skip it and start faster.
        import gadgetd.ffs  # noqa: F401
    if kind == "loop":
        _emit({"opening": True})
        _emit(loop(mode, float(argv[2]), [Path(p) for p in argv[3:]]))
    elif kind == "once":
        _emit(once(mode, Path(argv[2])))
    elif kind == "race":
        race(mode, Path(argv[2]), int(argv[3]))
    elif kind == "unbinder":
        unbinder(Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
